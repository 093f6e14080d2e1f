"""The chat page's approval cards: tool calls that wait for a person (issue 12).

Against a real daphne whose `CONSTRUCT_TOOL_APPROVAL` makes the shell tool ask,
with the mock LLM scripted to call it: the card (tool, JSON arguments, countdown),
Approve, Deny, edited arguments, Always allow, a second tab that sees the card and
the decision, the sidebar's mark on a session with an approval waiting, and the
card drawn again after a reload. One test drives the card alone over a mocked
socket, for what the server cannot be made to do on cue (a refused answer, a
timeout, a model-chosen tool name full of markup).
"""

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.browser.helpers import (
    api,
    last_answer,
    open_paired,
    screenshot,
    send,
    session_id_of,
    wait_for,
    wait_online,
    wait_turn_end,
)
from tests.browser.conftest import PageErrors, browser_server
from tests.e2e.conftest import gateway_env, pair

CARD = ".tool-card.approval-card"
COUNTDOWN = re.compile(r"^\d+:\d\d left$")


@pytest.fixture(scope="module")
def approval_server(tmp_path_factory, mock_llm_process):
    """A real daphne where the shell tool asks a person first, and every other tool runs."""
    env = gateway_env(mock_llm_process, CONSTRUCT_TOOL_APPROVAL="shell=ask,*=auto",
                      CONSTRUCT_APPROVAL_TIMEOUT="90")
    with browser_server(tmp_path_factory, "approvals", env) as server:
        yield server


@pytest.fixture
def token(approval_server):
    return pair(approval_server)


def shell(command):
    """A message that makes the mock model call the shell tool with this command."""
    return '[[tool:shell {"command": "%s"}]] run it' % command


def card_of(page):
    return page.locator(CARD).last


def wait_card(page, state="pending"):
    card = card_of(page)
    card.locator(f'.approval[data-approval-state="{state}"]').wait_for()
    return card


def textarea_args(card):
    return json.loads(card.locator("textarea.approval-args").input_value())


def approval_frames(frames):
    return [f for f in (json.loads(p) for p in frames if isinstance(p, str)) if f.get("type") == "approval"]


def record_sent(page):
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    return sent


def tool_output(card):
    return card.locator(".tool-output").text_content().strip()


