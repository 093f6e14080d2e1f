"""Tool calls that wait for a person, over an in-process chat socket (the mock LLM in both formats)."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from construct_core.approvals import rules_parse
from sessions_app.models import AuditEvent, ChatSession, Message, ToolApproval
from tests.agent.conftest import tool
from tests.chat.conftest import frames_until, next_frame, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asking(gateway):
    gateway.CONSTRUCT_TOOL_APPROVAL = rules_parse("file_write=ask,memory_*=deny,*=auto")
    gateway.CONSTRUCT_APPROVAL_TIMEOUT = 30
    return gateway


def of_type(frames, kind):
    return [f for f in frames if f["type"] == kind]


def turn_frames(frames):
    return [f for f in frames if f["type"] != "agent_event"]


@database_sync_to_async
def saved(session_id="s1"):
    return list(Message.objects.filter(session_id=session_id).order_by("seq")
                .values_list("role", "content", "data"))


@database_sync_to_async
def approval(approval_id):
    return ToolApproval.objects.get(pk=approval_id)


async def test_ask_then_approve_runs_the_tool(provider, asking, token, tmp_path):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("file_write", path="a.txt", content="hi"))
    frames = turn_frames(await frames_until(comm, types=("approval_request",)))
    request = frames[-1]
    assert [f["type"] for f in frames][-2:] == ["tool_call", "approval_request"]
    assert request["name"] == "file_write" and request["args"] == {"path": "a.txt", "content": "hi"}
    assert request["tool_call_id"] == frames[-2]["id"]
    assert request["seq"] == frames[-2]["seq"] + 1 and request["expires_at"]
    assert not (tmp_path / "a.txt").exists()
    row = await approval(request["approval_id"])
    assert row.state == "pending"
    # Saved before the request went out: the assistant message with the call.
    assert [r[0] for r in await saved()] == ["user", "assistant"]

    await send(comm, type="approval", approval_id=request["approval_id"], decision="approve")
    frames = turn_frames(await frames_until(comm))
    assert [f["type"] for f in frames][:2] == ["approval_result", "tool_result"]
    assert frames[0] == {"type": "approval_result", "approval_id": request["approval_id"],
                         "decision": "approve", "by": "test device", "turn_id": request["turn_id"],
                         "seq": request["seq"] + 1}
    assert frames[1]["is_error"] is False
    assert frames[-1]["type"] == "done" and frames[-1]["full_response"].startswith("Tool said: Wrote")
    assert (tmp_path / "a.txt").read_text() == "hi"
    row = await approval(request["approval_id"])
    assert (row.state, row.decision, row.by) == ("approved", "approve", "test device")
    assert row.applied_at is not None
    audit = await database_sync_to_async(
        lambda: list(AuditEvent.objects.filter(kind="approval_decided").values_list("detail", flat=True))
    )()
    assert audit[-1]["tool"] == "file_write" and audit[-1]["decision"] == "approve"
    assert len(audit[-1]["args_sha256"]) == 64
    await comm.disconnect()


async def test_deny_edit_always_and_policy(asking, token, tmp_path):
    comm, _ = await open_socket(token)
    # Deny: not run, the model sees a denied error result and goes on.
    await send(comm, type="message", content=tool("file_write", path="d.txt", content="no"))
    request = (await frames_until(comm, types=("approval_request",)))[-1]
    await send(comm, type="approval", approval_id=request["approval_id"], decision="deny")
    frames = turn_frames(await frames_until(comm))
    result = of_type(frames, "tool_result")[0]
    assert result["is_error"] is True and "Denied" in result["output"]
    assert frames[-1]["type"] == "done" and "Denied" in frames[-1]["full_response"]
    assert not (tmp_path / "d.txt").exists()

    # Edited args are what runs.
    await send(comm, type="message", content=tool("file_write", path="e.txt", content="model's"))
    request = (await frames_until(comm, types=("approval_request",)))[-1]
    await send(comm, type="approval", approval_id=request["approval_id"], decision="approve",
               args={"path": "e.txt", "content": "person's"})
    frames = turn_frames(await frames_until(comm))
    assert of_type(frames, "approval_result")[0]["args"] == {"path": "e.txt", "content": "person's"}
    assert (tmp_path / "e.txt").read_text() == "person's"

    # Always: approved, and no second request for that tool in the session.
    await send(comm, type="message", content=tool("file_write", path="f.txt", content="1"))
    request = (await frames_until(comm, types=("approval_request",)))[-1]
    await send(comm, type="approval", approval_id=request["approval_id"], decision="always")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await send(comm, type="message", content=tool("file_write", path="g.txt", content="2"))
    frames = turn_frames(await frames_until(comm))
    assert not of_type(frames, "approval_request") and frames[-1]["type"] == "done"
    assert (tmp_path / "g.txt").read_text() == "2"

    # A deny policy: never asked, never run.
    await send(comm, type="message", content=tool("memory_store", content="secret plan"))
    frames = turn_frames(await frames_until(comm))
    assert not of_type(frames, "approval_request")
    result = of_type(frames, "tool_result")[0]
    assert result["is_error"] is True and "policy" in result["output"]
    await comm.disconnect()


async def test_invalid_answers_keep_the_socket(asking, token):
    comm, _ = await open_socket(token)
    for frame, approval_id in [
        ({"approval_id": "ap_nope", "decision": "approve"}, "ap_nope"),
        ({"approval_id": 7, "decision": "approve"}, None),
        ({"approval_id": "ap_x", "decision": "maybe"}, "ap_x"),
        ({"approval_id": "ap_x", "decision": "approve", "args": [1]}, "ap_x"),
        ({"decision": "timeout", "approval_id": "ap_x"}, "ap_x"),
        ({"approval_id": "ap_x", "decision": "approve", "args": {"n": float("nan")}}, "ap_x"),
        ({"approval_id": "ap_x", "decision": "approve", "args": {"s": "nul\x00"}}, "ap_x"),
        ({"approval_id": "ap\x00", "decision": "approve"}, None),
    ]:
        await send(comm, type="approval", **frame)
        error = await comm.receive_json_from(timeout=5)
        assert error["type"] == "error" and error["code"] == "APPROVAL_INVALID", error
        assert error.get("approval_id") == approval_id
    await send(comm, type="message", content=tool("file_write", path="x.txt", content="x"))
    request = (await frames_until(comm, types=("approval_request",)))[-1]
    await send(comm, type="approval", approval_id=request["approval_id"], decision="deny")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await send(comm, type="approval", approval_id=request["approval_id"], decision="approve")
    error = await next_frame(comm, timeout=5)  # the turn's agent_end may come first
    assert error["code"] == "APPROVAL_INVALID" and "already decided" in error["message"]
    await comm.disconnect()


async def test_timeout_denies(asking, token):
    asking.CONSTRUCT_APPROVAL_TIMEOUT = 0.5
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("file_write", path="t.txt", content="t"))
    frames = turn_frames(await frames_until(comm))
    result = of_type(frames, "approval_result")[0]
    assert (result["decision"], result["by"]) == ("timeout", "timeout")
    assert of_type(frames, "tool_result")[0]["is_error"] is True
    assert frames[-1]["type"] == "done"
    await comm.disconnect()


async def test_stop_while_waiting_denies_and_stops(asking, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("file_write", path="s.txt", content="s"))
    request = (await frames_until(comm, types=("approval_request",)))[-1]
    await send(comm, type="stop")
    frames = turn_frames(await frames_until(comm))
    assert [f["type"] for f in frames] == ["approval_result", "tool_result", "stopped"]
    assert (frames[0]["decision"], frames[0]["by"]) == ("deny", "test device")
    row = await approval(request["approval_id"])
    assert row.state == "denied"
    session = await database_sync_to_async(ChatSession.objects.get)(pk="s1")
    assert session.state == "idle"
    await send(comm, type="message", content="next")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_a_late_socket_sees_the_request_and_answers(asking, token):
    first, _ = await open_socket(token)
    await send(first, type="message", content=tool("file_write", path="l.txt", content="l"))
    request = (await frames_until(first, types=("approval_request",)))[-1]
    late, start = await open_socket(token)
    assert start["state"] == "running" and start["turn_id"] == request["turn_id"]
    replayed = turn_frames(await frames_until(late, types=("approval_request",)))
    assert replayed[-1] == request
    await send(late, type="approval", approval_id=request["approval_id"], decision="approve")
    for comm in (first, late):
        frames = turn_frames(await frames_until(comm))
        assert of_type(frames, "approval_result")[0]["decision"] == "approve"
        assert frames[-1]["type"] == "done"
    await asyncio.gather(first.disconnect(), late.disconnect())
