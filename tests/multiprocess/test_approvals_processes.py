"""Approvals across two daphne processes on one PostgreSQL database and one Redis.

A turn asks on one process and is answered on the other; the process that
asked is killed while it waits, and the answer (or the timeout) still counts:
the other process continues the turn from the saved history, saves its reply
once, and every socket watching the session gets the rest of it.
"""

import asyncio
import json
import urllib.request

import psycopg
import pytest

from tests.multiprocess.conftest import (
    assert_contiguous,
    frames_until,
    new_session_id,
    open_socket,
    pair_of_servers,
    saved_messages,
    send,
    session_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services]

RULES = "file_write=ask,*=auto"


def write(path, content):
    return f'[[tool:file_write {json.dumps({"path": path, "content": content})}]]'


def approval_rows(database_url, session_id):
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, state, decision, by, applied_at IS NOT NULL FROM sessions_app_toolapproval "
            "WHERE session_id = %s ORDER BY requested_at", (session_id,),
        ).fetchall()


def of_type(frames, kind):
    return [f for f in frames if f["type"] == kind]


async def until_request(ws):
    return (await frames_until(ws, types=("approval_request",)))[-1]


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "workspace"
    path.mkdir()
    return path


async def test_requested_on_one_process_approved_on_the_other(tmp_path, workspace):
    with pair_of_servers(tmp_path, CONSTRUCT_TOOL_APPROVAL=RULES,
                         CONSTRUCT_WORKSPACE=str(workspace)) as cluster:
        session = new_session_id()
        on_a, _ = await open_socket(cluster.a, session, cluster.token)
        on_b, _ = await open_socket(cluster.b, session, cluster.token)
        await send(on_a, type="message", content=write("ab.txt", "asked on A"))
        request = await until_request(on_a)
        assert await until_request(on_b) == request
        await send(on_b, type="approval", approval_id=request["approval_id"], decision="approve")
        ends = [await frames_until(ws) for ws in (on_a, on_b)]
        assert ends[0] == ends[1]
        frames = ends[0]
        assert frames[0]["type"] == "approval_result" and frames[0]["decision"] == "approve"
        assert frames[-1]["type"] == "done"
        assert frames[-1]["full_response"] == "Tool said: Wrote 10 bytes to ab.txt"
        assert_contiguous(frames, first=request["seq"] + 1)
        assert (workspace / "ab.txt").read_text() == "asked on A"
        # Answered on B, through REST on A: the same.
        await send(on_b, type="message", content=write("ba.txt", "asked again"))
        request = await until_request(on_b)
        await until_request(on_a)
        req = urllib.request.Request(
            cluster.a.url + f"/api/approvals/{request['approval_id']}/", method="POST",
            data=json.dumps({"decision": "deny"}).encode(),
            headers={"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"},
        )
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
        for ws in (on_a, on_b):
            frames = await frames_until(ws)
            assert frames[0]["decision"] == "deny" and frames[-1]["type"] == "done"
        assert not (workspace / "ba.txt").exists()
        await on_a.close()
        await on_b.close()


