"""Services that fail under the real server: PostgreSQL gone, Redis gone, the server killed.

Each uses a private PostgreSQL or Redis (never the shared ones) or its own
database, so stopping it harms no other test.
"""

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from construct_core.errors import DATABASE_UNAVAILABLE
from tests.e2e.test_chat_e2e import is_operator_event
from tests.e2e.conftest import gateway_env, pair
from tests.security.live import db_rows
from tests.support.services import private_postgres, private_redis

pytestmark = pytest.mark.e2e

DB_DOWN = {"type": "error", "code": "AGENT_ERROR", "message": DATABASE_UNAVAILABLE}


def ws_url(server, session_id, token):
    return f"{server.ws_url}/ws/chat?session_id={session_id}&token={token}"


async def recv_json(ws, timeout=20):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, types=("done", "error", "stopped"), timeout=30):
    """Every frame up to the first of `types`; operator events (`agent_event`) left out unless asked."""
    frames = []
    while True:
        frame = await recv_json(ws, timeout)
        if is_operator_event(frame) and "agent_event" not in types:
            continue
        frames.append(frame)
        if frames[-1]["type"] in types:
            return frames


async def say(ws, content):
    await ws.send(json.dumps({"type": "message", "content": content}))
    return await until(ws)


def history(database_url, session_id):
    return db_rows(database_url, "SELECT role, content FROM sessions_app_message "
                                 "WHERE session_id = ? ORDER BY seq", (session_id,))


async def test_postgres_gone_and_back(daphne_factory, mock_llm_process):
    with private_postgres() as pg:
        server = daphne_factory(env=gateway_env(mock_llm_process, DATABASE_URL=pg))
        token = pair(server)
        async with connect(ws_url(server, "pg", token)) as ws:
            await recv_json(ws)
            assert (await say(ws, "before"))[-1]["type"] == "done"

            pg.stop()
            assert (await say(ws, "while down"))[-1] == DB_DOWN
            await ws.send('{"type":"nope"}')  # the socket is alive and answers
            assert (await recv_json(ws))["code"] == "UNKNOWN_MESSAGE_TYPE"
            async with connect(ws_url(server, "pg-new", token)) as late:
                assert await recv_json(late) == DB_DOWN
                with pytest.raises(ConnectionClosed):
                    await recv_json(late)
            assert late.close_code == 1013  # try again later

            pg.start()
            assert (await say(ws, "after"))[-1]["type"] == "done"
        assert history(pg, "pg") == [("user", "before"), ("assistant", "Echo: before"),
                                     ("user", "after"), ("assistant", "Echo: after")]


async def test_redis_gone_keeps_local_chat_working(daphne_factory, mock_llm_process):
    with private_redis() as redis_url:
        server = daphne_factory(env=gateway_env(mock_llm_process, REDIS_URL=redis_url))
        token = pair(server)
        async with connect(ws_url(server, "rd", token)) as ws:
            await recv_json(ws)
            assert (await say(ws, "before"))[-1]["type"] == "done"
            redis_url.kill()
            frames = await say(ws, "[[chunks=20]] [[delay_ms=5]]")
            assert frames[-1]["type"] == "done"
            assert frames[-1]["full_response"] == "".join(f"tok{i} " for i in range(1, 21))
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            assert (await say(ws, "still local"))[-1]["type"] == "done"
        deadline = time.monotonic() + 10
        while "could not send to group" not in server.output() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert "could not send to group" in server.output()  # the lost fan-out is logged
        assert server.running()


async def test_server_killed_mid_turn_loses_nothing_and_frees_the_session(daphne_factory,
                                                                           mock_llm_process):
    env = gateway_env(mock_llm_process, CONSTRUCT_TURN_LEASE_SECONDS="2")
    server = daphne_factory(env=env)
    token = pair(server)
    async with connect(ws_url(server, "crash", token)) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "message", "content": "[[chunks=300]] [[delay_ms=20]]"}))
        while (await recv_json(ws))["type"] != "chunk":
            pass
        server.kill()  # SIGKILL: no clean-up at all
    assert history(daphne_factory.database_url, "crash")[0] == ("user", "[[chunks=300]] [[delay_ms=20]]")

    restarted = daphne_factory(env=env)
    async with connect(ws_url(restarted, "crash", token)) as ws:
        start = await recv_json(ws)
        assert start["message_count"] >= 1
        begun = time.monotonic()
        await ws.send(json.dumps({"type": "message", "content": "after the crash"}))
        # Sockets on the session may first hear the dead turn end (as interrupted).
        frames = await until(ws, types=("done",))
        assert frames[-1]["full_response"] == "Echo: after the crash"
        assert time.monotonic() - begun < 10  # waited out the dead turn's 2 s lease at most
    rows = history(daphne_factory.database_url, "crash")
    assert rows[0] == ("user", "[[chunks=300]] [[delay_ms=20]]")
    assert rows[-2:] == [("user", "after the crash"), ("assistant", "Echo: after the crash")]
    (state,) = db_rows(daphne_factory.database_url,
                       "SELECT state FROM sessions_app_chatsession WHERE id = ?", ("crash",))[0]
    assert state == "idle"
