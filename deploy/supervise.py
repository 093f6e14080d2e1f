#!/usr/bin/env python3
"""Run N gateway processes (daphne) on consecutive ports, and keep them running.

    python deploy/supervise.py --processes 4 --base-port 8001

Migrates the database once, then starts `python -m daphne -b HOST -p PORT
construct_site.asgi:application` for PORT = base-port .. base-port+N-1, each in
its own process group. A process that exits is started again (after 1 s, up to
30 s when it keeps failing). SIGTERM or SIGINT stops them all: SIGTERM first,
SIGKILL after --grace seconds. Standard library only; the environment
(DATABASE_URL, REDIS_URL, CONSTRUCT_*) is passed on as it is.

Several processes act as one gateway only behind one PostgreSQL database and
one Redis, so with N > 1 this refuses to start without REDIS_URL and warns
about SQLite. Put nginx in front (deploy/nginx.conf).
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "construct_site.asgi:application"
MAX_BACKOFF = 30.0


def say(message: str) -> None:
    print(f"supervise: {message}", flush=True)


class Child:
    """One daphne process and what it takes to restart it."""

    def __init__(self, host: str, port: int, extra: list[str]):
        self.port = port
        self.command = [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), *extra, APP]
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.backoff = 1.0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        say(f"port {self.port}: started, pid {self.process.pid}")

    def poll(self, now: float) -> None:
        """Notice an exit and schedule the restart; start again when it is due."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        code = self.process.poll()
        if code is None:
            return
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

    children = [Child(args.host, args.base_port + i, args.daphne_args) for i in range(args.processes)]
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        say(f"signal {signal.Signals(signum).name}: stopping {len(children)} processes")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    while not stopping:
        time.sleep(0.5)
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
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
