"""New chats in Chromium: nothing stored until the first message, a greeting with suggestions,
and "Chat not found" for an address that names no chat."""

from tests.browser.helpers import (api, open_paired, screenshot, send, session_id_of, wait_for,
                                   wait_online, wait_turn_end)


def test_visiting_the_page_five_times_leaves_no_session(chat_server, token, page):
    seen = []
    for n in range(5):
        if n == 0:
            open_paired(page, chat_server, token)
        else:
            page.goto(chat_server.url + "/")
            wait_online(page)
        seen.append(session_id_of(page))
        page.locator("#welcome").wait_for(state="visible")
    assert len(set(seen)) == 5
    for session_id in seen:
        assert api(chat_server, token, "GET", f"/api/sessions/{session_id}/")[0] == 404
    status, body = api(chat_server, token, "GET", "/api/sessions/")
    assert status == 200 and body["count"] == 0, body
    assert page.locator("#session-list .session-item").count() == 0


def test_a_new_chat_greets_and_a_suggestion_fills_the_box(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    welcome = page.locator("#welcome")
    welcome.get_by_role("heading", name="How can I help?").wait_for()
    suggestions = welcome.locator("button.suggestion")
    assert 3 <= suggestions.count() <= 4
    assert page.locator("#messages article").count() == 0
    screenshot(page, "new-chat-greeting-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "new-chat-greeting-dark")
    page.emulate_media(color_scheme="light")

    second = suggestions.nth(1)
    text = second.locator("span").inner_text()
    second.click()
    assert page.locator("#input").input_value() == text
    assert page.evaluate("document.activeElement.id") == "input"
    # A reload before anything is sent is still this tab's new chat, not "Chat not found".
    session_id = session_id_of(page)
    page.reload()
    wait_online(page)
    welcome.get_by_role("heading", name="How can I help?").wait_for()
    assert session_id_of(page) == session_id

    send(page, "hello from a new chat")
    wait_turn_end(page, 1, "done")
    assert welcome.is_hidden()
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session_id}/")
    assert status == 200 and body["message_count"] == 2
    page.reload()
    wait_online(page)
    page.locator("article.msg.assistant").first.wait_for()
    assert welcome.is_hidden()


def test_an_unknown_chat_address_says_not_found(chat_server, token, page):
    open_paired(page, chat_server, token)
    page.goto(chat_server.url + "/?session=no-such-chat")
    welcome = page.locator("#welcome")
    welcome.get_by_role("heading", name="Chat not found").wait_for()
    assert page.locator("#session-title").inner_text() == "Chat not found"
    assert page.locator("#messages article").count() == 0
    assert page.locator("#conn").get_attribute("data-state") == "offline"
    screenshot(page, "chat-not-found-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "chat-not-found-dark")
    page.emulate_media(color_scheme="light")

    # Writing there starts a new chat instead of one under the unknown id.
    send(page, "typed under not found")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)
    assert session_id != "no-such-chat"
    assert api(chat_server, token, "GET", "/api/sessions/no-such-chat/")[0] == 404
    assert api(chat_server, token, "GET", f"/api/sessions/{session_id}/")[0] == 200

    page.goto(chat_server.url + "/?session=another-missing-one")
    welcome.get_by_role("heading", name="Chat not found").wait_for()
    welcome.get_by_role("link", name="Start a new chat").click()
    welcome.get_by_role("heading", name="How can I help?").wait_for()
    wait_for(lambda: session_id_of(page) not in ("another-missing-one", session_id))
    assert page.locator("#session-title").inner_text() == "New chat"
