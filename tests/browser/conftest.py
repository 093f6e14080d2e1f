"""Browser fixtures: Debian's Chromium through Playwright, one real daphne per module, the mock LLM.

The server is shared by the tests of a module (start-up and migrate cost
seconds); each test gets a fresh browser context (its own localStorage) and,
where it does not pair through the page itself, a token of its own device.
"""

import contextlib

import pytest

from tests.conftest import DaphneFactory
from tests.e2e.conftest import gateway_env, mock_llm_process, pair  # noqa: F401  (a fixture)
from tests.support.services import require_chromium

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium per test module (contexts keep its tests apart).

    Module scope, not session: while Playwright's sync API is up, its event
    loop counts as running in this thread, and every asyncio test after it
    would fail with "cannot be called from a running event loop".
    """
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, mock_llm_process):  # noqa: F811
    """A real daphne (pairing required) whose provider is the mock LLM process."""
    with browser_server(tmp_path_factory, "browser", gateway_env(mock_llm_process)) as server:
        yield server


@contextlib.contextmanager
def browser_server(tmp_path_factory, name, env):
    """A real daphne for a module's browser tests, on a database of its own; killed at the end.

    Skips (fails in CI) first when Chromium is missing: no server to start for nothing.
    """
    require_chromium()
    with contextlib.ExitStack() as stack:
        factory = DaphneFactory(tmp_path_factory.mktemp(name), stack)
        try:
            yield factory(env=env)
        finally:
            for server in factory.servers:
                server.kill()


@pytest.fixture
def context(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 820})
    context.set_default_timeout(15_000)
    yield context
    context.close()


class PageErrors:
    """Uncaught exceptions and console errors of a page: a test ends with none."""

    def __init__(self, page):
        self.errors = []
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", self._console)

    def _console(self, message):
        # Chromium logs refused socket upgrades and HTTP error statuses (a wrong
        # pairing code is a 403) itself; those are expected, not the page's errors.
        # The canvas frame's sandbox refusing a script is the point of it.
        expected = ("WebSocket connection", "Failed to load resource",
                    "Blocked script execution in 'about:srcdoc'")
        if message.type == "error" and not message.text.startswith(expected):
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def page(context):
    page = context.new_page()
    page.errors = PageErrors(page)
    yield page
    assert page.errors.errors == [], page.errors.errors


@pytest.fixture
def token(chat_server):
    """A device token of this test's own (rate limits are per device)."""
    return pair(chat_server)
