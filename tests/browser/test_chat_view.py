"""Reading the conversation in Chromium: following the stream, copying, long messages, the keyboard."""

from tests.browser.helpers import last_answer, open_paired, screenshot, send, wait_for, wait_turn_end

LONG_WORDS = " ".join(f"word{i}" for i in range(400))


def distance_from_end(page):
    return page.evaluate("(() => { const l = document.querySelector('#messages');"
                         " return l.scrollHeight - l.scrollTop - l.clientHeight; })()")


def fill_the_view(page, turns=2):
    """Enough conversation that the message list scrolls."""
    for n in range(1, turns + 1):
        send(page, f"{LONG_WORDS} {n}")
        wait_turn_end(page, n, "done")


def test_the_view_follows_an_answer_that_uses_a_tool(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    fill_the_view(page)
    send(page, '[[tool:shell {"command": "sleep 0.5"}]] [[chunks=30]] [[delay_ms=20]] after the tool')
    wait_turn_end(page, 3, "done")
    turn = last_answer(page)
    assert turn.locator(".tool-card").count() == 1
    # The end of the reply is in view, above the message box, and no way back is offered.
    wait_for(lambda: distance_from_end(page) < 4)
    last_line = turn.locator(".answer").last.bounding_box()
    view = page.locator("#messages").bounding_box()
    composer = page.locator("#composer").bounding_box()
    assert view["y"] < last_line["y"] + last_line["height"] <= composer["y"]
    assert page.locator("#jump-latest").is_hidden()


def test_scrolled_up_the_view_stays_put_and_jump_to_latest_brings_it_back(chat_server, token, page):
    open_paired(page, chat_server, token)
    fill_the_view(page)
    send(page, "[[chunks=60]] [[delay_ms=60]] slow")
    page.wait_for_function("() => document.querySelectorAll('article.msg.assistant .answer').length >= 3")
    box = page.locator("#messages").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -700)
    jump = page.get_by_role("button", name="Jump to latest")
    jump.wait_for(state="visible")
    wait_for(lambda: distance_from_end(page) > 300)
    top = page.evaluate("document.querySelector('#messages').scrollTop")
    wait_turn_end(page, 3, "done")
    # The reader's place is kept while the answer grows and ends.
    assert abs(page.evaluate("document.querySelector('#messages').scrollTop") - top) <= 2
    assert distance_from_end(page) > 300
    assert jump.is_visible()
    screenshot(page, "chat-jump-to-latest")

    # The button is reached from the keyboard like any other; it scrolls to the end and follows again.
    jump.focus()
    page.keyboard.press("Enter")
    wait_for(lambda: distance_from_end(page) < 4)
    assert jump.is_hidden()
    send(page, f"[[chunks=40]] [[delay_ms=10]] {LONG_WORDS}")
    wait_turn_end(page, 4, "done")
    wait_for(lambda: distance_from_end(page) < 4)
    assert jump.is_hidden()


CONTRAST = """(sel) => {
    const node = document.querySelector(sel);
    const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
    const lum = (c) => {
        const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    let back = node;
    while (getComputedStyle(back).backgroundColor === 'rgba(0, 0, 0, 0)') back = back.parentElement;
    const [a, b] = [lum(getComputedStyle(node).color), lum(getComputedStyle(back).backgroundColor)];
    return [parseFloat(getComputedStyle(node).fontSize), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
}"""


def test_esc_closes_the_panel_and_the_drawer_and_a_shortcut_starts_a_new_chat(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, "a chat to leave")
    wait_turn_end(page, 1, "done")
    first = page.evaluate("new URLSearchParams(location.search).get('session')")

    # The hint says how, in type large enough to read, in light and dark.
    hint = page.locator("#composer-hint")
    assert "Ctrl+Shift+O" in hint.inner_text() and "Esc" in hint.inner_text()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        size, contrast = page.evaluate(CONTRAST, "#composer-hint")
        assert size >= 12.5 and contrast >= 4.5, (scheme, size, contrast)
    page.emulate_media(color_scheme="light")

    page.click("#toggle-events")
    assert page.locator("#sidepanel").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#sidepanel").is_hidden()
    assert page.locator("#toggle-events").get_attribute("aria-pressed") == "false"
    page.click("#toggle-canvas")
    page.locator("#tab-events").focus()  # focus inside the panel goes back to the message box
    page.keyboard.press("Escape")
    assert page.locator("#sidepanel").is_hidden()
    assert page.evaluate("document.activeElement.id") == "input"

    page.keyboard.press("Control+Shift+O")
    wait_for(lambda: page.evaluate("new URLSearchParams(location.search).get('session')") != first)
    page.locator("#conn[data-state=online]").wait_for()
    assert page.locator("article.msg").count() == 0
    assert page.evaluate("document.activeElement.id") == "input"
    page.go_back()
    wait_for(lambda: page.evaluate("new URLSearchParams(location.search).get('session')") == first)
    last_answer(page).wait_for()


def test_esc_closes_the_sessions_drawer_on_a_phone(chat_server, token, page):
    page.set_viewport_size({"width": 390, "height": 844})
    open_paired(page, chat_server, token)
    page.click("#menu-toggle")
    assert page.locator("#menu-toggle").get_attribute("aria-expanded") == "true"
    page.locator("#session-search").focus()
    page.keyboard.press("Escape")
    assert page.locator("#menu-toggle").get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.activeElement.id") == "menu-toggle"
    wait_for(lambda: page.locator("#sidebar").bounding_box()["x"] + page.locator("#sidebar").bounding_box()["width"] <= 0)
