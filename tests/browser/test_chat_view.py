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


CODE = "def greet(name):\n    return f\"<b>{name}</b> & 'you'\"\n\n\tprint(greet('x'))  # tab, blank line"


def test_copy_a_code_block_and_a_message(chat_server, token, page, context):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=chat_server.url)
    open_paired(page, chat_server, token)
    message = f"[[echo_prompt]]\n\nSee **this**:\n\n```python\n{CODE}\n```\n"
    send(page, message)
    wait_turn_end(page, 1, "done")
    answer = last_answer(page)
    block = answer.locator(".code-block")
    assert block.locator(".code-lang").inner_text() == "python"
    block.get_by_role("button", name="Copy python code").click()
    copy = block.locator(".copy-btn")
    # The write is asynchronous: "Copied" says it landed, then the clipboard is read.
    wait_for(lambda: copy.inner_text() == "Copied" and copy.get_attribute("aria-label") == "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    screenshot(page, "chat-copy-code")
    wait_for(lambda: copy.inner_text() == "Copy", timeout=5)

    # A message's button copies its Markdown source, the question's as typed.
    answer.get_by_role("button", name="Copy answer").click()
    clipboard = lambda: page.evaluate("navigator.clipboard.readText()")  # noqa: E731
    wait_for(lambda: f"```python\n{CODE}\n```" in clipboard() and "**this**" in clipboard())
    page.locator("article.msg.user").last.get_by_role("button", name="Copy message").click()
    wait_for(lambda: clipboard() == message)
    # The buttons are page furniture, never part of the Markdown DOMPurify cleaned.
    assert answer.locator(".md pre code").inner_text().rstrip("\n") == CODE


def test_a_very_long_message_is_folded_with_show_more(chat_server, token, page):
    open_paired(page, chat_server, token)
    long_text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 10 for i in range(110))
    assert len(long_text) > 30_000
    send(page, "[[chunks=3]] " + long_text)  # a short answer: the question is what is long
    wait_turn_end(page, 1, "done")
    question = page.locator("article.msg.user").last
    body = question.locator(":scope > .md")
    question.get_by_role("button", name="Show more").wait_for()
    toggle = question.locator(".show-more")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert toggle.get_attribute("aria-controls") == body.get_attribute("id")
    assert body.bounding_box()["height"] <= 400
    screenshot(page, "chat-long-message-folded")

    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.inner_text() == "Show less" and toggle.get_attribute("aria-expanded") == "true"
    assert body.bounding_box()["height"] > 5_000
    toggle.click()
    assert toggle.inner_text() == "Show more" and body.bounding_box()["height"] <= 400

    # A short message has no button.
    send(page, "short")
    wait_turn_end(page, 2, "done")
    assert page.locator("article.msg.user").last.locator(".show-more").is_hidden()


STREAMING_LONG = """() => {
  const a = [...document.querySelectorAll('article.msg.assistant')].pop();
  const l = document.querySelector('#messages');
  if (!a || !a.classList.contains('streaming') || a.textContent.length < 10000) return null;
  return { folded: !!a.querySelector('.collapsed'), toggle: !!a.querySelector('.show-more:not([hidden])'),
           fromEnd: l.scrollHeight - l.scrollTop - l.clientHeight };
}"""


def test_a_very_long_answer_folds_once_complete_not_while_it_streams(chat_server, token, page, context):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=chat_server.url)
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 10 for i in range(110))
    message = (f"[[echo_prompt]] [[delay_ms=1]]\n\n```python\n{CODE}\n```\n\n{paragraphs}\n\n"
               "[the last link](https://example.com/end)")
    assert len(message) > 30_000
    send(page, message)
    # Half-way through, the answer is whole on the page, and the page follows its end.
    streaming = page.wait_for_function(STREAMING_LONG, timeout=30_000).json_value()
    assert streaming["folded"] is False and streaming["toggle"] is False
    assert streaming["fromEnd"] < 50, streaming
    wait_turn_end(page, 1, "done", timeout=60_000)

    answer = last_answer(page)
    body = answer.locator(":scope > .turn-body")
    toggle = answer.locator(":scope > .show-more")
    toggle.wait_for()
    assert answer.get_by_role("button", name="Show more").count() == 1
    assert toggle.get_attribute("aria-expanded") == "false"
    assert toggle.get_attribute("aria-controls") == body.get_attribute("id")
    wait_for(lambda: body.bounding_box()["height"] <= 400)
    screenshot(page, "chat-long-answer-folded")
    # Folded, the code at its top is still highlighted, and its Copy button copies it.
    code = body.locator(".code-block pre code")
    assert "hljs" in code.get_attribute("class").split() and code.locator(".hljs-keyword").count() >= 1
    body.get_by_role("button", name="Copy python code").click()
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()") == CODE)
    assert toggle.get_attribute("aria-expanded") == "false"  # a click on Copy unfolds nothing
    # The answer's Copy button copies all of it, folded part included.
    answer.get_by_role("button", name="Copy answer").click()
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()") == message)

    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.inner_text() == "Show less" and toggle.get_attribute("aria-expanded") == "true"
    assert body.bounding_box()["height"] > 5_000
    toggle.click()
    assert toggle.inner_text() == "Show more" and toggle.get_attribute("aria-expanded") == "false"
    assert body.bounding_box()["height"] <= 400
    # The keyboard reaching the folded part (Shift+Tab from the button: the link at the end) unfolds it.
    toggle.focus()
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent") == "the last link"
    assert toggle.get_attribute("aria-expanded") == "true" and body.bounding_box()["height"] > 5_000

    # From the history too; a short answer has no button.
    send(page, "short")
    wait_turn_end(page, 2, "done")
    assert last_answer(page).locator(".show-more").is_hidden()
    page.reload()
    page.locator("article.msg.assistant .show-more:not([hidden])").first.wait_for()
    assert page.locator("article.msg.assistant .show-more:not([hidden])").count() == 1
    assert page.locator("article.msg.assistant").first.locator(".collapsed").count() == 1


def test_copy_buttons_and_folding_fit_a_phone_in_light_and_dark(chat_server, token, page):
    page.set_viewport_size({"width": 390, "height": 844})
    open_paired(page, chat_server, token)
    send(page, f"[[echo_prompt]]\n\n```python\n{CODE}\n```\n")
    wait_turn_end(page, 1, "done")
    send(page, "[[chunks=2]] " + "a long line of text " * 400)
    wait_turn_end(page, 2, "done")
    page.locator("article.msg.user").last.locator(".show-more").wait_for()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.evaluate("(() => { const l = document.querySelector('#messages');"
                             " return l.scrollWidth <= l.clientWidth; })()")
        screenshot(page, f"chat-phone-copy-fold-{scheme}")
    page.locator("#messages").evaluate("l => l.scrollTo({top: 0, behavior: 'instant'})")
    page.locator(".code-block").first.get_by_role("button", name="Copy python code").wait_for()
    assert page.locator(".code-block").first.bounding_box()["width"] <= 390
    screenshot(page, "chat-phone-code-block-dark")