def test_approve_runs_the_tool_and_a_second_tab_sees_it_all(approval_server, token, context, page):
    sent = record_sent(page)
    open_paired(page, approval_server, token)
    send(page, shell("echo approved-run"))
    card = wait_card(page)
    session_id = session_id_of(page)

    # The card: which tool, its arguments as JSON to edit, the buttons, a countdown.
    assert card.locator(".tool-name").inner_text() == "shell"
    assert card.locator(".tool-state").inner_text() == "waiting for approval"
    assert textarea_args(card) == {"command": "echo approved-run"}
    assert COUNTDOWN.match(card.locator(".approval-countdown").inner_text())
    for name in ("Approve shell", "Deny shell", "Always allow shell in this session"):
        assert card.get_by_role("button", name=name).is_enabled()
    assert last_answer(page).get_attribute("data-end") is None  # the turn waits
    assert page.locator("#stop").is_visible()
    first = card.locator(".approval-countdown").inner_text()
    wait_for(lambda: card.locator(".approval-countdown").inner_text() != first, timeout=3)  # it counts down

    # The sidebar marks the session while its approval waits.
    mark = page.locator(f'.session-item[data-session-id="{session_id}"] .badge.approval-pending')
    mark.wait_for()
    assert mark.inner_text().startswith("1 to approve")
    assert mark.get_attribute("title").startswith("1 approval waiting")
    status, pending = api(approval_server, token, "GET", "/api/approvals/?state=pending")
    assert status == 200 and [p["session_id"] for p in pending["results"]] == [session_id]
    screenshot(page, "approval-card")

    # A second tab of the same session, opened while it waits, sees the same card.
    other = context.new_page()
    other.errors = PageErrors(other)
    other.goto(f"{approval_server.url}/?session={session_id}")
    wait_online(other)
    other_card = wait_card(other)
    assert other_card.locator(".tool-name").inner_text() == "shell"
    assert textarea_args(other_card) == {"command": "echo approved-run"}
    assert COUNTDOWN.match(other_card.locator(".approval-countdown").inner_text())

    # Approve in the first tab: the buttons go at once, the tool runs, the answer completes.
    card.get_by_role("button", name="Approve shell").click()
    assert card.locator("button.approve").is_disabled() or card.locator(".approval-editor").is_hidden()
    wait_card(page, "approve")
    wait_turn_end(page, 1, "done")
    assert "Approved by " in card.locator(".approval-status").inner_text()
    assert tool_output(card) == "approved-run"
    assert card.locator(".tool-state").inner_text() == "done"
    assert "Tool said: approved-run" in last_answer(page).inner_text()
    frames = approval_frames(sent)
    assert len(frames) == 1 and frames[0]["decision"] == "approve" and "args" not in frames[0]

    # The second tab saw the decision made in the first one, and the rest of the turn.
    wait_card(other, "approve")
    assert "Approved by " in other_card.locator(".approval-status").inner_text()
    assert other_card.locator(".approval-editor").is_hidden()
    wait_turn_end(other, 1, "done")
    assert tool_output(other_card) == "approved-run"
    assert other.errors.errors == []

    # Nothing waits any more: the mark goes.
    mark.wait_for(state="detached", timeout=20_000)

    # A reload draws the finished turn from history: the tool's card, its result, who approved.
    other.reload()
    wait_online(other)
    wait_turn_end(other, 1)
    reloaded = other.locator(".tool-card").last
    assert reloaded.locator(".tool-name").inner_text() == "shell"
    assert tool_output(reloaded) == "approved-run"
    reloaded.locator('.approval[data-approval-state="approve"]').wait_for()
    assert "Approved by " in reloaded.locator(".approval-status").inner_text()
    assert reloaded.locator(".approval-editor").is_hidden()
    assert reloaded.locator(".tool-state").inner_text() == "done"
    assert other.errors.errors == []
    other.close()


def test_deny_from_a_second_tab_and_the_turn_goes_on(approval_server, token, context, page):
    open_paired(page, approval_server, token)
    send(page, shell("echo never-run"))
    card = wait_card(page)
    session_id = session_id_of(page)

    other = context.new_page()
    other.errors = PageErrors(other)
    other.goto(f"{approval_server.url}/?session={session_id}")
    wait_online(other)
    other_card = wait_card(other)
    # Keyboard only: focus Deny and press Enter.
    other_card.get_by_role("button", name="Deny shell").focus()
    other.keyboard.press("Enter")
    wait_card(other, "deny")

    # The first tab sees the decision made in the second one; the model goes on.
    wait_card(page, "deny")
    assert "Denied by " in card.locator(".approval-status").inner_text()
    assert card.locator(".approval-editor").is_hidden()
    wait_turn_end(page, 1, "done")
    assert card.locator(".tool-state").inner_text() == "denied"
    assert "denied" in tool_output(card).lower()
    assert "never-run" not in tool_output(card).replace("echo never-run", "")
    assert card.evaluate("e => e.classList.contains('error')")
    assert "Tool said:" in last_answer(page).inner_text()
    wait_turn_end(other, 1, "done")
    assert other.errors.errors == []
    other.close()

    # After a reload, the history says the same.
    page.reload()
    wait_online(page)
    wait_turn_end(page, 1)
    card = page.locator(".tool-card").last
    card.locator('.approval[data-approval-state="deny"]').wait_for()
    assert "Denied by " in card.locator(".approval-status").inner_text()
    assert card.locator(".tool-state").inner_text() == "denied"


