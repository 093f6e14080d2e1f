"""The chat page in Chromium against the real server (daphne) with the mock LLM as provider."""

import json
import secrets
import subprocess
import sys
import time

from tests.browser.helpers import (
    TOKEN_KEY,
    answer_text,
    api,
    last_answer,
    open_paired,
    pairing_code,
    screenshot,
    send,
    session_id_of,
    wait_for,
    wait_online,
    wait_turn_end,
)
from tests.support.daphne import REPO_ROOT, server_env

TOKENS = lambda n: [f"tok{i}" for i in range(1, n + 1)]  # noqa: E731


def test_page_is_served_with_a_strict_policy_and_no_cdn(chat_server, page):
    response = page.goto(chat_server.url + "/")
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    html = page.content()
    assert "https://" not in html.split("<body")[0]  # every script and style is our own
    for path in ("/static/vendor/marked/marked.umd.js", "/static/vendor/dompurify/purify.min.js",
                 "/static/chat/main.js", "/static/chat/chat.css"):
        assert page.request.get(chat_server.url + path).status == 200, path


def test_pair_with_the_code_and_watch_the_answer_grow(chat_server, page):
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#pairing-code", state="visible")
    assert page.locator("#app").is_hidden()

    page.fill("#pairing-code", "000000")
    page.click("#pairing-submit")
    page.wait_for_function("() => document.querySelector('#pairing-error').textContent.includes('not accepted')")

    page.fill("#pairing-code", pairing_code(chat_server))
    page.click("#pairing-submit")
    wait_online(page)
    token = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    assert token.startswith("zc_")
    assert api(chat_server, token, "GET", "/api/sessions/")[0] == 200

    send(page, "[[chunks=12]] [[delay_ms=120]] grow")
    samples = []
    while True:
        text, ended = page.evaluate(
            """() => {
                const turn = [...document.querySelectorAll('article.msg.assistant')].pop();
                if (!turn) return ['', false];
                const text = [...turn.querySelectorAll('.answer')].map(e => e.textContent).join('');
                return [text.trim(), turn.hasAttribute('data-end')];
            }"""
        )
        if ended:
            break
        if text and (not samples or text != samples[-1]):
            samples.append(text)
            if len(samples) == 3:
                screenshot(page, "chat-streaming")
        time.sleep(0.02)
    assert last_answer(page).get_attribute("data-end") == "done"
    assert len(samples) >= 3, samples
    for shorter, longer in zip(samples, samples[1:]):
        assert longer.startswith(shorter) and len(longer) > len(shorter)
    assert answer_text(page) == TOKENS(12)
    assert page.locator("#stop").is_hidden()


def test_history_after_reload_and_from_a_shared_link(chat_server, token, page, context):
    open_paired(page, chat_server, token)
    send(page, "Remember **this** line\n\n```python\nprint('kept')\n```")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)

    page.reload()
    wait_online(page)
    assert session_id_of(page) == session_id
    user = page.locator("article.msg.user")
    assert user.count() == 1
    assert user.locator("strong").inner_text() == "this"
    assert user.locator("pre code").inner_text().strip() == "print('kept')"
    assert "Echo: Remember this line" in last_answer(page).inner_text()
    current = page.locator(f'.session-item[data-session-id="{session_id}"]')
    # The list loads beside the socket, and may answer after it: waited for, not assumed.
    wait_for(lambda: current.locator(".session-link[aria-current=page]").count() == 1)
    wait_for(lambda: current.locator(".session-name").inner_text().startswith("Remember"))
    screenshot(page, "chat-page")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "chat-page-dark")
    page.emulate_media(color_scheme="light")

    shared = context.new_page()
    shared.goto(f"{chat_server.url}/?session={session_id}")
    wait_online(shared)
    assert shared.locator("article.msg.user").count() == 1
    assert "Echo: Remember this line" in last_answer(shared).inner_text()

    fresh = context.new_page()
    fresh.goto(chat_server.url + "/")
    wait_online(fresh)
    assert session_id_of(fresh) != session_id
    assert fresh.locator("article.msg").count() == 0