async def test_the_asking_process_killed_then_approved_on_the_other(tmp_path, workspace):
    with pair_of_servers(tmp_path, CONSTRUCT_TOOL_APPROVAL=RULES, CONSTRUCT_WORKSPACE=str(workspace),
                         CONSTRUCT_TURN_LEASE_SECONDS="2") as cluster:
        session = new_session_id()
        on_a, _ = await open_socket(cluster.a, session, cluster.token)
        watcher, _ = await open_socket(cluster.b, session, cluster.token)
        await send(on_a, type="message", content=write("survivor.txt", "written on B"))
        request = await until_request(on_a)
        seen = await frames_until(watcher, types=("approval_request",))
        assert seen[-1] == request
        cluster.a.kill()
        await asyncio.sleep(0.5)

        # A socket that joins now, on B: still running, the request in its replay.
        late, start = await open_socket(cluster.b, session, cluster.token)
        assert start["state"] == "running" and start["turn_id"] == request["turn_id"]
        replayed = await frames_until(late, types=("approval_request",))
        assert replayed == seen
        assert session_state(cluster.database_url, session) == "running"

        await send(late, type="approval", approval_id=request["approval_id"], decision="approve")
        rest = {}
        for name, ws in (("watcher", watcher), ("late", late)):
            rest[name] = await frames_until(ws, timeout=20)
        assert rest["watcher"] == rest["late"]
        frames = rest["watcher"]
        assert [f["type"] for f in frames[:2]] == ["approval_result", "tool_result"]
        assert frames[0]["decision"] == "approve" and frames[1]["is_error"] is False
        assert frames[-1]["type"] == "done"
        assert frames[-1]["full_response"] == "Tool said: Wrote 12 bytes to survivor.txt"
        assert all(f["turn_id"] == request["turn_id"] for f in frames)
        assert_contiguous(seen + frames)
        assert (workspace / "survivor.txt").read_text() == "written on B"

        # Saved once: the call, its result, the reply.
        messages = saved_messages(cluster.database_url, session)
        assert [m[0] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[3][1] == "Tool said: Wrote 12 bytes to survivor.txt"
        assert session_state(cluster.database_url, session) == "idle"
        assert approval_rows(cluster.database_url, session) == [
            (request["approval_id"], "approved", "approve", rows_by(cluster), True)]

        # The session goes on, on B.
        await send(late, type="message", content="still there?")
        assert (await frames_until(late))[-1]["full_response"].startswith("Echo: still there?")
        await watcher.close()
        await late.close()


def rows_by(cluster):
    """The name a socket of the cluster's device decides by (the device paired without a name)."""
    with psycopg.connect(cluster.database_url) as conn:
        (pk,) = conn.execute("SELECT id FROM sessions_app_paireddevice").fetchone()
    return f"device {pk}"


async def test_the_timeout_fires_with_the_asker_dead_and_no_socket_open(tmp_path, workspace):
    with pair_of_servers(tmp_path, CONSTRUCT_TOOL_APPROVAL=RULES, CONSTRUCT_WORKSPACE=str(workspace),
                         CONSTRUCT_TURN_LEASE_SECONDS="2", CONSTRUCT_APPROVAL_TIMEOUT="3") as cluster:
        session = new_session_id()
        on_a, _ = await open_socket(cluster.a, session, cluster.token)
        await send(on_a, type="message", content=write("never.txt", "x"))
        request = await until_request(on_a)
        cluster.a.kill()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while session_state(cluster.database_url, session) != "idle":
            assert loop.time() < deadline, "the turn was never finished"
            await asyncio.sleep(0.25)
        assert approval_rows(cluster.database_url, session) == [
            (request["approval_id"], "timeout", "timeout", "timeout", True)]
        messages = saved_messages(cluster.database_url, session)
        assert [m[0] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[2][1].startswith("Denied: nobody approved file_write")
        assert not (workspace / "never.txt").exists()

        # A socket that comes afterwards finds the session idle, the turn in its history.
        ws, start = await open_socket(cluster.b, session, cluster.token)
        assert start["state"] == "idle" and start["message_count"] == 4
        await ws.close()


async def test_stop_on_the_other_process_while_waiting(tmp_path, workspace):
    with pair_of_servers(tmp_path, CONSTRUCT_TOOL_APPROVAL=RULES,
                         CONSTRUCT_WORKSPACE=str(workspace)) as cluster:
        session = new_session_id()
        on_a, _ = await open_socket(cluster.a, session, cluster.token)
        on_b, _ = await open_socket(cluster.b, session, cluster.token)
        await send(on_a, type="message", content=write("stopped.txt", "x"))
        request = await until_request(on_a)
        await until_request(on_b)
        await send(on_b, type="stop")
        for ws in (on_a, on_b):
            frames = await frames_until(ws)
            assert [f["type"] for f in frames] == ["approval_result", "tool_result", "stopped"]
            assert frames[0]["decision"] == "deny" and frames[0]["by"] == rows_by(cluster)
        assert approval_rows(cluster.database_url, session)[0][:3] == (
            request["approval_id"], "denied", "deny")
        assert session_state(cluster.database_url, session) == "idle"
        await on_a.close()
        await on_b.close()




async def test_stop_after_the_asking_process_died_denies_the_call(tmp_path, workspace):
    """Nobody runs the turn any more: the stop still denies the call; the turn is continued elsewhere."""
    with pair_of_servers(tmp_path, CONSTRUCT_TOOL_APPROVAL=RULES, CONSTRUCT_WORKSPACE=str(workspace),
                         CONSTRUCT_TURN_LEASE_SECONDS="2") as cluster:
        session = new_session_id()
        on_a, _ = await open_socket(cluster.a, session, cluster.token)
        on_b, _ = await open_socket(cluster.b, session, cluster.token)
        await send(on_a, type="message", content=write("orphan.txt", "x"))
        request = await until_request(on_a)
        await until_request(on_b)
        cluster.a.kill()
        await send(on_b, type="stop")
        frames = await frames_until(on_b, timeout=20)
        assert frames[0]["type"] == "approval_result"
        assert (frames[0]["decision"], frames[0]["by"]) == ("deny", rows_by(cluster))
        assert of_type(frames, "tool_result")[0]["is_error"] is True
        assert frames[-1]["type"] == "done"
        assert not (workspace / "orphan.txt").exists()
        assert approval_rows(cluster.database_url, session)[0][:3] == (
            request["approval_id"], "denied", "deny")
        assert session_state(cluster.database_url, session) == "idle"
        await on_b.close()