def test_edited_arguments_are_what_runs_and_always_allow(approval_server, token, page):
    sent = record_sent(page)
    open_paired(page, approval_server, token)
    send(page, shell("echo original"))
    card = wait_card(page)
    box = card.locator("textarea.approval-args")

    # Not JSON: an error on the card, nothing sent, the card still waits.
    box.fill('{"command": "echo edited"')
    card.get_by_role("button", name="Approve shell").click()
    error = card.locator(".approval-error")
    error.wait_for()
    assert "Not valid JSON" in error.inner_text()
    assert box.get_attribute("aria-invalid") == "true"
    box.fill('["echo", "edited"]')
    card.get_by_role("button", name="Always allow shell in this session").click()
    assert "must be a JSON object" in error.inner_text()
    page.wait_for_timeout(300)
    assert approval_frames(sent) == []
    assert card.locator('.approval[data-approval-state="pending"]').count() == 1

    # Fixed, then approved from the keyboard (Ctrl+Enter in the box): the edit is what runs.
    box.fill('{"command": "echo edited"}')
    assert error.is_hidden()
    box.press("Control+Enter")
    wait_card(page, "approve")
    wait_turn_end(page, 1, "done")
    assert tool_output(card) == "edited"
    assert "Tool said: edited" in last_answer(page).inner_text()
    assert "with edited arguments" in card.locator(".approval-status").inner_text()
    assert "edited" in card.locator(".tool-args summary").inner_text()
    assert json.loads(card.locator(".tool-args pre").text_content()) == {"command": "echo edited"}
    frames = approval_frames(sent)
    assert [(f["decision"], f.get("args")) for f in frames] == [("approve", {"command": "echo edited"})]

    # Always allow: approved now, and the next shell call of the session asks no one.
    send(page, shell("echo first"))
    card = wait_card(page)
    card.get_by_role("button", name="Always allow shell in this session").click()
    wait_card(page, "always")
    wait_turn_end(page, 2, "done")
    assert "Always allowed by " in card.locator(".approval-status").inner_text()
    assert tool_output(card) == "first"

    send(page, shell("echo second"))
    wait_turn_end(page, 3, "done")
    turn = last_answer(page)
    assert turn.locator(".approval").count() == 0
    assert tool_output(turn.locator(".tool-card")) == "second"
    assert len(approval_frames(sent)) == 2

    # After a reload the history shows the edit that ran, and who allowed what.
    page.reload()
    wait_online(page)
    wait_turn_end(page, 3)
    cards = page.locator(".tool-card")
    cards.nth(1).locator('.approval[data-approval-state="always"]').wait_for()
    edited = cards.nth(0)
    assert edited.locator(".approval").get_attribute("data-approval-state") == "approve"
    assert "with edited arguments" in edited.locator(".approval-status").inner_text()
    assert json.loads(edited.locator(".tool-args pre").text_content()) == {"command": "echo edited"}
    assert tool_output(edited) == "edited"
    assert cards.nth(2).locator(".approval").count() == 0
    screenshot(page, "approval-history")


def test_an_answer_the_server_refuses_stays_on_its_card(approval_server, token, page):
    open_paired(page, approval_server, token)
    send(page, shell("echo still-usable"))
    card = wait_card(page)
    approval_id = card.locator(".approval").get_attribute("data-approval-id")
    assert approval_id
    # An answer for an id the server does not know: APPROVAL_INVALID, no fatal banner,
    # the socket stays usable and the real card still works.
    page.evaluate(
        "id => window.__construct.socket.send(JSON.stringify({type: 'approval', approval_id: id, decision: 'approve'}))",
        "not-an-approval",
    )
    page.wait_for_timeout(500)
    # No card is about that id: at most a warning, and the turn still waits.
    assert page.locator("#banner").is_hidden() or page.locator("#banner").get_attribute("data-kind") == "warning"
    assert last_answer(page).get_attribute("data-end") is None
    assert page.locator("#conn[data-state=online]").count() == 1
    card.get_by_role("button", name="Approve shell").click()
    wait_turn_end(page, 1, "done")
    assert tool_output(card) == "still-usable"
    # Answering the decided one again: refused, the card keeps its result.
    page.evaluate(
        "id => window.__construct.socket.send(JSON.stringify({type: 'approval', approval_id: id, decision: 'deny'}))",
        approval_id,
    )
    page.wait_for_timeout(500)
    assert card.locator(".approval").get_attribute("data-approval-state") == "approve"
    assert "Approved by " in card.locator(".approval-status").inner_text()
    send(page, "still here?")
    wait_turn_end(page, 2, "done")
    assert "Echo: still here?" in last_answer(page).inner_text()