def test_rename_and_delete_from_the_sidebar(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, "first session")
    wait_turn_end(page, 1, "done")
    first = session_id_of(page)
    item = page.locator(f'.session-item[data-session-id="{first}"]')
    # A session nobody named is named after its first question.
    wait_for(lambda: item.locator(".session-name").inner_text() == "first session")

    item.hover()
    item.get_by_role("button", name="Rename first session").click()
    page.locator(".rename-input").fill("Trip plans")
    page.locator(".rename-input").press("Enter")
    wait_for(lambda: item.locator(".session-name").inner_text() == "Trip plans")
    assert page.locator("#session-title").inner_text() == "Trip plans"
    assert api(chat_server, token, "GET", f"/api/sessions/{first}/")[1]["name"] == "Trip plans"

    page.click("#new-session")
    wait_online(page)
    send(page, "second session about zebras")
    wait_turn_end(page, 1, "done")
    second = session_id_of(page)
    assert second != first

    # Search goes by name and by message content.
    listed = lambda: page.locator(".session-item").evaluate_all(  # noqa: E731
        "items => items.map(i => i.dataset.sessionId)")
    page.fill("#session-search", "Trip")
    wait_for(lambda: listed() == [first])
    page.fill("#session-search", "zebras")
    wait_for(lambda: listed() == [second])
    page.fill("#session-search", "")
    wait_for(lambda: {first, second} <= set(listed()))

    item.hover()
    item.get_by_role("button", name="Delete Trip plans").click()
    item.get_by_role("button", name="Delete", exact=True).click()
    item.wait_for(state="detached")
    assert api(chat_server, token, "GET", f"/api/sessions/{first}/")[0] == 404
    assert session_id_of(page) == second

    current = page.locator(f'.session-item[data-session-id="{second}"]')
    current.hover()
    current.get_by_role("button", name="Delete second session about zebras").click()
    current.get_by_role("button", name="Delete", exact=True).click()
    wait_for(lambda: session_id_of(page) not in (first, second))
    assert api(chat_server, token, "GET", f"/api/sessions/{second}/")[0] == 404
    assert page.locator("article.msg").count() == 0


XSS = (
    '<img src=x onerror="window.__xss=1;alert(1)"> '
    "<script>window.__xss=2;alert(2)</script> "
    "[click me](javascript:window.__xss=3;alert(3)) "
    '<a href="javascript:window.__xss=4">raw link</a> '
    '<svg onload="window.__xss=5"></svg> '
    "[[echo_prompt]]"
)


