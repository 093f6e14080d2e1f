"""Tool calls that wait for a person, over the wire: real daphne, real sockets, the mock LLM process.

The server asks before `file_write`, refuses `memory_store` by policy and runs
everything else. Runs on SQLite and, in the second pass, on PostgreSQL with Redis.
"""

import asyncio
import contextlib
import json

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import gateway_env, pair
from tests.e2e.test_chat_e2e import session_start, ws_url
from tests.e2e.test_isolation import create_user, http, pair_for
from tests.support.daphne import DaphneServer, migrated_database_url

RULES = "file_write=ask,memory_*=deny,*=auto"


def write(path, content):
    return f'[[tool:file_write {json.dumps({"path": path, "content": content})}]]'


@contextlib.contextmanager
def approving_server(tmp_path, mock, **extra):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    with migrated_database_url(tmp_path) as database_url:
        server = DaphneServer(
            env=gateway_env(mock, DATABASE_URL=database_url, CONSTRUCT_WORKSPACE=str(workspace),
                            CONSTRUCT_TOOL_APPROVAL=RULES, CONSTRUCT_SOCKET_RATE="off",
                            CONSTRUCT_MESSAGE_RATE="off", **extra),
            log_path=tmp_path / "daphne.log", run_migrate=False,
        )
        try:
            server.start()
            server.workspace = workspace
            server.token = pair(server)
            yield server
        finally:
            server.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory, mock_llm_process):
    with approving_server(tmp_path_factory.mktemp("approvals"), mock_llm_process,
                          CONSTRUCT_APPROVAL_TIMEOUT="60") as started:
        yield started


