"""Fixtures shared by every test folder.

Helpers live in ``tests/support/`` so that fixtures here stay one-liners;
add new fixtures below their section.
"""

import contextlib
import os
import time
from pathlib import Path

import pytest

from tests.support import services
from tests.support.daphne import DaphneServer, log_tails, migrated_database_url

TESTS_DIR = Path(__file__).resolve().parent


# --- collection --------------------------------------------------------------


# Folders of tests whose several server processes share one PostgreSQL database (or one
# made for them) and Redis, as a deployment of several processes must: run.py's first pass
# (CONSTRUCT_TEST_PASS=embedded) leaves them to the second.
SERVICE_ONLY_FOLDERS = ("multiprocess",)


# Folders and fixtures whose tests start real servers or a browser: such a test costs
# seconds, not milliseconds (see ``slow_files_first``).
LIVE_FOLDERS = frozenset({"e2e", "browser", "multiprocess"})
LIVE_FIXTURES = frozenset({"mock_llm_process", "daphne_factory", "chromium", "chat_server"})
# About how many other tests one live test is worth (a pass: 11 s each against half a second).
LIVE_WEIGHT = 20


def _cost(item, folder):
    live = (folder in LIVE_FOLDERS or LIVE_FIXTURES.intersection(item.fixturenames)
            or item.get_closest_marker("slow"))
    return LIVE_WEIGHT if live else 1


def slow_files_first(items):
    """Items regrouped by file, the costliest files first; order within a file kept.

    run.py hands each worker whole files (``--dist loadfile``) in this order. Left to
    itself, pytest-xdist sends the files with the most tests first, and a file of one
    long live test (a browser's, a server's) last, where it runs alone on one worker
    while the others have finished: the whole pass waits for it.
    """
    files = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    costs = {path: sum(_cost(item, _folder(path)) for item in group) for path, group in files.items()}
    ordered = sorted(files, key=lambda path: -costs[path])  # stable: ties keep their order
    items[:] = [item for path in ordered for item in files[path]]


def _folder(path):
    """The folder of tests/ that `path` is in ("" for a file of tests/ itself or outside it)."""
    try:
        parts = Path(path).resolve().relative_to(TESTS_DIR).parts
    except ValueError:
        return ""
    return parts[0] if len(parts) > 1 else ""


def pytest_collection_modifyitems(config, items):
    """Mark tests by folder, so ``-m "not e2e"`` and ``-m "not browser"`` work; in run.py's
    embedded pass, leave out the folders that run on the services only; the costliest
    files first (``slow_files_first``)."""
    embedded_pass = os.environ.get("CONSTRUCT_TEST_PASS") == "embedded"
    kept, left = [], []
    for item in items:
        folder = _folder(item.path)
        if folder == "e2e":
            item.add_marker(pytest.mark.e2e)
        elif folder == "browser":
            item.add_marker(pytest.mark.browser)
        (left if embedded_pass and folder in SERVICE_ONLY_FOLDERS else kept).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept
    slow_files_first(items)


# --- clients on a busy machine -----------------------------------------------

# The suite runs in several workers on few cores: a server answering a
# handshake in 12 s is slow, not broken. A test about timing sets its own.
_WEBSOCKET_OPEN_TIMEOUT = 30


_TEST_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows the end of what each real server printed meanwhile:
    a CI run is read from its output alone, and the server's log is where a 500 says why."""
    if call.when == "setup":
        item.stash[_TEST_STARTED] = time.time() - 1.0
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, tail in log_tails(item.stash.get(_TEST_STARTED, 0.0)):
            report.sections.append((title, tail))


def pytest_configure(config):
    from websockets.asyncio.client import connect

    connect.__init__.__kwdefaults__["open_timeout"] = _WEBSOCKET_OPEN_TIMEOUT


