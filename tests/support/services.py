"""External services for tests: find them, or start private ones.

``require_*`` answer "can this test use the service?". Locally a missing
service is a skip with a reason; with ``CONSTRUCT_REQUIRE_SERVICES=1`` (CI)
it is a failure, because there a skipped test is a test that never ran.

``private_redis()`` and ``private_postgres()`` start throw-away instances on
free ports in temporary folders, for tests that stop, kill or break a
service: they never touch the machine's shared instances.
"""

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

import pytest

from tests.support.ports import free_port  # noqa: F401 - the tests import it from here

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def services_required():
    """True when a missing service must fail the run instead of skipping."""
    return os.environ.get("CONSTRUCT_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def missing(reason):
    """Skip the current test, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (CONSTRUCT_REQUIRE_SERVICES=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


# --- probes ------------------------------------------------------------------


def postgres_error(url, timeout=3):
    """Return why ``url`` cannot be used (a short string), or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        psycopg.connect(url, connect_timeout=timeout).close()
    except Exception as exc:  # any failure means "not usable here"
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line}"
    return None


def redis_error(url, timeout=3):
    """Return why ``url`` cannot be used (a short string), or None when it can."""
    try:
        import redis
    except ImportError:
        return "redis is not installed"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _redacted(url):
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


# --- the machine's shared services ------------------------------------------


def postgres_url():
    """The PostgreSQL URL tests should use: the run's own, else the test default."""
    run_url = os.environ.get("DATABASE_URL", "")
    if run_url.startswith(("postgres://", "postgresql://")):
        return run_url
    return os.environ.get("CONSTRUCT_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL


def redis_url():
    """The Redis URL tests should use: the run's own, else the test default."""
    return (
        os.environ.get("REDIS_URL")
        or os.environ.get("CONSTRUCT_TEST_REDIS_URL")
        or DEFAULT_REDIS_URL
    )


def require_postgres():
    """Return a reachable PostgreSQL URL, or skip (fail in CI) saying why not."""
    url = postgres_url()
    error = postgres_error(url)
    if error:
        missing(f"PostgreSQL is not reachable at {_redacted(url)} ({error})")
    return url


def require_redis():
    """Return a reachable Redis URL, or skip (fail in CI) saying why not."""
    url = redis_url()
    error = redis_error(url)
    if error:
        missing(f"Redis is not reachable at {_redacted(url)} ({error})")
    return url


def chromium_path():
    """Path of a Chromium-family browser, or None."""
    configured = os.environ.get("CONSTRUCT_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium():
    """Return the Chromium executable for Playwright, or skip (fail in CI)."""
    path = chromium_path()
    if path is None:
        missing(
            "Chromium is not installed (apt-get install -y chromium, "
            "or set CONSTRUCT_CHROMIUM to a browser executable)"
        )
    return path


def require_bubblewrap():
    """The shell tool's sandbox, checked by running a command in it; skip (fail in CI) without it."""
    from chat.agent.tools.sandbox import SandboxUnavailable, find

    try:
        return find("bwrap")
    except SandboxUnavailable as exc:
        missing(f"the shell sandbox cannot run here: {exc} (apt-get install -y bubblewrap)")


# --- private instances -------------------------------------------------------


class ServiceURL(str):
    """The URL of a private service, with the handles to stop and restart it.

    A ``str`` so that it drops straight into an ``env`` dict; the methods are
    there for tests whose point is to stop, kill or restart the service.
    """

    def __new__(cls, url, service):
        obj = super().__new__(cls, url)
        obj.service = service
        return obj

    @property
    def port(self):
        return self.service.port

    def start(self):
        self.service.start()

    def stop(self):
        self.service.stop()

    def kill(self):
        self.service.kill()


class _Process:
    """One server process in its own process group, so kill() takes its children too."""

    stop_signal = signal.SIGTERM

    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.process = None
        self.log_path = os.path.join(workdir, "server.log")

    def command(self):
        raise NotImplementedError

    def ready_error(self):
        raise NotImplementedError

    def popen_kwargs(self):
        return {}

    def start(self, timeout=30):
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.popen_kwargs(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited at start:\n{self.log()}")
            error = self.ready_error()
            if error is None:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{type(self).__name__} not ready ({error}):\n{self.log()}")
            time.sleep(0.1)

    def _signal(self, sig, wait):
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self):
        """Orderly shutdown (killed after 10 s)."""
        self._signal(self.stop_signal, 10)

    def kill(self):
        """SIGKILL the server and its children: a crash, not a shutdown."""
        self._signal(signal.SIGKILL, 10)

    def log(self):
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as fh:
            return fh.read()[-4000:]
        return ""


class _Redis(_Process):
    def command(self):
        return [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
        ]

    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def ready_error(self):
        return redis_error(self.url(), timeout=1)


def _postgres_bin(name):
    """Find a PostgreSQL server program: PATH, then Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


class _Postgres(_Process):
    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client;
    # SIGINT is the "fast" one a test wants.
    stop_signal = signal.SIGINT

    def __init__(self, port, workdir, user):
        super().__init__(port, workdir)
        self.user = user
        self.data = os.path.join(workdir, "data")

    def popen_kwargs(self):
        return {"user": self.user} if self.user else {}

    def initdb(self):
        subprocess.run(
            [_postgres_bin("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
             "--no-sync", "-E", "UTF8"],
            cwd=self.workdir,
            check=True,
            capture_output=True,
            **self.popen_kwargs(),
        )

    def command(self):
        return [
            _postgres_bin("postgres"),
            "-D", self.data,
            "-p", str(self.port),
            "-k", self.workdir,
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
        ]

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def ready_error(self):
        return postgres_error(self.url(), timeout=1)


@contextlib.contextmanager
def private_redis():
    """Start a private ``redis-server`` on a free port; yield its REDIS_URL.

    The URL is a ``ServiceURL``: ``.stop()``, ``.kill()``, ``.start()``, ``.port``.
    """
    if not shutil.which("redis-server"):
        missing("redis-server is not installed, so no private Redis can be started")
    with tempfile.TemporaryDirectory(prefix="construct-redis-") as workdir:
        server = _Redis(free_port(), workdir)
        server.start()
        try:
            yield ServiceURL(server.url(), server)
        finally:
            server.kill()


@contextlib.contextmanager
def private_postgres():
    """initdb a throw-away cluster on a free port; yield its DATABASE_URL.

    PostgreSQL refuses to run as root, so as root the cluster is owned by and
    run as the ``postgres`` system user. The URL is a ``ServiceURL``:
    ``.stop()``, ``.kill()``, ``.start()``, ``.port``.
    """
    if not (_postgres_bin("initdb") and _postgres_bin("postgres")):
        missing("PostgreSQL server programs (initdb, postgres) are not installed")
    user = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no 'postgres' user to run a private PostgreSQL")
        user = "postgres"
    workdir = tempfile.mkdtemp(prefix="construct-pg-")
    try:
        if user:
            shutil.chown(workdir, user=user)
        server = _Postgres(free_port(), workdir, user)
        server.initdb()
        server.start()
        try:
            yield ServiceURL(server.url(), server)
        finally:
            server.kill()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