def test_xss_in_a_message_and_in_a_reply_stays_inert(chat_server, token, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.add_init_script("window.__xss = 0")
    open_paired(page, chat_server, token)
    send(page, XSS)
    wait_turn_end(page, 1, "done")
    # The mock replies with the message exactly as received: the payload is in both.
    reply = last_answer(page).locator(".answer").inner_text()
    assert "<img src=x onerror=" in reply and "<script>" in reply
    assert "<img src=x onerror=" in page.locator("article.msg.user").inner_text()

    for link in page.locator("#messages a").all():
        link.click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") == 0
    assert dialogs == []
    found = page.evaluate(
        """() => ({
            scripts: document.querySelectorAll('#messages script').length,
            handlers: [...document.querySelectorAll('#messages *')].filter(
                e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
            jsLinks: [...document.querySelectorAll('#messages [href], #messages [src]')].filter(
                e => /javascript:/i.test(e.getAttribute('href') || e.getAttribute('src') || '')).length,
            images: document.querySelectorAll('#messages img, #messages svg').length,
        })"""
    )
    assert found == {"scripts": 0, "handlers": 0, "jsLinks": 0, "images": 0}

    # The sanitiser on its own, for HTML that Markdown itself produces: parsed
    # (not run), no element keeps an event handler or a javascript: URL.
    unsafe = page.evaluate(
        r"""async () => {
            const m = await import('/static/chat/render.js');
            const inputs = ['[x](javascript:alert(1))', '[y](JaVaScRiPt:alert(1) "t")',
                            '<b onclick=alert(1)>b</b>', '![z](x)', '<details open ontoggle=alert(1)>'];
            const bad = [];
            for (const input of inputs) {
                const box = document.createElement('template');
                box.innerHTML = m.markdownToSafeHtml(input);
                for (const e of box.content.querySelectorAll('*')) {
                    for (const a of e.attributes) {
                        if (a.name.startsWith('on') || /^\s*javascript:/i.test(a.value)) bad.push(input);
                    }
                }
            }
            return bad;
        }"""
    )
    assert unsafe == []
    assert page.evaluate("window.__xss") == 0 and dialogs == []


def test_the_stop_button_stops(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, "[[chunks=400]] [[delay_ms=25]] long")
    wait_for(lambda: len(answer_text(page)) >= 5)
    assert page.locator("#stop").is_visible()
    page.click("#stop")
    wait_turn_end(page, 1, "stopped")
    streamed = answer_text(page)
    assert 5 <= len(streamed) < 400 and streamed == TOKENS(len(streamed))
    page.wait_for_timeout(400)
    assert answer_text(page) == streamed
    assert page.locator("#stop").is_hidden()
    assert "Stopped" in last_answer(page).locator(".turn-note").inner_text()

    session_id = session_id_of(page)
    kept = api(chat_server, token, "GET", f"/api/sessions/{session_id}/messages/")[1]["messages"]
    assert kept[-1]["role"] == "assistant" and kept[-1]["data"].get("stopped") is True
    assert kept[-1]["content"].split() == streamed

    send(page, "after the stop")
    wait_turn_end(page, 2, "done")
    assert "Echo: after the stop" in last_answer(page).inner_text()


def test_a_killed_socket_reconnects_and_the_text_ends_whole(chat_server, token, page, context):
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    open_paired(page, chat_server, token)
    send(page, "[[chunks=80]] [[delay_ms=40]] resume")
    wait_for(lambda: len(answer_text(page)) >= 10)
    page.evaluate("window.__construct.socket.close()")
    wait_turn_end(page, 1, "done", timeout=30_000)
    assert answer_text(page) == TOKENS(80)
    assert len(sockets) >= 2
    assert "turn_id=" in sockets[-1] and "last_seq=" in sockets[-1]
    assert "token" not in sockets[-1]  # the token travels as a subprotocol, never in a URL
    assert page.locator("article.msg.assistant").count() == 1

    # A message typed while the socket is down is kept and sent once it is back.
    context.set_offline(True)
    page.evaluate("window.__construct.socket.close()")
    send(page, "sent while offline")
    pending = page.locator("article.msg.user").last
    assert "Waiting for the connection" in pending.locator(".msg-status").inner_text()
    page.wait_for_timeout(700)
    context.set_offline(False)
    wait_turn_end(page, 2, "done", timeout=30_000)
    assert "Echo: sent while offline" in last_answer(page).inner_text()
    session_id = session_id_of(page)
    kept = api(chat_server, token, "GET", f"/api/sessions/{session_id}/messages/")[1]["messages"]
    assert [m["content"] for m in kept if m["role"] == "user"].count("sent while offline") == 1
    assert page.locator("article.msg.user").count() == 2


def test_a_refused_token_sends_the_browser_back_to_pairing(chat_server, page):
    open_paired_refused = "zc_" + secrets.token_urlsafe(32)
    page.context.add_init_script(f"localStorage.setItem('{TOKEN_KEY}', '{open_paired_refused}')")
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#pairing-code", state="visible")
    assert "no longer accepts this browser's token" in page.locator("#pairing-notice").inner_text()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None


def test_thinking_tools_canvas_events_status_and_error_banner(chat_server, token, page):
    console = []
    page.on("console", lambda message: console.append(message.text))
    open_paired(page, chat_server, token)
    html = "<h1 id=hello>Canvas hello</h1><script>parent.__canvasScript = 1</script>"
    render = ('{"canvas_id": "main", "content_type": "html", "content": "%s"}' % html.replace('"', '\\"'))
    send(page, f"[[think]] [[tool:render_canvas {render}]] draw it")
    wait_turn_end(page, 1, "done")
    turn = last_answer(page)
    thinking = turn.locator("details.thinking").first
    assert thinking.get_attribute("open") is None  # collapsed
    assert "Let me think" in thinking.locator(".thinking-text").text_content()
    card = turn.locator(".tool-card").first
    assert card.locator(".tool-name").inner_text() == "render_canvas"
    assert card.locator(".tool-result").is_visible()

    assert page.locator("#canvas-panel").is_visible()
    frame = page.locator("#canvas-view iframe")
    assert frame.get_attribute("sandbox") == ""
    assert page.frame_locator("#canvas-view iframe").locator("#hello").inner_text() == "Canvas hello"
    assert page.evaluate("window.__canvasScript") is None
    assert any("Blocked script execution in 'about:srcdoc'" in text for text in console)
    screenshot(page, "chat-canvas")

    markdown = '{"canvas_id": "notes", "content_type": "markdown", "content": "# Notes\\n\\n<img src=x onerror=\\"window.__xss=1\\">"}'
    send(page, f"[[tool:render_canvas {markdown}]] notes")
    wait_turn_end(page, 2, "done")
    assert page.locator("#canvas-view .canvas-md h1").inner_text() == "Notes"
    assert page.locator("#canvas-view [onerror]").count() == 0
    assert page.locator("#canvas-select option").all_inner_texts() == ["main", "notes"]

    send(page, '[[tool:clear_canvas {"canvas_id": "notes"}]] clear')
    wait_turn_end(page, 3, "done")
    assert page.locator("#canvas-view iframe").count() == 1  # back to "main"
    send(page, '[[tool:clear_canvas {"canvas_id": "main"}]] clear')
    wait_turn_end(page, 4, "done")
    assert page.locator("#canvas-view iframe").count() == 0

    status, _ = api(chat_server, token, "POST", "/api/channel-events/", {"type": "deploy", "note": "from ops"})
    assert status == 202
    page.click("#toggle-events")
    page.locator("#event-list .event[data-type=deploy]").wait_for()
    assert "from ops" in page.locator("#event-list").inner_text()

    # A slow tool reports what it waits for: the status line, gone once the turn ends.
    send(page, '[[tool:shell {"command": "sleep 1.5"}]] wait')
    page.locator("#status-line").wait_for(state="visible")
    assert "running: sleep" in page.locator("#status-line").inner_text()
    wait_turn_end(page, 5, "done")
    assert page.locator("#status-line").is_hidden()

    send(page, "[[fail=400]] broken")
    wait_turn_end(page, 6, "error")
    page.locator("#banner").wait_for(state="visible")
    assert page.locator("#banner-code").text_content() == "PROVIDER_ERROR"


def test_page_context_is_sent_with_the_message(chat_server, token, page):
    frames = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(payload)))
    open_paired(page, chat_server, token)
    page.select_option("#page-context", "agent_teams")
    send(page, "which page?")
    wait_turn_end(page, 1, "done")
    sent = [json.loads(f) for f in frames if isinstance(f, str)]
    messages = [f for f in sent if f.get("type") == "message"]
    assert messages[-1]["page_context"] == "agent_teams"
    assert messages[-1]["content"] == "which page?" and messages[-1]["client_id"]


