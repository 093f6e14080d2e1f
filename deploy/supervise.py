#!/usr/bin/env python3
"""Run N gateway processes (daphne) on consecutive ports, and keep them running.

    python deploy/supervise.py --processes 4 --base-port 8001

Migrates the database once, prints the pairing code once (when one is needed),
then starts `.venv/bin/python -m daphne -b HOST -p PORT construct_site.asgi:application`
for PORT = base-port .. base-port+N-1, each in its own process group, its output
lines prefixed with `[PORT] `. A process that exits is started again (after 1 s,
up to 30 s when it keeps failing). SIGHUP restarts them one at a time (a rolling
restart): each is sent SIGTERM and drains (its running turns end, its sockets
close with 1012 and reconnect elsewhere), and the next goes only once the new
one's /ready answers 200. SIGTERM or SIGINT stops them all: SIGTERM first,
SIGKILL after --grace seconds. It runs itself and its processes with the
project's virtualenv (.venv) when there is one; the environment (DATABASE_URL,
REDIS_URL, CONSTRUCT_*) is passed on as it is, with PROMETHEUS_MULTIPROC_DIR
added: the processes' metrics go there, so each one's /metrics shows their sum
(a fresh temporary directory, unless it is set; then its old files are removed).

Several processes act as one gateway only behind one PostgreSQL database and
one Redis, so with N > 1 this refuses to start without REDIS_URL and warns
about SQLite. Put nginx in front (deploy/nginx.conf).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "construct_site.asgi:application"
MAX_BACKOFF = 30.0
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
# Set on the processes: their own pairing banner is off, supervise prints one for them all.
BANNER_ENV = "CONSTRUCT_PAIRING_BANNER"
# A rolling restart: how long a new process may take to answer /ready.
READY_TIMEOUT = 120.0
# Past CONSTRUCT_DRAIN_SECONDS, how long a draining process may take to exit before SIGKILL.
DRAIN_MARGIN = 30.0

_output_lock = threading.Lock()


def say(message: str) -> None:
    with _output_lock:
        print(f"supervise: {message}", flush=True)


def use_project_python() -> None:
    """Run again under the project's virtualenv, when there is one and this is not it.

    So `python deploy/supervise.py` works without an activated virtualenv.
    """
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def relay(stream, prefix: bytes) -> None:
    """Copy a process's output to ours, line by line, each line prefixed (a thread's work)."""
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        with _output_lock:
            out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            out.flush()
    stream.close()


def ready(host: str, port: int) -> bool:
    """Whether the process on `port` answers /ready with 200."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def drain_seconds() -> float:
    try:
        return float(os.environ.get("CONSTRUCT_DRAIN_SECONDS") or 120)
    except ValueError:
        return 120.0  # the process itself refuses to start, naming the variable


