"""The chat page's finish in Chromium: highlighted code, accessibility, the keyboard, a phone."""

import subprocess
import sys

from tests.browser.helpers import (axe_violations, last_answer, open_paired, screenshot, send, session_id_of,
                                   wait_turn_end)
from tests.support.daphne import REPO_ROOT, server_env

PYTHON = 'import os\n\ndef greet(name):\n    # say hello\n    return f"hello {name}" + str(42)\n'

HOSTILE = (
    "[[echo_prompt]]\n\n"
    '```"><script>window.pwned = "fence"</script>\n'
    '<img src=x onerror="window.pwned = \'img\'">\n'
    "```\n\n"
    "```python\n"
    '<img src=x onerror="window.pwned = \'py\'">\n'
    'print("</code></pre><img src=x onerror=window.pwned=1>")\n'
    "```\n"
)


def colour(locator):
    return locator.evaluate("e => getComputedStyle(e).color")


def test_a_python_code_block_is_highlighted_with_its_label_in_light_and_dark(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    send(page, f"[[echo_prompt]]\n\n```python\n{PYTHON}```\n\n```\nno language here\n```\n")
    wait_turn_end(page, 1, "done")
    answer = last_answer(page)
    block = answer.locator(".code-block").first
    assert block.locator(".code-lang").inner_text() == "python"
    code = block.locator("pre code")
    assert "hljs" in code.get_attribute("class").split()
    # highlight.js's spans, over exactly the text that was written.
    assert code.locator(".hljs-keyword").count() >= 3  # import, def, return
    assert code.locator(".hljs-comment").inner_text() == "# say hello"
    assert code.locator(".hljs-string").count() >= 1 and code.locator(".hljs-number").count() >= 1
    assert code.inner_text().rstrip("\n") == PYTHON.rstrip("\n")
    # A block without a language stays plain text, labelled "code".
    plain = answer.locator(".code-block").nth(1)
    assert plain.locator(".code-lang").inner_text() == "code"
    assert plain.locator("pre code span").count() == 0

    keyword = code.locator(".hljs-keyword").first
    colours = {}
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        colours[scheme] = colour(keyword)
        assert colours[scheme] != colour(code)  # a keyword stands out from the plain text
        screenshot(page, f"chat-code-highlighted-{scheme}")
    assert colours["light"] != colours["dark"]  # each scheme has its own theme


def test_hostile_code_blocks_run_nothing_and_break_nothing(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, HOSTILE)
    wait_turn_end(page, 1, "done")
    answer = last_answer(page)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#messages img, #messages script").count() == 0
    blocks = answer.locator(".code-block")
    assert blocks.count() == 2
    # The odd fence name is shown as the text it is, and highlights nothing.
    assert blocks.nth(0).locator(".code-lang").inner_text() == '"><script>window.pwned'
    assert blocks.nth(0).locator("pre code").inner_text().strip() == '<img src=x onerror="window.pwned = \'img\'">'
    assert blocks.nth(0).locator("pre code span").count() == 0
    # The Python block is highlighted, and its markup-looking text stays text.
    python = blocks.nth(1).locator("pre code")
    assert python.locator("span").count() >= 1
    assert python.inner_text().rstrip("\n") == (
        '<img src=x onerror="window.pwned = \'py\'">\n'
        'print("</code></pre><img src=x onerror=window.pwned=1>")'
    )
    assert python.locator("span:not([class^='hljs-'])").count() == 0
    # The page still works: the next turn renders after it.
    send(page, "still here")
    wait_turn_end(page, 2, "done")
    assert page.evaluate("window.pwned") is None
    screenshot(page, "chat-code-hostile")


# --- Accessibility -----------------------------------------------------------------------

def test_axe_finds_nothing_serious_on_the_chat_page_in_light_and_dark(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    send(page, '[[tool:shell {"command": "echo hi"}]] ran it')
    wait_turn_end(page, 1, "done")
    send(page, f"[[echo_prompt]]\n\nSome `inline` code and a block:\n\n```python\n{PYTHON}```\n")
    wait_turn_end(page, 2, "done")
    assert page.locator(".tool-card").count() == 1 and page.locator(".code-block").count() >= 1
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page)
        assert violations == [], (scheme, violations)
        screenshot(page, f"chat-axe-{scheme}")
    # With the side panel open (its tabs, the canvas and the events list) too.
    page.click("#toggle-events")
    page.locator("#events-panel").wait_for()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page)
        assert violations == [], (scheme, "panel", violations)
        screenshot(page, f"chat-axe-panel-{scheme}")


def test_axe_finds_nothing_serious_on_the_pairing_card_in_light_and_dark(chat_server, page):
    page.goto(chat_server.url + "/")
    page.locator("#pairing-code").wait_for()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page)
        assert violations == [], (scheme, violations)
        screenshot(page, f"pairing-axe-{scheme}")


INTERRUPT = (
    "import os; from sessions_app.models import ChatSession; "
    "assert ChatSession.objects.filter(pk=os.environ['SESSION_ID']).update(state='interrupted') == 1"
)


def interrupt(server, session_id):
    """Mark a session's last turn interrupted in the server's database, as a restart mid-turn leaves it."""
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", INTERRUPT], cwd=REPO_ROOT,
        env=server_env({**server.env, "SESSION_ID": session_id}),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )


