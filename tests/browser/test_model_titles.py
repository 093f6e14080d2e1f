"""A chat's title from its model in Chromium: the sidebar and the header show it as it arrives
(the `session_name` frame), with no reload."""

import pytest

from tests.browser.conftest import browser_server
from tests.browser.helpers import open_paired, screenshot, send, session_id_of, wait_for, wait_turn_end
from tests.e2e.conftest import gateway_env, pair


@pytest.fixture(scope="module")
def titled_server(tmp_path_factory, mock_llm_process):
    """A gateway whose chats get their model's title (the suite turns that off elsewhere)."""
    env = gateway_env(mock_llm_process, CONSTRUCT_AUTO_TITLE="true")
    with browser_server(tmp_path_factory, "browser-titles", env) as server:
        yield server


def test_the_sidebar_and_header_show_the_models_title_without_a_reload(titled_server, page):
    token = pair(titled_server)
    open_paired(page, titled_server, token)
    # The title comes about 2 s after the answer (its words 400 ms apart): well after the list's
    # own reload when the turn ends, well before its periodic one (20 s).
    send(page, "what should we cook for ten people on saturday "
               "[[delay_ms=400]] [[side_reply=Dinner menu for ten guests]]")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)
    item = page.locator(f'.session-item[data-session-id="{session_id}"] .session-name')

    wait_for(lambda: item.inner_text() == "Dinner menu for ten guests", timeout=10)
    assert page.locator("#session-title").inner_text() == "Dinner menu for ten guests"
    assert page.title().startswith("Dinner menu for ten guests")
    screenshot(page, "model-title")
