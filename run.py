#!/usr/bin/env python3
"""Set up and run Construct gateway with nothing but Python 3.11.

    python3 run.py serve [--host 127.0.0.1] [--port 8000]
    python3 run.py test [pytest args...]

``test`` checks the import contracts (``.importlinter``) first, then runs
pytest twice. Both create ``.venv`` and install the pinned requirements on
first use (and again only when a requirements file changes), so a fresh clone
needs no other step. Standard library only: this file runs before anything is
installed.
"""

import argparse
import errno
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".install-stamp"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")

DEFAULT_TEST_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
# Variables that pick the database and channel layer; the first test pass
# removes them so it really runs on the embedded defaults.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL")
# Test workers per pass (pytest-xdist). Most of a pass's time is spent waiting
# (servers starting, sockets, timeouts), so more workers than cores pays.
DEFAULT_TEST_WORKERS = 4


def say(message):
    print(f"run.py: {message}", flush=True)


# --- virtualenv and requirements ---------------------------------------------


def requirement_files(path):
    """``path`` and every file it pulls in with ``-r``/``-c``, in order."""
    found = [path]
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]+(\S+)", line)
        if match:
            for nested in requirement_files((path.parent / match.group(1)).resolve()):
                if nested not in found:
                    found.append(nested)
    return found


def requirements_hash(path):
    """One hash over a requirements file and all it includes."""
    digest = hashlib.sha256()
    for item in requirement_files(path):
        digest.update(item.name.encode() + b"\0" + item.read_bytes() + b"\0")
    return digest.hexdigest()


def read_stamp():
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}


def venv_works():
    if not PYTHON.exists():
        return False
    probe = subprocess.run([str(PYTHON), "-c", "import pip"], capture_output=True)
    return probe.returncode == 0


def ensure_venv(requirements):
    """Create ``.venv`` if needed and install ``requirements`` unless the stamp says it is done."""
    if not venv_works():
        say(f"creating virtualenv in {VENV.name}/")
        try:
            venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
        except Exception as exc:  # ensurepip missing is the usual cause
            sys.exit(
                f"run.py: could not create {VENV.name}/ ({exc}). On Debian/Ubuntu install "
                "the venv module first: apt-get install python3-venv"
            )
    path = ROOT / requirements
    wanted = requirements_hash(path)
    stamp = read_stamp()
    if stamp.get(requirements) == wanted:
        return
    say(f"installing {requirements} into {VENV.name}/ (first run or changed requirements)")
    started = time.monotonic()
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
         "--progress-bar", "off", "-r", str(path)],
        cwd=ROOT,
        check=True,
    )
    # Installing a file also installs what it includes: mark those done too.
    for item in requirement_files(path):
        name = item.relative_to(ROOT).as_posix() if item.is_relative_to(ROOT) else str(item)
        stamp[name] = requirements_hash(item)
    STAMP.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    say(f"installed in {time.monotonic() - started:.0f} s")


def venv_env(base=None):
    """An environment in which ``python`` and ``daphne`` are the venv's."""
    env = dict(os.environ if base is None else base)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


def manage(*args):
    return subprocess.run([str(PYTHON), "manage.py", *args], cwd=ROOT, env=venv_env()).returncode


# --- serve -------------------------------------------------------------------


def collect_static():
    """`manage.py collectstatic`: the page then links fingerprinted, compressed files."""
    # The folder must exist before settings are read, or they serve from the app folders.
    root = Path(os.environ.get("CONSTRUCT_STATIC_ROOT") or ROOT / "staticfiles")
    root.mkdir(parents=True, exist_ok=True)
    return manage("collectstatic", "--noinput", "--verbosity", "0")


def port_taken(host, port):
    """Why daphne could not listen on host:port (one line), or None when it could."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    with socket.socket(family, kind, proto) as probe:
        # As daphne (Twisted) binds: a port left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; stop what runs there or pick another --port"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def serve(host, port):
    # Before anything else, so no pairing code is printed for a server that cannot start.
    taken = port_taken(host, port)
    if taken:
        sys.exit(f"run.py: {taken}")
    ensure_venv("requirements.txt")
    if manage("migrate", "--noinput") != 0:
        sys.exit("run.py: manage.py migrate failed; see the message above")
    if collect_static() != 0:
        sys.exit("run.py: manage.py collectstatic failed; see the message above")
    shown_host = f"[{host}]" if ":" in host else host
    print(f"\n    Construct gateway: http://{shown_host}:{port}/\n", flush=True)
    daphne = BIN / "daphne"
    argv = [str(daphne)] if daphne.exists() else [str(PYTHON), "-m", "daphne"]
    argv += ["-b", host, "-p", str(port), "construct_site.asgi:application"]
    os.chdir(ROOT)
    os.execve(argv[0], argv, venv_env())


# --- test --------------------------------------------------------------------


# Probes run in the venv, with the same drivers the tests use; each prints
# one line saying what went wrong.
PROBE = """
import sys
try:
    {connect}
except Exception as exc:
    lines = str(exc).strip().splitlines() or [""]
    sys.exit(f"{{type(exc).__name__}}: {{lines[0]}}")
