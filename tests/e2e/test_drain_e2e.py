"""SIGTERM drains a real server: /ready 503 at once, new sockets refused and no new turn (a
message is kept and runs after the restart), the running turn goes on to its end, then its
sockets close with 1012 and the process exits; past CONSTRUCT_DRAIN_SECONDS a running turn ends
interrupted, keeping what it streamed."""

import asyncio
import json
import signal
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import gateway_env, pair

pytestmark = pytest.mark.e2e


def ready_status(server):
    try:
        with urllib.request.urlopen(server.url + "/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def socket_url(server, token, session_id, **params):
    query = "&".join(f"{k}={v}" for k, v in {"session_id": session_id, "token": token, **params}.items())
    return f"{server.ws_url}/ws/chat?{query}"


async def recv(ws, timeout=20.0):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("type") != "agent_event":
            return frame


async def until(ws, types, timeout=20.0):
    frames = []
    while True:
        frames.append(await recv(ws, timeout))
        if frames[-1]["type"] in types:
            return frames


async def closed_code(ws, timeout=20.0):
    """Read (and drop) frames until the server closes; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def sigterm(server):
    server.process.send_signal(signal.SIGTERM)


async def test_sigterm_lets_the_running_turn_finish_then_closes_with_1012(daphne_factory,
                                                                           mock_llm_process):
    # One process, no Redis: its sockets stay to the end (behind Redis, those with no turn
    # running there leave at once: tests/multiprocess/test_drain_processes.py).
    server = daphne_factory(env=gateway_env(mock_llm_process, REDIS_URL=None))
    token = pair(server)
    assert ready_status(server)[0] == 200
    async with connect(socket_url(server, token, "drain-a"), max_size=None) as ws, \
            connect(socket_url(server, token, "drain-b"), max_size=None) as idle:
        assert (await recv(ws))["type"] == "session_start"
        assert (await recv(idle))["type"] == "session_start"
        await ws.send(json.dumps({"type": "message", "content": "[[chunks=30]] [[delay_ms=60]]"}))
        first = await until(ws, ("chunk",))
        sigterm(server)
        await asyncio.sleep(0.3)

        status, body = ready_status(server)
        assert status == 503 and body["failed"] == ["draining"]
        with pytest.raises(InvalidStatus) as refused:
            await connect(socket_url(server, token, "drain-c"), open_timeout=5)
        assert refused.value.response.status_code == 503
        # A new message starts no turn here: accepted and kept, to run after the restart.
        await idle.send(json.dumps({"type": "message", "content": "[[chunks=4]] hello",
                                    "client_id": "c-1"}))
        assert await recv(idle) == {"type": "ack", "client_id": "c-1", "duplicate": False}
        queued = await recv(idle)
        assert queued["type"] == "operator_status" and queued["phase"] == "queued"
        assert "after the restart" in queued["detail"]

        rest = await until(ws, ("done", "error", "stopped"))
        frames = first + rest
        assert frames[-1]["type"] == "done"
        text = "".join(f["content"] for f in frames if f["type"] == "chunk")
        assert text == "".join(f"tok{i} " for i in range(1, 31))
        assert frames[-1]["full_response"] == text
        assert await closed_code(ws) == 1012
        assert await closed_code(idle) == 1012
    assert await asyncio.to_thread(server.process.wait, 20) == 0
    assert "draining" in server.output()

    # Served again on the same database: the kept message runs, once, with no client back.
    again = daphne_factory(env=gateway_env(mock_llm_process, REDIS_URL=None))

    def history():
        request = urllib.request.Request(again.url + "/api/sessions/drain-b/messages/",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return [(m["role"], m["content"]) for m in json.loads(response.read())["messages"]]

    for _ in range(200):
        if len(history()) == 2:
            break
        await asyncio.sleep(0.1)
    assert history() == [("user", "[[chunks=4]] hello"), ("assistant", "tok1 tok2 tok3 tok4 ")]
    async with connect(socket_url(again, token, "drain-b"), max_size=None) as back:
        assert (await recv(back))["state"] == "idle"
        await back.send(json.dumps({"type": "message", "content": "hello", "client_id": "c-1"}))
        assert await recv(back) == {"type": "ack", "client_id": "c-1", "duplicate": True}


async def test_a_turn_past_the_drain_deadline_ends_interrupted_keeping_its_text(daphne_factory,
                                                                                mock_llm_process):
    env = gateway_env(mock_llm_process, CONSTRUCT_DRAIN_SECONDS="1")
    server = daphne_factory(env=env)
    token = pair(server)
    async with connect(socket_url(server, token, "drain-late"), max_size=None) as ws:
        assert (await recv(ws))["type"] == "session_start"
        await ws.send(json.dumps({"type": "message", "content": "[[chunks=400]] [[delay_ms=50]]"}))
        frames = await until(ws, ("chunk",))
        sigterm(server)
        frames += await until(ws, ("done", "error", "stopped"))
        end = frames[-1]
        assert end["type"] == "error" and end["interrupted"] is True
        seqs = [f["seq"] for f in frames if "seq" in f]
        assert seqs == list(range(1, len(seqs) + 1))
        streamed = "".join(f["content"] for f in frames if f["type"] == "chunk")
        assert 0 < len(streamed) < len("".join(f"tok{i} " for i in range(1, 401)))
        assert await closed_code(ws) == 1012
    assert await asyncio.to_thread(server.process.wait, 20) == 0

    # Served again on the same database: the session says interrupted and keeps the text.
    again = daphne_factory(env=env)
    async with connect(socket_url(again, token, "drain-late"), max_size=None) as ws:
        start = await recv(ws)
        assert start["state"] == "interrupted"
    request = urllib.request.Request(again.url + "/api/sessions/drain-late/messages/",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        messages = json.loads(response.read())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["content"] == streamed


def test_a_bad_drain_seconds_stops_the_start_naming_it(daphne_factory):
    with pytest.raises(RuntimeError) as failed:
        daphne_factory(env={"CONSTRUCT_DRAIN_SECONDS": "soon"}, startup_timeout=30)
    assert "CONSTRUCT_DRAIN_SECONDS" in str(failed.value)
