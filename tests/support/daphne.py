"""The real server, as a subprocess, for end-to-end tests.

In-process ``WebsocketCommunicator`` tests never see what daphne and
autobahn do on the wire (close codes, pings, several processes sharing one
Redis layer). ``DaphneServer`` runs ``python -m daphne`` exactly as the
README does, on a free port, against a database of its own.
"""

import atexit
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.services import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_APP = "construct_site.asgi:application"


def server_env(env=None):
    """``os.environ`` with ``env`` laid over it; a ``None`` value removes the variable."""
    merged = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    merged.setdefault("DJANGO_SETTINGS_MODULE", "construct_site.settings")
    merged["PYTHONUNBUFFERED"] = "1"
    return merged


def migrate(env=None, timeout=120):
    """Run ``manage.py migrate --noinput`` with the server's environment."""
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed ({result.returncode}):\n{result.stdout}{result.stderr}")


# The servers this test process started (alive or not), for a failed test's report:
# tests/conftest.py adds the tail of each one's output that printed during the test.
STARTED = weakref.WeakSet()

LOG_TAIL_CHARS = 6000


def log_tails(since: float) -> list[tuple[str, str]]:
    """(title, tail) of the output of each server started here whose log grew after `since`."""
    tails = []
    for server in list(STARTED):
        try:
            if server.log_path.stat().st_mtime < since:
                continue
        except OSError:
            continue
        text = server.output()
        tails.append((f"server on port {server.port} ({server.log_path.name}), last lines",
                      text[-LOG_TAIL_CHARS:]))
    return tails


class DaphneServer:
    """``python -m daphne -b 127.0.0.1 -p PORT APP`` in a subprocess.

    ``env`` is laid over ``os.environ`` (``None`` removes a variable). Start
    with ``start()`` or ``with``; ``url`` and ``ws_url`` have no trailing
    slash. stdout and stderr go to a file; ``output()`` reads it so far.
    ``command(port)``, when given, is the argv to run instead of daphne's
    (``manage.py runserver``, say).
    """

    def __init__(self, *, env=None, app=DEFAULT_APP, port=None, run_migrate=True,
                 startup_timeout=60.0, log_path=None, extra_args=(), command=None):
        self.env = dict(env or {})
        self.app = app
        self.port = port or free_port()
        self.run_migrate = run_migrate
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.command = command
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix=f"daphne-{self.port}-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}"

    # --- life cycle --------------------------------------------------------------

    def start(self):
        """Migrate (unless told not to), spawn daphne, wait until HTTP answers."""
        STARTED.add(self)
        if self.run_migrate:
            migrate(self.env)
        if self.command is not None:
            command = self.command(self.port)
        else:
            command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                       *self.extra_args, self.app]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=server_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"daphne exited with {self.process.returncode} before serving:\n{self.output()}"
                )
            if self._answers_http():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"daphne did not answer HTTP within {self.startup_timeout} s:\n{self.output()}"
                )
            time.sleep(0.1)

    def _answers_http(self):
        # /health is the real readiness probe; any HTTP answer at all (even a
        # 404 from an app without /health) still proves the server is up.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def running(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        """SIGKILL: a crash, no clean-up in the server."""
        self._signal(signal.SIGKILL, 10)

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig, timeout):
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def output(self):
        """Everything the server printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text, timeout=5.0):
        """Whether the server printed `text` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


# --- databases ---------------------------------------------------------------


def _is_postgres(url):
    return url.startswith(("postgres://", "postgresql://"))


def _create_database(base_url, name, template=None):
    """CREATE DATABASE `name` on the server of `base_url` (a copy of `template`, if given);
    its URL."""
    import psycopg
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(base_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)
    return urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))


def _drop_database(base_url, name):
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def fresh_database_url(tmp_path, base_url=None, *, migrated=False):
    """Yield a DATABASE_URL no other server or test uses.

    SQLite by default: a new file under ``tmp_path``. When the run's
    DATABASE_URL (or ``base_url``) is PostgreSQL, a new database on that
    server, dropped at exit, so e2e servers never share the pytest test
    database or each other's state. ``migrated``: a copy of this process's
    migrated template (see below), instead of an empty database.
    """
    base_url = base_url if base_url is not None else os.environ.get("DATABASE_URL", "")
    if not _is_postgres(base_url):
        path = Path(tmp_path) / f"e2e-{secrets.token_hex(4)}.sqlite3"
        if migrated:
            with contextlib.closing(sqlite3.connect(_sqlite_template())) as source, \
                    contextlib.closing(sqlite3.connect(path)) as target:
                source.backup(target)
        yield f"sqlite:///{path}"
        return

    template = _postgres_template(base_url) if migrated else None
    name = f"construct_e2e_{secrets.token_hex(6)}"
    url = _create_database(base_url, name, template)
    try:
        yield url
    finally:
        _drop_database(base_url, name)


def migrated_database_url(tmp_path, base_url=None):
    """``fresh_database_url``, already migrated: SQLite's copied by the backup API,
    PostgreSQL's by ``CREATE DATABASE ... TEMPLATE``."""
    return fresh_database_url(tmp_path, base_url, migrated=True)


# --- migrated templates ------------------------------------------------------
#
# Migrating costs a Django start and every migration (seconds of CPU); most
# end-to-end tests need only an empty, migrated database. Each test process
# migrates one template per kind of database, once, and gives each test a copy.

_templates = {}


def _sqlite_template():
    if "sqlite" not in _templates:
        folder = tempfile.mkdtemp(prefix="construct-template-")
        atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "template.sqlite3"
        migrate({"DATABASE_URL": f"sqlite:///{path}"})
        _templates["sqlite"] = path
    return _templates["sqlite"]


def _postgres_template(base_url):
    if base_url not in _templates:
        name = f"construct_e2e_template_{secrets.token_hex(6)}"
        url = _create_database(base_url, name)

        def drop():
            with contextlib.suppress(Exception):
                _drop_database(base_url, name)

        atexit.register(drop)
        migrate({"DATABASE_URL": url})
        _templates[base_url] = name
    return _templates[base_url]
