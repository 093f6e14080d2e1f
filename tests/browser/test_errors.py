"""Errors on the chat page: plain words, the code under "Details", Retry, refused messages kept."""

import uuid

import pytest

from tests.browser.conftest import browser_server
from tests.browser.helpers import ARTIFACTS, last_answer, open_paired, send, wait_online, wait_turn_end
from tests.e2e.conftest import gateway_env, pair

MAX_FRAME_BYTES = 4096


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, mock_llm_process):
    env = gateway_env(mock_llm_process, CONSTRUCT_FIRST_DELTA_TIMEOUT="1",
                      CONSTRUCT_MAX_FRAME_BYTES=str(MAX_FRAME_BYTES))
    with browser_server(tmp_path_factory, "browser-errors", env) as server:
        yield server


def open_details(page):
    page.locator("#banner-details summary").click()
    return page.locator("#banner-code").inner_text(), page.locator("#banner-raw").inner_text()


def test_a_broken_stream_reads_plainly_and_retry_answers_again(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, f"[[reset_once=2]] [[chunks=4]] break once {uuid.uuid4().hex}")
    wait_turn_end(page, 1, "error")

    banner = page.locator("#banner-text").inner_text()
    assert "connection to the model broke off" in banner
    assert "RemoteProtocolError" not in banner and "peer closed" not in banner
    assert "broke off" in last_answer(page).locator(".turn-note").inner_text()
    # The developer's text is still there for the curious, with the code.
    assert page.locator("#banner-raw").is_hidden()
    code, raw = open_details(page)
    assert code == "PROVIDER_ERROR" and "broke off" in raw
    page.screenshot(path=str(ARTIFACTS / "error-provider-retry.png"))

    last_answer(page).locator("button.retry").click()
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('article.msg.assistant')].pop();"
        " return a && a.dataset.end === 'done'; }")
    assert last_answer(page).locator(".answer").inner_text().split() == ["tok1", "tok2", "tok3", "tok4"]
    # One question on the page, answered: no second copy of it was sent as a new message.
    assert page.locator("article.msg.user").count() == 1


def retry_after_reload(page, note, shot):
    """Reload the page on a failed turn: it shows `note` and a Retry, whose new answer arrives."""
    page.reload()
    wait_online(page)
    failed = last_answer(page)
    failed.locator("button.retry").wait_for()
    assert failed.get_attribute("data-end") == "error"
    assert failed.locator(".turn-note").inner_text() == note
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
    failed.locator("button.retry").click()
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('article.msg.assistant')].pop();"
        " return a && a.dataset.end === 'done'; }")
    assert page.locator("button.retry").count() == 0
    # The question was answered again, not sent again as a new message.
    assert page.locator("article.msg.user").count() == 1
    assert page.locator("article.msg.assistant").count() == 1


def test_a_failed_turn_keeps_its_retry_after_a_reload(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, f"[[reset_once=2]] [[chunks=4]] break once {uuid.uuid4().hex}")
    wait_turn_end(page, 1, "error")
    # The partial answer was kept with its error's code: the reloaded page words that code.
    retry_after_reload(page, "The model could not answer this time. Try again.",
                       "error-retry-after-reload-partial")
    assert last_answer(page).locator(".answer").inner_text().split() == ["tok1", "tok2", "tok3", "tok4"]
    # Answered: a reload now shows no Retry.
    page.reload()
    wait_online(page)
    last_answer(page).locator(".answer").wait_for()
    assert page.locator("button.retry").count() == 0


def test_a_turn_that_failed_before_any_text_offers_retry_after_a_reload(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, f"[[fail_once=400]] [[chunks=3]] refused once {uuid.uuid4().hex}")
    wait_turn_end(page, 1, "error")
    # Nothing of the answer was saved: the reloaded page draws the failed turn under its question.
    retry_after_reload(page, "Something went wrong while answering. Try again.",
                       "error-retry-after-reload-no-text")
    assert last_answer(page).locator(".answer").inner_text().split() == ["tok1", "tok2", "tok3"]


def test_a_silent_model_ends_after_the_first_delta_timeout_and_says_so(chat_server, token, page):
    page.emulate_media(color_scheme="dark")
    open_paired(page, chat_server, token)
    send(page, "[[silent]] anyone there?")
    wait_turn_end(page, 1, "error", timeout=10_000)
    assert "did not answer within 1 second." in page.locator("#banner-text").inner_text()
    assert last_answer(page).locator("button.retry").is_visible()
    code, raw = open_details(page)
    assert code == "PROVIDER_ERROR" and raw == "The model sent nothing for 1 second"
    page.screenshot(path=str(ARTIFACTS / "error-silent-model-dark.png"))


def test_a_message_too_large_stays_in_the_box_not_in_the_chat(chat_server, token, page):
    open_paired(page, chat_server, token)
    text = "long line of text\n" * (MAX_FRAME_BYTES // 10)
    send(page, text)
    page.locator("#banner[data-code=MESSAGE_TOO_LARGE]").wait_for()
    assert "too large to send" in page.locator("#banner-text").inner_text()
    assert "Frame is larger" not in page.locator("#banner-text").inner_text()
    assert page.locator("#input").input_value() == text
    assert page.locator("#messages article.msg").count() == 0
    code, raw = open_details(page)
    assert code == "MESSAGE_TOO_LARGE" and str(MAX_FRAME_BYTES) in raw
    page.screenshot(path=str(ARTIFACTS / "error-too-large.png"))

    # Shortened, it goes.
    page.locator("#input").fill("short now")
    page.locator("#input").press("Enter")
    wait_turn_end(page, 1, "done")


@pytest.fixture(scope="module")
def no_model_server(tmp_path_factory, mock_llm_process):
    """A gateway with no model it can use: every socket gets AGENT_INIT_FAILED."""
    env = gateway_env(mock_llm_process, CONSTRUCT_BASE_URL=None, CONSTRUCT_API_KEY=None)
    with browser_server(tmp_path_factory, "browser-no-model", env) as server:
        yield server


def test_no_model_shows_what_to_set_and_try_again_without_a_reconnect_loop(no_model_server, page):
    token = pair(no_model_server)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.context.add_init_script(
        f"try {{ localStorage.setItem('construct.token', {token!r}); }} catch (e) {{}}")
    page.goto(no_model_server.url + "/")
    page.locator("#banner[data-code=AGENT_INIT_FAILED]").wait_for()
    text = page.locator("#banner-text").inner_text()
    assert "No working model is set up" in text
    assert "CONSTRUCT_API_KEY" in text or "CONSTRUCT_BASE_URL" in text
    assert page.locator("#banner-action").inner_text() == "Try again"

    # A message typed now waits in the outbox; nothing knocks on the server meanwhile.
    send(page, "are you there?")
    queued = page.locator("article.msg.user.pending")
    queued.wait_for()
    page.wait_for_timeout(4000)
    assert len(sockets) == 1, sockets
    assert "no model" in page.locator("#conn-text").inner_text()
    page.screenshot(path=str(ARTIFACTS / "error-no-model.png"))

    # Try again: one more attempt, refused the same way, and still no loop; the message waits.
    page.locator("#banner-action").click()
    page.wait_for_function("() => !document.getElementById('banner').hidden")
    page.locator("#banner[data-code=AGENT_INIT_FAILED]").wait_for()
    page.wait_for_timeout(3000)
    assert len(sockets) == 2, sockets
    assert queued.count() == 1 and "are you there?" in queued.inner_text()
    kept = page.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('construct.outbox.'))"
                         ".map((k) => localStorage.getItem(k)).join('')")
    assert "are you there?" in kept