"""
POSTGRES_PROBE = PROBE.format(
    connect="import psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()"
)
REDIS_PROBE = PROBE.format(
    connect="import redis; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3, "
    "socket_timeout=3).ping()"
)


def probe_error(code, url):
    """None when ``code`` connects to ``url`` in the venv, else its one-line error."""
    probe = subprocess.run([str(PYTHON), "-c", code, url], capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    lines = [line for line in probe.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {probe.returncode}"


def redacted(url):
    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    return url


def worker_args(pytest_args):
    """``-n N --dist loadfile`` unless the caller chose (``-n``, ``-p no:xdist``) already.

    A file's tests stay on one worker, so a module's server is started once. Files go
    out in the order collected (tests/conftest.py puts the costliest first), not
    pytest-xdist's own (the most tests first). CONSTRUCT_TEST_WORKERS sets N (0 runs in
    one process).
    """
    for arg in pytest_args:
        if arg.startswith(("-n", "--numprocesses", "--dist")) or arg in ("no:xdist", "-pno:xdist"):
            return []
    workers = os.environ.get("CONSTRUCT_TEST_WORKERS", str(DEFAULT_TEST_WORKERS))
    if not workers.isdigit():
        raise SystemExit(f"run.py: CONSTRUCT_TEST_WORKERS must be a number of workers, not {workers!r}")
    return ["-n", workers, "--dist", "loadfile", "--no-loadscope-reorder"] if int(workers) else []


NOTHING_COLLECTED = 5  # pytest's exit status when no test was collected (or all were deselected)


def pytest_pass(title, pytest_args, env, empty_ok=False):
    print(f"\n===== {title} =====", flush=True)
    argv = [str(PYTHON), "-m", "pytest", *worker_args(pytest_args), *pytest_args]
    code = subprocess.run(argv, cwd=ROOT, env=env).returncode
    if code == NOTHING_COLLECTED and empty_ok:
        say(f"{title}: no tests for this pass (tests/multiprocess runs in pass 2 only)")
    elif code == NOTHING_COLLECTED:
        say(f"{title}: no tests were collected, which counts as a failure")
    elif code != 0:
        say(f"{title}: failed (pytest exit status {code})")
    return code


def import_contracts(env):
    """Check the import contracts of .importlinter; returns lint-imports' exit status."""
    print("\n===== import contracts (.importlinter) =====", flush=True)
    code = subprocess.run([str(BIN / "lint-imports"), "--no-cache", "--no-logo"], cwd=ROOT,
                          env=env).returncode
    if code != 0:
        say(f"import contracts: broken (lint-imports exit status {code})")
    return code


def test(pytest_args):
    ensure_venv("requirements-dev.txt")
    base_env = venv_env({k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES})
    failures = []

    # Seconds, and a broken one fails the run; the tests still run, to show all there is.
    if import_contracts(base_env) != 0:
        failures.append("import contracts")

    title = "pass 1/2: embedded defaults (SQLite, in-process channel layer)"
    # tests/multiprocess (several processes over PostgreSQL and Redis) runs in pass 2 only.
    first_pass = pytest_pass(title, pytest_args, dict(base_env, CONSTRUCT_TEST_PASS="embedded"),
                             empty_ok=True)
    if first_pass not in (0, NOTHING_COLLECTED):
        failures.append(title)

    database_url = os.environ.get("CONSTRUCT_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("CONSTRUCT_TEST_REDIS_URL") or DEFAULT_TEST_REDIS_URL
    title = "pass 2/2: PostgreSQL and Redis"
    problems = []
    for name, code, url in (("PostgreSQL", POSTGRES_PROBE, database_url),
                            ("Redis", REDIS_PROBE, redis_url)):
        error = probe_error(code, url)
        if error:
            problems.append(f"{name} at {redacted(url)} is not reachable: {error}")
    required = os.environ.get("CONSTRUCT_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}
    if problems:
        print(f"\n===== {title}: SKIPPED =====", flush=True)
        for problem in problems:
            say(problem)
        if required:
            say("CONSTRUCT_REQUIRE_SERVICES=1, so a skipped pass is a failure")
            failures.append(title)
        else:
            say("set CONSTRUCT_TEST_DATABASE_URL / CONSTRUCT_TEST_REDIS_URL to point elsewhere")
    else:
        env = dict(base_env, DATABASE_URL=database_url, REDIS_URL=redis_url)
        if pytest_pass(f"{title} ({redacted(database_url)}, {redacted(redis_url)})",
                       pytest_args, env) != 0:
            failures.append(title)
    if first_pass == NOTHING_COLLECTED and problems:
        # Only tests/multiprocess was asked for, and pass 2 did not run it: nothing ran at all.
        say("pass 1/2 collected no tests, and pass 2 did not run them: nothing was tested")
        failures.append("pass 1/2: no tests")

    print(flush=True)
    if failures:
        say("FAILED: " + "; ".join(failures))
        return 1
    say("import contracts kept; pass 1 succeeded; pass 2 SKIPPED (services not reachable)"
        if problems else "import contracts kept; both passes succeeded")
    return 0


# --- command line ------------------------------------------------------------


def main(argv):
    if argv[:1] == ["test"]:
        # Everything after "test" belongs to pytest, --help included.
        return test(argv[1:])
    parser = argparse.ArgumentParser(
        prog="run.py", description="Set up and run Construct gateway.",
        epilog="run.py test [pytest args...]: set up, then run the test suite",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="set up, migrate and run daphne")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    commands.add_parser("test", help="set up and run pytest (arguments go to pytest)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