def test_axe_finds_nothing_serious_on_the_sessions_state_badges_in_light_and_dark(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    send(page, "a chat that gets interrupted")
    wait_turn_end(page, 1, "done")
    interrupted = session_id_of(page)
    interrupt(chat_server, interrupted)
    page.keyboard.press("Control+Shift+O")
    send(page, "another chat")
    wait_turn_end(page, 1, "done")
    badge = page.locator(f'.session-item[data-session-id="{interrupted}"] .badge.state-interrupted')
    badge.wait_for()
    assert badge.inner_text() == "interrupted"
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page, context="document.querySelector('#sidebar')")
        assert violations == [], (scheme, violations)
        screenshot(page, f"sessions-interrupted-axe-{scheme}")
    # Opened, its last answer says it was interrupted and offers Retry, as it did live.
    page.locator(f'.session-item[data-session-id="{interrupted}"] .session-link').click()
    last_answer(page).locator("button.retry").wait_for()
    assert last_answer(page).locator(".turn-note").inner_text().startswith("Interrupted: the server restarted")


# --- The keyboard --------------------------------------------------------------------------

FOCUSED = """(() => {
  const e = document.activeElement;
  const where = e.closest('header') ? 'header' : e.closest('nav') ? 'sessions'
    : e.closest('#messages') && e.id !== 'messages' ? 'in-messages' : e.closest('#composer') ? 'composer' : 'page';
  return [e.id || e.getAttribute('aria-label') || e.tagName, where];
})()"""


def tab_sequence(page, presses):
    """The focused element after each Tab from the top of the page."""
    page.evaluate("(() => { const b = document.body; b.tabIndex = -1; b.focus(); b.removeAttribute('tabindex'); })()")
    sequence = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        sequence.append(tuple(page.evaluate(FOCUSED)))
    return sequence


def test_tab_goes_header_then_sessions_then_messages_then_the_composer_and_send(chat_server, token, page):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    send(page, "[[echo_prompt]] hello\n\n```python\nx = 1\n```")
    wait_turn_end(page, 1, "done")
    # The first stop is a way past everything, in sight while it has the focus (only then).
    assert tab_sequence(page, 1) == [("skip-to-input", "page")]
    assert page.locator("#skip-to-input").bounding_box()["y"] >= 0
    screenshot(page, "chat-keyboard-skip-link")
    page.keyboard.press("Tab")
    assert page.locator("#skip-to-input").bounding_box()["y"] < 0

    sequence = tab_sequence(page, 40)
    ids = [name for name, _ in sequence]
    places = [where for _, where in sequence]

    # After the skip link, the header's controls.
    assert ids[0] == "skip-to-input"
    assert ids[1:4] == ["page-context", "toggle-canvas", "toggle-events"]
    # Then the sessions, then the messages region itself (labelled), then what is in it.
    messages = ids.index("messages")
    assert set(places[4:messages]) == {"sessions"} and ids[4] == "new-session"
    assert page.locator("#messages").get_attribute("aria-label") == "Messages"
    send_at = ids.index("send")
    assert ids[messages + 1:send_at][-2:] == ["input", "attach"]
    assert set(places[messages + 1:send_at - 2]) == {"in-messages"}
    # Send is the page's last stop: then out of the page (the browser's own bar) and round again.
    assert ids[send_at + 1:send_at + 3] == ["BODY", "skip-to-input"]

    # The skip link goes straight to the message box.
    tab_sequence(page, 1)
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "input"


# --- A phone ---------------------------------------------------------------------------------

def box(page, selector):
    return page.locator(selector).bounding_box()


def test_a_phone_keeps_the_title_and_state_a_one_line_box_and_a_drawer_with_a_backdrop(chat_server, token, page):
    page.set_viewport_size({"width": 390, "height": 844})
    open_paired(page, chat_server, token)
    send(page, "A rather long first question about the weather in the mountains this weekend")
    wait_turn_end(page, 1, "done")
    title = page.locator("#session-title")
    page.wait_for_function("() => document.querySelector('#session-title').textContent.startsWith('A rather long')")
    # The header: the title, cut with an ellipsis on one line, and the connection state.
    assert title.is_visible()
    assert title.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
    assert box(page, "#session-title")["height"] < 30 and box(page, "#session-title")["width"] >= 80
    assert page.locator("#conn .dot").is_visible()
    assert page.locator("#conn").get_attribute("data-state") == "online"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    header = box(page, ".topbar")
    for control in ("#menu-toggle", "#session-title", "#conn", "#page-context", "#toggle-canvas", "#toggle-events"):
        b = box(page, control)
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390 and header["y"] <= b["y"] < header["y"] + header["height"], control

    # During a turn the message box keeps its placeholder on one line beside Stop and Queue.
    send(page, "[[chunks=400]] [[delay_ms=100]] a slow answer")  # stopped below, after the checks
    page.locator("#stop").wait_for()
    assert page.locator("#send").inner_text() == "Queue"
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        screenshot(page, f"chat-phone-turn-{scheme}")
        violations = axe_violations(page)
        assert violations == [], (scheme, violations)
    line = page.locator("#input").evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
    assert box(page, "#input")["height"] < 2 * line
    assert page.locator("#input").evaluate("e => e.scrollHeight <= e.clientHeight + 1")
    assert abs(box(page, "#stop")["y"] - box(page, "#send")["y"]) < 4
    page.locator("#stop").click()
    wait_turn_end(page, 2)

    # The drawer lies over a backdrop; a tap on the backdrop closes it.
    page.click("#menu-toggle")
    backdrop = page.locator("#drawer-backdrop")
    backdrop.wait_for()
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        violations = axe_violations(page)
        assert violations == [], (scheme, violations)
        screenshot(page, f"chat-phone-drawer-{scheme}")
    page.mouse.click(370, 400)  # on the conversation's side, outside the drawer
    assert page.locator("#menu-toggle").get_attribute("aria-expanded") == "false"
    assert backdrop.is_hidden()
    assert page.evaluate("document.querySelector('#sidebar').classList.contains('open')") is False
