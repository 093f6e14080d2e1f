"""Edit, regenerate and branches over the wire: real daphne, real WebSocket clients, the mock
provider process, whose request log shows what the model was sent.
"""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from tests.e2e.test_attachments_e2e import MockLog
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url
from tests.e2e.test_isolation import create_user, http, sign_in


@pytest.fixture
def branching(gateway, mock_llm_process):
    server, token = gateway
    return server, token, MockLog(mock_llm_process)


async def send(ws, **frame):
    await ws.send(json.dumps(frame))


async def next_of(ws, kind, timeout=20):
    """The next frame of type `kind` (others skipped)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame["type"] == kind:
            return frame


async def ask(ws, content):
    await send(ws, type="message", content=content)
    frames = await frames_until(ws)
    assert frames[-1]["type"] == "done", frames
    return frames


def messages(server, token, session_id, branch=""):
    query = f"?branch={branch}" if branch else ""
    status, body = http(server, "GET", f"/api/sessions/{session_id}/messages/{query}", token)
    assert status == 200, body
    return body["messages"]


def texts(rows):
    return [(m["role"], m["content"]) for m in rows]


def sent_texts(request) -> str:
    return json.dumps(request["messages"])


async def test_regenerate_gives_two_sibling_answers_and_the_model_never_sees_the_first(branching):
    server, token, mock = branching
    async with connect(ws_url(server, "regen", token=token)) as ws:
        await session_start(ws)
        await ask(ws, "name a colour [[chunks=3]]")
        first = messages(server, token, "regen")
        assert texts(first) == [("user", "name a colour [[chunks=3]]"), ("assistant", "tok1 tok2 tok3 ")]

        mock.clear()
        await send(ws, type="regenerate", client_id="r-1")
        assert await next_of(ws, "ack") == {"type": "ack", "client_id": "r-1", "duplicate": False}
        frames = await frames_until(ws)
        # The new active branch ends at the question, before the turn's first event.
        assert frames[0]["type"] == "history"
        assert [m["id"] for m in frames[0]["messages"]] == [first[0]["id"]]
        assert frames[0]["leaf_id"] == first[0]["id"]
        assert frames[-1]["type"] == "done"
        assert all(frame.get("turn_id") for frame in frames[1:])

    request = mock.last()
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["system", "user"]  # the first answer is not in the model's context
    assert "tok1" not in sent_texts(request)

    active = messages(server, token, "regen")
    everything = messages(server, token, "regen", "all")
    assert len(active) == 2 and len(everything) == 3
    question, old, new = everything
    assert old["parent_id"] == new["parent_id"] == question["id"]
    assert old["sibling_ids"] == new["sibling_ids"] == [old["id"], new["id"]]
    assert active[-1]["id"] == new["id"] and active[-1]["sibling_ids"] == [old["id"], new["id"]]
    assert question["sibling_ids"] == [question["id"]] and question["parent_id"] is None

    # The same client_id again is acknowledged, not run again.
    async with connect(ws_url(server, "regen", token=token)) as ws:
        start = await session_start(ws)
        assert start["message_count"] == 2
        await send(ws, type="regenerate", client_id="r-1")
        assert await next_of(ws, "ack") == {"type": "ack", "client_id": "r-1", "duplicate": True}
    assert len(messages(server, token, "regen", "all")) == 3


async def test_edit_makes_a_branch_whose_request_holds_the_new_text_only(branching):
    server, token, mock = branching
    async with connect(ws_url(server, "edit", token=token)) as ws:
        await session_start(ws)
        await ask(ws, "alpha question")
        await ask(ws, "beta question")
        before = messages(server, token, "edit")
        beta = before[2]
        assert beta["content"] == "beta question"

        mock.clear()
        await send(ws, type="edit", message_id=beta["id"], content="gamma question")
        frames = await frames_until(ws)
        history = frames[0]
        assert history["type"] == "history"
        assert texts(history["messages"]) == [
            ("user", "alpha question"), ("assistant", "Echo: alpha question"), ("user", "gamma question"),
        ]
        gamma = history["messages"][-1]
        assert gamma["parent_id"] == beta["parent_id"]
        assert gamma["sibling_ids"] == [beta["id"], gamma["id"]]
        assert history["leaf_id"] == gamma["id"]
        assert frames[-1]["type"] == "done" and frames[-1]["full_response"] == "Echo: gamma question"

    sent = sent_texts(mock.last())
    assert "gamma question" in sent and "alpha question" in sent
    assert "beta" not in sent

    active = messages(server, token, "edit")
    assert texts(active) == [
        ("user", "alpha question"), ("assistant", "Echo: alpha question"),
        ("user", "gamma question"), ("assistant", "Echo: gamma question"),
    ]
    assert len(messages(server, token, "edit", "all")) == 6

    # A plain message continues the edited branch.
    async with connect(ws_url(server, "edit", token=token)) as ws:
        assert (await session_start(ws))["message_count"] == 4
        mock.clear()
        await ask(ws, "delta question")
    sent = sent_texts(mock.last())
    assert "gamma question" in sent and "beta" not in sent
    assert [m["content"] for m in messages(server, token, "edit")][-2:] == [
        "delta question", "Echo: delta question"]


async def test_switching_back_and_forth_redraws_every_socket(branching):
    server, token, _mock = branching
    async with connect(ws_url(server, "switch", token=token)) as one, \
            connect(ws_url(server, "switch", token=token)) as two:
        await session_start(one)
        await session_start(two)
        await ask(one, "first try")
        await frames_until(two)
        original = messages(server, token, "switch")
        await send(one, type="edit", message_id=original[0]["id"], content="second try")
        await frames_until(one)
        await frames_until(two)
        edited = messages(server, token, "switch")
        assert texts(edited) == [("user", "second try"), ("assistant", "Echo: second try")]

        # Back to the first version (by its question: the newest leaf under it is its answer).
        await send(one, type="switch_branch", message_id=original[0]["id"])
        for ws in (one, two):
            frame = await next_of(ws, "history")
            assert frame["leaf_id"] == original[1]["id"]
            assert texts(frame["messages"]) == [("user", "first try"), ("assistant", "Echo: first try")]
            assert frame["messages"][0]["sibling_ids"] == [original[0]["id"], edited[0]["id"]]
        assert texts(messages(server, token, "switch")) == texts(original)

        # And forward again, through REST this time: both sockets hear it too.
        status, body = http(server, "PUT", "/api/sessions/switch/active/", token,
                            {"message_id": edited[0]["id"]})
        assert status == 200, body
        assert body == {"session_id": "switch", "leaf_id": edited[1]["id"], "message_count": 2}
        for ws in (one, two):
            frame = await next_of(ws, "history")
            assert frame["leaf_id"] == edited[1]["id"]
            assert [m["content"] for m in frame["messages"]] == ["second try", "Echo: second try"]
        assert texts(messages(server, token, "switch")) == texts(edited)

    status, listed = http(server, "GET", "/api/sessions/switch/", token)
    assert status == 200 and listed["message_count"] == 2
    async with connect(ws_url(server, "switch", token=token)) as ws:
        assert (await session_start(ws))["message_count"] == 2


async def test_refusals_have_their_codes(branching):
    server, token, _mock = branching
    async with connect(ws_url(server, "codes", token=token)) as ws:
        await session_start(ws)
        await send(ws, type="regenerate")
        assert (await next_of(ws, "error"))["code"] == "EMPTY_CONTENT"
        await ask(ws, "hello there")
        rows = messages(server, token, "codes")

        async with connect(ws_url(server, "other", token=token)) as other:
            await session_start(other)
            await ask(other, "elsewhere")
        foreign = messages(server, token, "other")[0]["id"]

        for frame in ({"type": "switch_branch", "message_id": 999_999_999},
                      {"type": "switch_branch", "message_id": foreign},
                      {"type": "edit", "message_id": foreign, "content": "x"},
                      {"type": "edit", "message_id": 999_999_999, "content": "x"}):
            await send(ws, **frame)
            assert (await next_of(ws, "error"))["code"] == "MESSAGE_NOT_FOUND", frame
        await send(ws, type="edit", message_id=rows[1]["id"], content="an answer is not a question")
        assert (await next_of(ws, "error"))["code"] == "BAD_FRAME"
        for bad in (True, "1", 1.0, -1, 0, 2**70, None, [rows[0]["id"]]):
            await send(ws, type="switch_branch", message_id=bad)
            assert (await next_of(ws, "error"))["code"] == "BAD_FRAME", bad
            await send(ws, type="edit", message_id=bad, content="x")
            assert (await next_of(ws, "error"))["code"] == "BAD_FRAME", bad
        await send(ws, type="edit", message_id=rows[0]["id"], content="   ")
        assert (await next_of(ws, "error"))["code"] == "EMPTY_CONTENT"

        # While a turn runs: switch_branch is refused at once, here and through REST.
        await send(ws, type="message", content="slow [[chunks=40]] [[delay_ms=100]]")
        await next_of(ws, "chunk")
        await send(ws, type="switch_branch", message_id=rows[0]["id"])
        assert (await next_of(ws, "error"))["code"] == "SESSION_BUSY"
        status, body = http(server, "PUT", "/api/sessions/codes/active/", token,
                            {"message_id": rows[0]["id"]})
        assert (status, body["code"]) == (409, "SESSION_BUSY")
        # A regenerate waits for the turn, then answers the newest question again.
        await send(ws, type="regenerate")
        await next_of(ws, "done")
        history = await next_of(ws, "history")
        assert history["messages"][-1]["content"] == "slow [[chunks=40]] [[delay_ms=100]]"
        assert (await next_of(ws, "done"))["full_response"].startswith("tok1 ")
    assert texts(messages(server, token, "codes"))[:2] == [("user", "hello there"),
                                                           ("assistant", "Echo: hello there")]
    assert len(messages(server, token, "codes", "all")) == 5


async def test_the_active_branch_endpoint_is_the_callers_own(branching):
    server, token, _mock = branching
    create_user(server, "bob", "bob-password-1234")
    bob = sign_in(server, "bob", "bob-password-1234")
    async with connect(ws_url(server, "mine", token=token)) as ws:
        await session_start(ws)
        await ask(ws, "only mine")
    first = messages(server, token, "mine")[0]["id"]

    assert http(server, "PUT", "/api/sessions/mine/active/", bob, {"message_id": first})[0] == 404
    assert http(server, "GET", "/api/sessions/mine/messages/?branch=all", bob)[0] == 404
    assert http(server, "PUT", "/api/sessions/nowhere/active/", token, {"message_id": first})[0] == 404
    status, body = http(server, "PUT", "/api/sessions/mine/active/", token, {"message_id": 999_999_999})
    assert (status, body["code"]) == (404, "MESSAGE_NOT_FOUND")
    for bad in ({}, {"message_id": "x"}, {"message_id": True}, {"message_id": 0}, {"message_id": 2**70}):
        assert http(server, "PUT", "/api/sessions/mine/active/", token, bad)[0] == 400, bad
    assert http(server, "GET", "/api/sessions/mine/messages/?branch=some", token)[0] == 400
    status, body = http(server, "PUT", "/api/sessions/mine/active/", token, {"message_id": first})
    assert status == 200 and body["message_count"] == 2


async def test_a_stopped_edit_keeps_its_part_on_its_branch_and_an_edit_carries_files(branching):
    server, token, mock = branching
    from tests.e2e.test_attachments_e2e import uploaded

    async with connect(ws_url(server, "stopfiles", token=token)) as ws:
        await session_start(ws)
        await ask(ws, "long one [[chunks=3]]")
        first = messages(server, token, "stopfiles")
        mock.clear()
        await send(ws, type="edit", message_id=first[0]["id"],
                   content="long one [[chunks=60]] [[delay_ms=50]]")
        await next_of(ws, "history")
        await next_of(ws, "chunk")
        await next_of(ws, "chunk")
        await send(ws, type="stop")
        stopped = await next_of(ws, "stopped")
        assert stopped["full_response"].startswith("tok1 ")
        active = messages(server, token, "stopfiles")
        assert [m["role"] for m in active] == ["user", "assistant"]
        assert active[1]["data"].get("stopped") and active[1]["content"].startswith("tok1 ")
        assert active[0]["sibling_ids"] == [first[0]["id"], active[0]["id"]]

        note = uploaded(server, token, "stopfiles", "note.txt", b"the attached words\n")
        mock.clear()
        await send(ws, type="edit", message_id=active[0]["id"], content="read the note",
                   attachments=[note["id"]])
        history = await next_of(ws, "history")
        assert history["messages"][-1]["data"]["attachments"][0]["id"] == note["id"]
        done = await next_of(ws, "done")
        assert "the attached words" in done["full_response"] and done["full_response"].endswith("read the note")
    sent = sent_texts(mock.last())
    assert "the attached words" in sent and "tok1" not in sent
    assert len(messages(server, token, "stopfiles", "all")) == 6


async def test_a_turn_waiting_for_approval_keeps_its_branch(tmp_path, mock_llm_process):
    from tests.e2e.test_approvals_e2e import approving_server, write

    with approving_server(tmp_path, mock_llm_process) as server:
        token, mock = server.token, MockLog(mock_llm_process)
        async with connect(ws_url(server, "appr", token=token)) as ws:
            await session_start(ws)
            await ask(ws, "plain first")
            await send(ws, type="message", content="save it " + write("notes/x.txt", "hi"))
            request = await next_of(ws, "approval_request")
            # The turn holds its branch while it waits: no switch away from under it.
            first = messages(server, token, "appr")[0]["id"]
            await send(ws, type="switch_branch", message_id=first)
            assert (await next_of(ws, "error"))["code"] == "SESSION_BUSY"
            await send(ws, type="approval", approval_id=request["approval_id"], decision="approve")
            await next_of(ws, "done")
            active = messages(server, token, "appr")
            assert [m["role"] for m in active] == ["user", "assistant", "user", "assistant", "tool",
                                                   "assistant"]
            assert all(m["parent_id"] == p["id"] for p, m in zip(active, active[1:]))

            # Regenerate: the tool call and its result stay on the old branch.
            mock.clear()
            await send(ws, type="regenerate")
            await next_of(ws, "approval_request")  # the model asks again on the new branch
            await send(ws, type="stop")
            await next_of(ws, "stopped")
        sent = mock.last()["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        everything = messages(server, token, "appr", "all")
        calls = [m for m in everything if m["data"].get("tool_calls")]
        assert len(calls) == 2 and calls[0]["sibling_ids"] == [calls[0]["id"], calls[1]["id"]]
        active = messages(server, token, "appr")
        assert active[-1]["role"] == "tool" and active[-1]["data"].get("denied")
        assert active[-2]["id"] == calls[1]["id"]