# --- The card alone, over a mocked socket -------------------------------------------------


class FakeSocket:
    """Stands in for the chat socket: the test pushes frames, the page's are kept."""

    def __init__(self, page):
        self.ws = None
        self.received = []
        self.connections = 0
        self.start = True  # answer a new socket with session_start (False: it never becomes ready)
        page.route_web_socket(re.compile(r"/ws/chat"), self._connect)

    def _connect(self, ws):
        self.ws = ws
        self.connections += 1
        ws.on_message(lambda message: self.received.append(json.loads(message)))
        if self.start:
            self.push(type="session_start", session_id="fake", resumed=False, message_count=0, state="idle")

    def push(self, **frame):
        self.ws.send(json.dumps(frame))

    def approvals(self):
        return [f for f in self.received if f.get("type") == "approval"]


def iso_in(seconds):
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def test_the_card_alone_markup_errors_timeout_and_stop(approval_server, token, page):
    fake = FakeSocket(page)
    open_paired(page, approval_server, token)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.evaluate("window.__xss = 0")

    # A tool name and arguments full of markup are text, nothing more.
    name = "shell<img src=x onerror=window.__xss=1>"
    args = {"command": "echo </textarea><script>window.__xss=2</script><b onclick=alert(1)>x</b>"}
    fake.push(type="tool_call", turn_id="t1", seq=1, id="c1", name=name, args=args)
    fake.push(type="approval_request", turn_id="t1", seq=2, approval_id="a1", tool_call_id="c1",
              name=name, args=args, expires_at=iso_in(95))
    card = wait_card(page)
    assert page.locator(".tool-card").count() == 1  # in the place of the tool call, not beside it
    assert card.locator(".tool-name").inner_text() == name
    assert textarea_args(card) == args
    assert re.match(r"^1:3\d left$", card.locator(".approval-countdown").inner_text())
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    assert page.evaluate("window.__xss") == 0 and dialogs == []
    assert card.get_by_role("group").count() == 1
    assert "Waiting for your approval" in page.locator("#status-line").inner_text()
    screenshot(page, "approval-card-mocked")

    # Approve with an edit: sent once with the new arguments, the buttons off meanwhile.
    card.locator("textarea").fill('{"command": "echo ok"}')
    card.get_by_role("button", name=f"Approve {name}").click()
    wait_for(lambda: fake.approvals(), page=page)
    assert fake.approvals() == [{"type": "approval", "approval_id": "a1", "decision": "approve",
                                 "args": {"command": "echo ok"}}]
    assert all(card.locator(f"button.{d}").is_disabled() for d in ("approve", "deny", "always"))
    card.locator("button.deny").click(force=True)
    assert len(fake.approvals()) == 1

    # Refused: the reason on the card (not a banner), the buttons back, the turn goes on.
    fake.push(type="error", code="APPROVAL_INVALID", approval_id="a1", message="That approval has expired.")
    card.locator(".approval-error").wait_for()
    assert "APPROVAL_INVALID" in card.locator(".approval-error").inner_text()
    assert "expired" in card.locator(".approval-error").inner_text()
    assert page.locator("#banner").is_hidden()
    assert card.locator("button.approve").is_enabled()
    assert last_answer(page).get_attribute("data-end") is None

    # Decided elsewhere (another device): shown here, no buttons left.
    fake.push(type="approval_result", turn_id="t1", seq=3, approval_id="a1", decision="deny", by="Phone <b>x</b>")
    wait_card(page, "deny")
    assert card.locator(".approval-status").inner_text() == "Denied by Phone <b>x</b>."
    assert card.locator(".approval-editor").is_hidden()
    assert card.locator(".approval-error").is_hidden()
    fake.push(type="tool_result", turn_id="t1", seq=4, id="c1", name=name, output="Denied by a person", is_error=True)
    card.locator(".tool-state[data-state=denied]").wait_for()

    # A second request (no tool_call before it) that times out.
    fake.push(type="approval_request", turn_id="t1", seq=5, approval_id="a2", tool_call_id="c2",
              name="file_write", args='{"path": "a.txt", "content": "hi"}', expires_at=iso_in(2))
    second = wait_card(page)
    assert second.locator(".tool-name").inner_text() == "file_write"
    assert textarea_args(second) == {"path": "a.txt", "content": "hi"}
    second.locator(".approval-countdown", has_text="time is up").wait_for(timeout=5_000)
    fake.push(type="approval_result", turn_id="t1", seq=6, approval_id="a2", decision="timeout", by="timeout")
    wait_card(page, "timeout")
    assert second.locator(".approval-status").inner_text() == "Denied: nobody answered in time."
    screenshot(page, "approval-card-states")
    fake.push(type="done", turn_id="t1", seq=7, full_response="")
    wait_turn_end(page, 1, "done")

    # A third one, and the turn is stopped while it waits: no buttons left, nothing pending.
    fake.push(type="approval_request", turn_id="t2", seq=1, approval_id="a3", tool_call_id="c3",
              name="shell", args={"command": "ls"}, expires_at=iso_in(60))
    third = wait_card(page)
    fake.push(type="stopped", turn_id="t2", seq=2, full_response="")
    wait_turn_end(page, 2, "stopped")
    assert third.locator(".approval").get_attribute("data-approval-state") == "closed"
    assert third.locator(".approval-editor").is_hidden()
    assert "Not run" in third.locator(".approval-status").inner_text()
    time.sleep(0.1)
    assert len(fake.approvals()) == 1
    assert page.evaluate("window.__xss") == 0 and dialogs == []


