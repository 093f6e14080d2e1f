"""A draining process behind Redis: its sockets close with 1012 at once when it runs no turn,
and a socket that reconnects (to the other process) resumes the running turn from its last seq."""

import asyncio
import json
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from tests.multiprocess.conftest import (
    assert_contiguous, frames_until, new_session_id, open_socket, pair_of_servers, recv, send, turn_text,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services]


async def test_a_draining_process_closes_with_1012_and_the_socket_resumes_elsewhere(tmp_path):
    with pair_of_servers(tmp_path) as cluster:
        session_id = new_session_id()
        runner, _ = await open_socket(cluster.b, session_id, cluster.token)
        watcher, _ = await open_socket(cluster.a, session_id, cluster.token)
        await send(runner, type="message", content="[[chunks=60]] [[delay_ms=40]]")
        seen = await frames_until(watcher, ("chunk",))
        turn_id = seen[-1]["turn_id"]

        cluster.a.process.send_signal(signal.SIGTERM)  # runs no turn: closes at once
        try:
            while True:
                seen.append(await recv(watcher, timeout=10))
        except ConnectionClosed as exc:
            assert exc.rcvd.code == 1012
        assert await asyncio.to_thread(cluster.a.process.wait, 20) == 0
        last_seq = max(f["seq"] for f in seen if f.get("turn_id") == turn_id)

        resumed, start = await open_socket(cluster.b, session_id, cluster.token,
                                           turn_id=turn_id, last_seq=last_seq)
        if start["state"] == "running":
            rest = await frames_until(resumed)
        else:  # it ended meanwhile: nothing to resume
            rest = []
        frames = [f for f in seen if f.get("turn_id") == turn_id] + rest
        assert frames[-1]["type"] == "done"
        assert_contiguous(frames)
        assert turn_text(frames) == "".join(f"tok{i} " for i in range(1, 61))
        whole = await frames_until(runner)
        assert whole[-1]["full_response"] == turn_text(frames)
        for ws in (runner, resumed):
            await ws.close()


async def test_a_message_to_a_draining_process_is_refused_and_runs_after_the_reconnect(tmp_path):
    with pair_of_servers(tmp_path, CONSTRUCT_DRAIN_SECONDS="30") as cluster:
        busy, _ = await open_socket(cluster.a, new_session_id(), cluster.token)
        await send(busy, type="message", content="[[chunks=50]] [[delay_ms=40]]")
        await frames_until(busy, ("chunk",))
        session_id = new_session_id()
        ws, _ = await open_socket(cluster.a, session_id, cluster.token)
        cluster.a.process.send_signal(signal.SIGTERM)  # drains: a turn runs there
        await asyncio.sleep(0.3)

        await send(ws, type="message", content="after the restart", client_id="m-1")
        refusal = await recv(ws)
        assert refusal["code"] == "SESSION_BUSY" and refusal["restarting"] is True
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws, timeout=5)
        assert closed.value.rcvd.code == 1012  # sent away at once, before the running turn ends

        again, _ = await open_socket(cluster.b, session_id, cluster.token)
        await send(again, type="message", content="after the restart", client_id="m-1")
        ack = await recv(again)
        assert ack == {"type": "ack", "client_id": "m-1", "duplicate": False}
        assert (await frames_until(again))[-1]["type"] == "done"
        assert (await frames_until(busy))[-1]["type"] == "done"  # the draining one's turn ended whole
        for sock in (busy, again):
            await sock.close()