def test_admin_shows_the_conversation(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, "Admin should see this")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)

    username, password = f"op{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", username,
         "--email", f"{username}@example.com"],
        cwd=REPO_ROOT, env=server_env({**chat_server.env, "DJANGO_SUPERUSER_PASSWORD": password}),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )
    page.goto(chat_server.url + "/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.goto(chat_server.url + "/admin/sessions_app/chatsession/")
    page.get_by_role("link", name="Admin should see this").first.click()
    page.wait_for_load_state()
    assert session_id in page.content()
    body = page.locator("body").inner_text()
    assert "Admin should see this" in body
    assert "Echo: Admin should see this" in body
    inline = page.locator(".inline-group").inner_text()
    assert inline.index("User") < inline.index("Echo: Admin should see this")
    screenshot(page, "admin-session", full_page=True)



def test_a_second_tab_joins_a_running_turn_and_sees_the_other_tabs_questions(chat_server, token, page, context):
    open_paired(page, chat_server, token)
    send(page, "[[chunks=40]] [[delay_ms=50]] shared")
    wait_for(lambda: len(answer_text(page)) >= 5)
    session_id = session_id_of(page)

    # Opened mid-turn: the question from the history, the answer replayed from its start.
    other = context.new_page()
    other.goto(f"{chat_server.url}/?session={session_id}")
    wait_online(other)
    assert other.locator("article.msg.user").count() == 1
    wait_turn_end(other, 1, "done")
    wait_turn_end(page, 1, "done")
    assert answer_text(other) == TOKENS(40) == answer_text(page)

    # A question asked in one tab shows in the other, with its answer.
    send(other, "asked in the second tab")
    wait_turn_end(page, 2, "done")
    page.locator("article.msg.user", has_text="asked in the second tab").wait_for()
    assert page.locator("article.msg.user").count() == 2
    assert "Echo: asked in the second tab" in last_answer(page).inner_text()