def test_with_the_socket_down_the_answer_goes_through_rest(approval_server, token, page):
    fake = FakeSocket(page)
    answers = []

    def rest(route):
        answers.append((route.request.url, route.request.post_data_json))
        if len(answers) == 1:  # decided meanwhile elsewhere: refused, on the card
            route.fulfill(status=409, json={"error": "This approval was already decided",
                                            "code": "APPROVAL_INVALID", "approval_id": "r1"})
        else:
            route.fulfill(status=200, json={"id": "r1", "state": "decided", "decision": "deny"})

    page.route(re.compile(r"/api/approvals/r1/$"), rest)
    open_paired(page, approval_server, token)
    fake.push(type="approval_request", turn_id="t1", seq=1, approval_id="r1", tool_call_id="c1",
              name="shell", args={"command": "ls"}, expires_at=iso_in(60))
    card = wait_card(page)

    # The socket drops and its successor never starts: the page answers through REST.
    fake.start = False
    fake.ws.close()
    page.locator("#conn:not([data-state=online])").wait_for()
    card.locator("textarea").fill('{"command": "ls -la"}')
    card.get_by_role("button", name="Approve shell").click()
    card.locator(".approval-error").wait_for()
    assert "already decided" in card.locator(".approval-error").inner_text()
    assert card.locator("button.approve").is_enabled()
    assert answers[0][1] == {"decision": "approve", "args": {"command": "ls -la"}}
    assert page.locator("#banner").is_hidden()

    card.get_by_role("button", name="Deny shell").click()
    wait_for(lambda: len(answers) == 2, page=page)
    assert answers[1][1] == {"decision": "deny"}
    assert card.locator(".approval").get_attribute("data-approval-state") == "sending"
    assert card.locator(".approval-error").is_hidden()
    assert fake.approvals() == []