# --- the pytest test database ------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Give each run its own PostgreSQL test database.

    pytest-django drops and recreates ``test_<name>`` without asking, so two
    runs on one server (two people, or CI beside a developer) would destroy
    each other's database mid-run. SQLite tests use memory and need nothing.
    """
    from django.conf import settings

    for db in settings.DATABASES.values():
        if "postgresql" in db["ENGINE"]:
            test = db.setdefault("TEST", {})
            base = test.get("NAME") or f"test_{db['NAME']}"
            test["NAME"] = f"{base}_{os.getpid()}"


# --- logging ------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def asgi_application_loaded():
    """Load the ASGI application before any test's caplog exists.

    Loading it runs django.setup() again, whose logging set-up drops every
    handler on the root logger: the first test to open a socket would
    otherwise capture no log at all, and its "no key in the log" checks
    could not fail.
    """
    import construct_site.routing  # noqa: F401


# --- titles from the model ----------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def no_model_titles():
    """No title call after a chat's first answer, unless a test asks for one
    (CONSTRUCT_AUTO_TITLE): other tests count and read the provider's requests, and
    check the names chats get from their first message.

    Servers the tests start inherit it through the environment.
    """
    from django.conf import settings

    before = os.environ.get("CONSTRUCT_AUTO_TITLE")
    os.environ["CONSTRUCT_AUTO_TITLE"] = "false"
    settings.CONSTRUCT_AUTO_TITLE = False
    yield
    if before is None:
        os.environ.pop("CONSTRUCT_AUTO_TITLE", None)
    else:
        os.environ["CONSTRUCT_AUTO_TITLE"] = before


# --- attachments --------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def media_root(tmp_path_factory):
    """The run's attachments go to a folder of its own, never the project's media/.

    Servers the tests start inherit it through the environment.
    """
    from django.conf import settings

    folder = tmp_path_factory.mktemp("media")
    before = os.environ.get("CONSTRUCT_MEDIA_ROOT")
    os.environ["CONSTRUCT_MEDIA_ROOT"] = str(folder)
    settings.CONSTRUCT_MEDIA_ROOT = folder
    yield folder
    if before is None:
        os.environ.pop("CONSTRUCT_MEDIA_ROOT", None)
    else:
        os.environ["CONSTRUCT_MEDIA_ROOT"] = before


# --- ports and servers -------------------------------------------------------


@pytest.fixture
def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return services.free_port()


class DaphneFactory:
    """Starts real servers for one test; all of them share one fresh database."""

    def __init__(self, tmp_path, stack):
        self.tmp_path = tmp_path
        self.stack = stack
        self.servers = []
        self._database_url = None
        self._migrated = set()

    @property
    def database_url(self):
        """The test's own DATABASE_URL, created (already migrated) on first use."""
        if self._database_url is None:
            self._database_url = self.stack.enter_context(migrated_database_url(self.tmp_path))
            self._migrated.add(self._database_url)
        return self._database_url

    def __call__(self, env=None, **kwargs):
        env = dict(env or {})
        if "DATABASE_URL" not in env:
            env["DATABASE_URL"] = self.database_url
        # One migrate per database is enough; the second server skips it.
        kwargs.setdefault("run_migrate", env["DATABASE_URL"] not in self._migrated)
        kwargs.setdefault("log_path", self.tmp_path / f"daphne-{len(self.servers) + 1}.log")
        server = DaphneServer(env=env, **kwargs)
        self.servers.append(server)
        server.start()
        if env["DATABASE_URL"]:
            self._migrated.add(env["DATABASE_URL"])
        return server


@pytest.fixture
def daphne_factory(tmp_path):
    """``daphne_factory(env=None, **DaphneServer kwargs) -> started DaphneServer``.

    Servers inherit the run's environment, REDIS_URL included (so the
    PostgreSQL+Redis pass runs them on Redis); DATABASE_URL defaults to a
    database of the test's own. Every server is killed at teardown.
    """
    with contextlib.ExitStack() as stack:
        factory = DaphneFactory(tmp_path, stack)
        try:
            yield factory
        finally:
            for server in factory.servers:
                server.kill()