class Child:
    """One daphne process and what it takes to restart it."""

    def __init__(self, host: str, port: int, extra: list[str]):
        self.host = host
        self.port = port
        self.command = [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), *extra, APP]
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.backoff = 1.0
        self.restart_at: float | None = None
        self.replacing = False  # a rolling restart drains it: its exit is no failure

    def start(self) -> None:
        env = {**os.environ, BANNER_ENV: "off"}
        self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        threading.Thread(target=relay, args=(self.process.stdout, f"[{self.port}] ".encode()),
                         daemon=True).start()
        self.started_at = time.monotonic()
        self.restart_at = None
        say(f"port {self.port}: started, pid {self.process.pid}")

    def poll(self, now: float) -> None:
        """Notice an exit and schedule the restart; start again when it is due."""
        if self.replacing:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        code = self.process.poll()
        if code is None:
            return
        process_dead(self.process.pid)
        # A process that ran for a while gets a quick restart; one that keeps dying waits longer.
        self.backoff = 1.0 if now - self.started_at > 60 else min(self.backoff * 2, MAX_BACKOFF)
        self.restart_at = now + self.backoff
        say(f"port {self.port}: exited with {code}; restarting in {self.backoff:.0f} s")

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def rolling_restart(children: list[Child], stopping) -> None:
    """Replace the processes one at a time: drain one, start its successor, wait for its
    /ready, then the next. Dead processes are still restarted meanwhile; `stopping()` ends it."""
    def wait(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if stopping() or time.monotonic() > deadline:
                return False
            time.sleep(0.2)
            now = time.monotonic()
            for other in children:
                other.poll(now)
        return True

    say(f"SIGHUP: restarting {len(children)} processes one at a time")
    for child in children:
        if stopping():
            return
        old = child.process.pid if child.running() else None
        child.replacing = True
        try:
            if old is not None:
                say(f"port {child.port}: draining pid {old}")
                child.signal(signal.SIGTERM)
                if not wait(lambda: not child.running(), drain_seconds() + DRAIN_MARGIN):
                    if stopping():
                        return
                    say(f"port {child.port}: pid {old} did not exit after draining; killing it")
                    child.signal(signal.SIGKILL)
                    child.process.wait()
                process_dead(old)
            child.start()
        finally:
            child.replacing = False
        if wait(lambda: ready(child.host, child.port), READY_TIMEOUT):
            say(f"port {child.port}: pid {child.process.pid} is ready")
        elif not stopping():
            say(f"port {child.port}: not ready after {READY_TIMEOUT:g} s; going on")
    say("rolling restart done")


def announce_pairing(host: str, base_port: int) -> None:
    """Print the one pairing banner (when pairing is required and no device is paired yet)."""
    public = os.environ.get("CONSTRUCT_PUBLIC_URL", "").strip()
    base_url = public or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{base_port}"
    code = ("import django; django.setup(); from construct_site.startup import announce_pairing; "
            f"announce_pairing(base_url={base_url!r})")
    env = {**os.environ}
    env.setdefault("DJANGO_SETTINGS_MODULE", "construct_site.settings")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=False)


def metrics_directory() -> str | None:
    """Set up prometheus_client's multiprocess directory for the children; the one made here, if any."""
    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:
        # Values of an earlier run would be summed in with this one's.
        for stale in Path(existing).glob("*.db"):
            stale.unlink()
        return None
    made = tempfile.mkdtemp(prefix="construct-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def process_dead(pid: int) -> None:
    """Drop a dead process's gauges (open sockets, running turns) from the sum; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def check_environment(processes: int) -> None:
    if processes < 2:
        return
    if not os.environ.get("REDIS_URL"):
        sys.exit("supervise: several processes need REDIS_URL (the shared channel layer and turn "
                 "logs); without it each process is a gateway of its own")
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        say("warning: DATABASE_URL is not PostgreSQL; SQLite works for a few processes on one "
            "machine, but every write waits for the others")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", "-n", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=8001)
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds between SIGTERM and SIGKILL at shutdown")
    parser.add_argument("--no-migrate", action="store_true", help="skip `manage.py migrate`")
    parser.add_argument("daphne_args", nargs="*", help="extra daphne arguments, after --")
    args = parser.parse_args(argv)
    check_environment(args.processes)

    if not args.no_migrate:
        say("migrating the database")
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, check=True)
    # Fingerprinted, compressed static files (construct_site/staticfiles.py), collected once for all.
    Path(os.environ.get("CONSTRUCT_STATIC_ROOT") or ROOT / "staticfiles").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                   cwd=ROOT, check=True)
    announce_pairing(args.host, args.base_port)

    made_metrics_directory = metrics_directory()
    children = [Child(args.host, args.base_port + i, args.daphne_args) for i in range(args.processes)]
    stopping = False
    restart = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        say(f"signal {signal.Signals(signum).name}: stopping {len(children)} processes")

    def hangup(_signum, _frame):
        nonlocal restart
        restart = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangup)
    for child in children:
        child.start()
    while not stopping:
        time.sleep(0.5)
        if restart:
            restart = False
            rolling_restart(children, lambda: stopping)
        now = time.monotonic()
        for child in children:
            child.poll(now)

    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + args.grace
    while any(child.running() for child in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    for child in children:
        if child.running():
            say(f"port {child.port}: did not stop in {args.grace:g} s; killing it")
            child.signal(signal.SIGKILL)
    for child in children:
        if child.process is not None:
            child.process.wait()
    if made_metrics_directory is not None:
        shutil.rmtree(made_metrics_directory, ignore_errors=True)
    say("stopped")
    return 0


if __name__ == "__main__":
    use_project_python()
    sys.exit(main())