async def turn_until(ws, types=("done", "error", "stopped"), timeout=20):
    """The session's frames up to the first of `types`; operator events (agent_event) left out."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame["type"] == "agent_event":
            continue
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def answer(ws, request, decision, **extra):
    await ws.send(json.dumps({"type": "approval", "approval_id": request["approval_id"],
                              "decision": decision, **extra}))


def of_type(frames, kind):
    return [f for f in frames if f["type"] == kind]


async def open_ws(server, session_id, token=None):
    ws = await connect(ws_url(server, session_id, token=token or server.token))
    return ws, await session_start(ws)


async def test_approve_runs_the_tool_and_the_model_gets_its_result(server):
    ws, _ = await open_ws(server, "approve")
    await ws.send(json.dumps({"type": "message", "content": write("a.txt", "approved text")}))
    frames = await turn_until(ws, types=("approval_request",))
    call, request = frames[-2], frames[-1]
    assert call["type"] == "tool_call" and request["tool_call_id"] == call["id"]
    assert request["name"] == "file_write"
    assert request["args"] == {"path": "a.txt", "content": "approved text"}
    assert request["seq"] == call["seq"] + 1 and request["expires_at"].endswith("+00:00")
    assert not (server.workspace / "a.txt").exists()
    await answer(ws, request, "approve")
    frames = await turn_until(ws)
    assert [f["type"] for f in frames[:2]] == ["approval_result", "tool_result"]
    assert (frames[0]["approval_id"], frames[0]["decision"]) == (request["approval_id"], "approve")
    assert frames[0]["by"].startswith("device ")  # a device paired without a name
    assert frames[0]["turn_id"] == request["turn_id"] and frames[0]["seq"] == request["seq"] + 1
    assert frames[1]["is_error"] is False
    assert frames[-1]["type"] == "done"
    assert frames[-1]["full_response"] == "Tool said: Wrote 13 bytes to a.txt"
    assert (server.workspace / "a.txt").read_text() == "approved text"
    status, body = http(server, "GET", "/api/sessions/approve/messages/", server.token)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant"]
    await ws.close()


async def test_deny_edit_always_and_the_deny_policy(server):
    ws, _ = await open_ws(server, "answers")
    # Deny: not run; the model is told and goes on.
    await ws.send(json.dumps({"type": "message", "content": write("denied.txt", "no")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "deny")
    frames = await turn_until(ws)
    assert (frames[0]["type"], frames[0]["decision"]) == ("approval_result", "deny")
    result = of_type(frames, "tool_result")[0]
    assert result["is_error"] is True and result["output"].startswith("Denied")
    assert frames[-1]["type"] == "done" and frames[-1]["full_response"].startswith("Tool said: Denied")
    assert not (server.workspace / "denied.txt").exists()

    # Edited arguments are what runs.
    await ws.send(json.dumps({"type": "message", "content": write("edit.txt", "model's words")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "approve", args={"path": "edited.txt", "content": "person's words"})
    frames = await turn_until(ws)
    assert of_type(frames, "approval_result")[0]["args"] == {"path": "edited.txt",
                                                            "content": "person's words"}
    assert (server.workspace / "edited.txt").read_text() == "person's words"
    assert not (server.workspace / "edit.txt").exists()

    # Edited arguments are checked like the model's: a bad one is an error result.
    await ws.send(json.dumps({"type": "message", "content": write("bad.txt", "x")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "approve", args={"content": "no path"})
    result = of_type(await turn_until(ws), "tool_result")[0]
    assert result["is_error"] is True and "missing path" in result["output"]

    # Always: approved now, and never asked again for file_write in this session.
    await ws.send(json.dumps({"type": "message", "content": write("one.txt", "1")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "always")
    assert (await turn_until(ws))[-1]["type"] == "done"
    await ws.send(json.dumps({"type": "message",
                              "content": write("two.txt", "2") + " " + write("three.txt", "3")}))
    frames = await turn_until(ws)
    assert not of_type(frames, "approval_request") and frames[-1]["type"] == "done"
    assert (server.workspace / "three.txt").read_text() == "3"

    # The deny policy: never asked, never run.
    await ws.send(json.dumps({"type": "message",
                              "content": '[[tool:memory_store {"content": "remember me"}]]'}))
    frames = await turn_until(ws)
    assert not of_type(frames, "approval_request")
    result = of_type(frames, "tool_result")[0]
    assert result["is_error"] is True and "policy" in result["output"]
    status, notes = http(server, "GET", "/api/approvals/?session_id=answers", server.token)
    assert [a["name"] for a in notes["results"]] == ["file_write"] * 4
    await ws.close()

    # Another session asks again: "always" was for that session only.
    ws, _ = await open_ws(server, "answers-2")
    await ws.send(json.dumps({"type": "message", "content": write("four.txt", "4")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "deny")
    assert (await turn_until(ws))[-1]["type"] == "done"
    await ws.close()


async def test_invalid_answers_keep_the_socket(server):
    ws, _ = await open_ws(server, "invalid")
    bad_frames = [
        ({"approval_id": "ap_unknown", "decision": "approve"}, "ap_unknown"),
        ({"approval_id": "", "decision": "approve"}, None),
        ({"approval_id": ["x"], "decision": "deny"}, None),
        ({"approval_id": "ap_x", "decision": "yes"}, "ap_x"),
        ({"approval_id": "ap_x", "decision": "approve", "args": "rm -rf /"}, "ap_x"),
        ({"approval_id": "x" * 5000, "decision": "approve"}, None),
    ]
    for frame, approval_id in bad_frames:
        await ws.send(json.dumps({"type": "approval", **frame}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (error["type"], error["code"]) == ("error", "APPROVAL_INVALID"), error
        assert error.get("approval_id") == approval_id
    await ws.send(json.dumps({"type": "message", "content": write("i.txt", "i")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await answer(ws, request, "approve")
    await answer(ws, request, "deny")  # too late: the first answer won
    frames = await turn_until(ws, types=("done",))
    errors = of_type(frames, "error")
    assert len(errors) == 1 and errors[0]["code"] == "APPROVAL_INVALID"
    assert errors[0]["approval_id"] == request["approval_id"]
    assert "already decided" in errors[0]["message"]
    assert of_type(frames, "approval_result")[0]["decision"] == "approve"
    assert frames[-1]["type"] == "done"
    await ws.close()


async def test_answered_from_another_socket_a_late_one_and_rest(server):
    sender, _ = await open_ws(server, "shared")
    watcher, _ = await open_ws(server, "shared")
    await sender.send(json.dumps({"type": "message", "content": write("s.txt", "from two")}))
    request = (await turn_until(sender, types=("approval_request",)))[-1]
    assert (await turn_until(watcher, types=("approval_request",)))[-1] == request
    await answer(watcher, request, "approve")
    for ws in (sender, watcher):
        frames = await turn_until(ws)
        assert of_type(frames, "approval_result")[0]["decision"] == "approve"
        assert frames[-1]["type"] == "done"

    # A socket that connects while the approval waits: running, and the request in the replay.
    await sender.send(json.dumps({"type": "message", "content": write("r.txt", "by rest")}))
    request = (await turn_until(sender, types=("approval_request",)))[-1]
    late, start = await open_ws(server, "shared")
    assert start["state"] == "running" and start["turn_id"] == request["turn_id"]
    assert (await turn_until(late, types=("approval_request",)))[-1] == request
    status, pending = http(server, "GET", "/api/approvals/?state=pending", server.token)
    assert status == 200
    assert [a["id"] for a in pending["results"]] == [request["approval_id"]]
    assert set(pending["results"][0]) >= {"id", "session_id", "name", "args", "requested_at",
                                          "expires_at", "state"}
    status, body = http(server, "POST", f"/api/approvals/{request['approval_id']}/", server.token,
                        {"decision": "approve"})
    assert status == 200 and body["decision"] == "approve"
    for ws in (sender, watcher, late):
        frames = await turn_until(ws)
        result = of_type(frames, "approval_result")[0]
        assert (result["decision"], result["by"]) == ("approve", body["by"])
        assert frames[-1]["type"] == "done"
    assert (server.workspace / "r.txt").read_text() == "by rest"
    status, body = http(server, "POST", f"/api/approvals/{request['approval_id']}/", server.token,
                        {"decision": "deny"})
    assert status == 409 and body["code"] == "APPROVAL_INVALID"
    for ws in (sender, watcher, late):
        await ws.close()


async def test_stop_while_waiting_denies_and_stops(server):
    ws, _ = await open_ws(server, "stopping")
    await ws.send(json.dumps({"type": "message", "content": write("stop.txt", "never")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    await ws.send(json.dumps({"type": "stop"}))
    frames = await turn_until(ws)
    assert [f["type"] for f in frames] == ["approval_result", "tool_result", "stopped"]
    assert frames[0]["decision"] == "deny" and frames[0]["approval_id"] == request["approval_id"]
    assert frames[1]["is_error"] is True
    assert not (server.workspace / "stop.txt").exists()
    status, body = http(server, "GET", "/api/sessions/stopping/", server.token)
    assert body["state"] == "idle"
    await ws.send(json.dumps({"type": "message", "content": "and now?"}))
    assert (await turn_until(ws))[-1]["type"] == "done"
    await ws.close()


async def test_another_users_approvals_are_not_theirs(server):
    create_user(server, "mallory")
    other = pair_for(server, "mallory")
    ws, _ = await open_ws(server, "private")
    await ws.send(json.dumps({"type": "message", "content": write("p.txt", "mine")}))
    request = (await turn_until(ws, types=("approval_request",)))[-1]
    status, body = http(server, "POST", f"/api/approvals/{request['approval_id']}/", other,
                        {"decision": "approve"})
    assert status == 404
    assert http(server, "GET", "/api/approvals/?state=pending", other)[1]["count"] == 0
    theirs, _ = await open_ws(server, "mallory-own", token=other)
    await answer(theirs, request, "approve")
    error = json.loads(await asyncio.wait_for(theirs.recv(), 10))
    assert error["code"] == "APPROVAL_INVALID" and error["approval_id"] == request["approval_id"]
    await theirs.close()
    await answer(ws, request, "deny")
    frames = await turn_until(ws)
    assert of_type(frames, "approval_result")[0]["decision"] == "deny"
    assert not (server.workspace / "p.txt").exists()
    await ws.close()


async def test_the_timeout_denies_with_no_socket_open(tmp_path, mock_llm_process):
    with approving_server(tmp_path, mock_llm_process, CONSTRUCT_APPROVAL_TIMEOUT="1.5") as timing:
        ws, _ = await open_ws(timing, "timeout")
        await ws.send(json.dumps({"type": "message", "content": write("late.txt", "too late")}))
        request = (await turn_until(ws, types=("approval_request",)))[-1]
        await ws.close()  # nobody is watching when it expires
        await asyncio.sleep(3.5)
        status, body = http(timing, "GET", "/api/approvals/", timing.token)
        decided = body["results"][0]
        assert (decided["id"], decided["state"], decided["by"]) == (
            request["approval_id"], "timeout", "timeout")
        status, body = http(timing, "GET", "/api/sessions/timeout/messages/", timing.token)
        roles = [(m["role"], m["content"][:14]) for m in body["messages"]]
        assert roles[-2:] == [("tool", "Denied: nobody"), ("assistant", "Tool said: Den")]
        assert not (timing.workspace / "late.txt").exists()

        # Answering now is refused; the socket stays usable.
        ws, start = await open_ws(timing, "timeout")
        assert start["state"] == "idle"
        await answer(ws, request, "approve")
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == "APPROVAL_INVALID" and "timeout" in error["message"]

        # With a socket open the timeout's result is sent as it happens.
        await ws.send(json.dumps({"type": "message", "content": write("late2.txt", "x")}))
        frames = await turn_until(ws)
        result = of_type(frames, "approval_result")[0]
        assert (result["decision"], result["by"]) == ("timeout", "timeout")
        assert of_type(frames, "tool_result")[0]["is_error"] is True
        assert frames[-1]["type"] == "done"
        await ws.close()


async def test_a_restarted_server_continues_the_turn_that_waited(tmp_path, mock_llm_process):
    """One process, killed while a call waits; the next one on the same database continues it."""
    with approving_server(tmp_path, mock_llm_process, CONSTRUCT_APPROVAL_TIMEOUT="60",
                          CONSTRUCT_TURN_LEASE_SECONDS="2") as first:
        ws, _ = await open_ws(first, "restart")
        await ws.send(json.dumps({"type": "message", "content": write("after.txt", "restarted")}))
        request = (await turn_until(ws, types=("approval_request",)))[-1]
        first.kill()
        second = DaphneServer(env=first.env, run_migrate=False, log_path=tmp_path / "daphne-2.log")
        try:
            second.start()
            second.token = first.token
            ws, start = await open_ws(second, "restart")
            assert start["state"] == "running" and start["turn_id"] == request["turn_id"]
            # From the shared log (Redis), or sent again once the turn is taken over (memory).
            again = (await turn_until(ws, types=("approval_request",)))[-1]
            assert {k: again[k] for k in ("approval_id", "tool_call_id", "name", "args")} == {
                k: request[k] for k in ("approval_id", "tool_call_id", "name", "args")}
            await answer(ws, again, "approve")
            frames = await turn_until(ws, timeout=30)
            assert of_type(frames, "approval_result")[0]["decision"] == "approve"
            assert frames[-1]["type"] == "done"
            assert frames[-1]["full_response"].endswith("Tool said: Wrote 9 bytes to after.txt")
            assert (first.workspace / "after.txt").read_text() == "restarted"
            status, body = http(second, "GET", "/api/sessions/restart/messages/", second.token)
            assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant"]
            await ws.close()
        finally:
            second.kill()
