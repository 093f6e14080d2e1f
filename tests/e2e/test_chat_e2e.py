"""The chat socket over the wire: real daphne, real WebSocket client, mock LLM process."""

import asyncio
import json
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import FAKE_KEY, gateway_env, pair

TERMINAL = ("done", "error", "stopped")


def ws_url(server, session_id="e2e", **params):
    query = "&".join(f"{k}={v}" for k, v in {"session_id": session_id, **params}.items())
    return f"{server.ws_url}/ws/chat?{query}"


async def frames_until(ws, types=TERMINAL, timeout=20):
    """Every frame up to the first of `types`; operator events (`agent_event`) left out unless asked."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if is_operator_event(frame) and "agent_event" not in types:
            continue
        frames.append(frame)
        if frame["type"] in types:
            return frames


def is_operator_event(frame):
    """A turn's start, end or error as every socket of its user hears it (not a channel event)."""
    event = frame.get("event") if frame.get("type") == "agent_event" else None
    return isinstance(event, dict) and event.get("type") in ("agent_start", "agent_end", "error") \
        and "turn_id" in event


async def _next_turn_frame(ws):
    while True:
        frame = json.loads(await ws.recv())
        if not is_operator_event(frame):
            return frame


async def session_start(ws):
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "session_start"
    return frame


async def test_refused_without_a_token(gateway):
    server, _token = gateway
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server)):
            pass
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(server, token="zc_wrong-wrong-wrong-wrong")):
            pass


@pytest.mark.parametrize("source", ["header", "subprotocol", "query"])
async def test_each_token_source(gateway, source):
    server, token = gateway
    kwargs, params = {}, {}
    if source == "header":
        kwargs["additional_headers"] = {"Authorization": f"Bearer {token}"}
    elif source == "subprotocol":
        kwargs["subprotocols"] = ["construct.v1", f"bearer.{token}"]
    else:
        params["token"] = token
    async with connect(ws_url(server, **params), **kwargs) as ws:
        assert ws.subprotocol == ("construct.v1" if source == "subprotocol" else None)
        await session_start(ws)


async def test_a_turn_resume_and_name(gateway):
    server, token = gateway
    async with connect(ws_url(server, name="Trip+plans", token=token)) as ws:
        start = await session_start(ws)
        assert start == {"type": "session_start", "session_id": "e2e", "resumed": False,
                         "message_count": 0, "state": "idle", "name": "Trip plans", "model": "mock-model"}
        await ws.send(json.dumps({"type": "connect", "device_name": "e2e"}))
        assert json.loads(await ws.recv()) == {"type": "connected", "message": "Connection established"}
        await ws.send(json.dumps({"type": "message", "content": "hello over the wire"}))
        frames = await frames_until(ws)
        assert [f["type"] for f in frames][-2:] == ["chunk_reset", "done"]
        # Deltas read together leave as one chunk: the text counts, not the frames.
        assert "".join(f["content"] for f in frames if f["type"] == "chunk") == frames[-1]["full_response"]
        assert frames[-1]["full_response"].startswith("Echo: hello over the wire")
    async with connect(ws_url(server, token=token)) as ws:
        start = await session_start(ws)
        assert start["resumed"] is True and start["message_count"] == 2 and start["name"] == "Trip plans"


async def test_error_codes_over_the_wire(gateway):
    server, token = gateway
    async with connect(ws_url(server, token=token)) as ws:
        await session_start(ws)
        for raw, code in [("{oops", "INVALID_JSON"), ('{"type":"x"}', "UNKNOWN_MESSAGE_TYPE"),
                          ('{"type":"message","content":""}', "EMPTY_CONTENT"), ("[]", "BAD_FRAME")]:
            await ws.send(raw)
            frame = json.loads(await ws.recv())
            assert (frame["type"], frame["code"]) == ("error", code)
        await ws.send(b"\x01\x02")
        assert json.loads(await ws.recv())["code"] == "BAD_FRAME"
        await ws.send(json.dumps({"type": "message", "content": "x" * 1_100_000}))
        assert json.loads(await ws.recv())["code"] == "MESSAGE_TOO_LARGE"
        await ws.send(json.dumps({"type": "message", "content": "still fine"}))
        assert (await frames_until(ws))[-1]["type"] == "done"


async def test_queued_then_session_busy(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_SESSION_QUEUE_TIMEOUT="1"))
    token = pair(server)
    async with connect(ws_url(server, token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "[[chunks=60]] [[delay_ms=50]]"}))
        await ws.send(json.dumps({"type": "message", "content": "can I go?"}))
        frames = await frames_until(ws, types=("error",))
        assert any(f["type"] == "operator_status" and f["phase"] == "queued" for f in frames)
        assert frames[-1]["code"] == "SESSION_BUSY"
        assert (await frames_until(ws, types=("done",)))[-1]["type"] == "done"


async def test_two_sockets_share_the_turn_and_a_drop_loses_nothing(gateway):
    server, token = gateway
    async with connect(ws_url(server, token=token)) as watcher:
        await session_start(watcher)
        sender = await connect(ws_url(server, token=token))
        await session_start(sender)
        await sender.send(json.dumps({"type": "message", "content": "[[chunks=40]] [[delay_ms=20]]"}))
        await asyncio.wait_for(sender.recv(), 10)
        await sender.close()  # dropped mid-turn
        frames = await frames_until(watcher)
        assert frames[-1]["type"] == "done"
        assert frames[-1]["full_response"] == "".join(f"tok{i} " for i in range(1, 41))
    async with connect(ws_url(server, token=token)) as ws:
        assert (await session_start(ws))["message_count"] == 2


async def test_channel_events_are_relayed(gateway):
    server, token = gateway
    async with connect(ws_url(server, token=token)) as ws:
        await session_start(ws)
        body = json.dumps({"type": "agent.completed", "agent": "coder"}).encode()
        request = urllib.request.Request(
            server.url + "/api/channel-events/", data=body, method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame == {"type": "agent_event", "event": {"type": "agent.completed", "agent": "coder"}}


async def test_agent_init_failed_closes_with_1011(daphne_factory):
    server = daphne_factory(env={
        "CONSTRUCT_BASE_URL": None, "CONSTRUCT_API_KEY": None, "OPENAI_API_KEY": None,
        "CONSTRUCT_REQUIRE_PAIRING": "false",
    })
    async with connect(ws_url(server)) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["code"] == "AGENT_INIT_FAILED"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 1011


async def test_provider_401_echoing_the_key(gateway):
    server, token = gateway
    async with connect(ws_url(server, token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "[[fail=401]]"}))
        frames = await frames_until(ws)
        assert frames[-1]["code"] == "AUTH_ERROR"
        assert FAKE_KEY not in json.dumps(frames)
    assert FAKE_KEY not in server.output()


async def test_resent_client_id_runs_once(gateway):
    server, token = gateway
    async with connect(ws_url(server, token=token)) as ws:
        await session_start(ws)
        message = json.dumps({"type": "message", "content": "only once", "client_id": "m-1"})
        await ws.send(message)
        await ws.send(message)
        frames = await frames_until(ws, types=("done",))
        acks = sorted((f["duplicate"] for f in frames if f["type"] == "ack"))
        assert acks == [False, True]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_next_turn_frame(ws), 1.0)
    async with connect(ws_url(server, token=token)) as ws:
        assert (await session_start(ws))["message_count"] == 2
