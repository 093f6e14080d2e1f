"""A draining process behind Redis: its sockets close with 1012 at once when it runs no turn,
and a socket that reconnects (to the other process) resumes the running turn from its last seq."""

import asyncio
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


async def test_a_draining_process_sends_idle_sockets_away_at_once_and_refuses_new_messages(tmp_path):
    with pair_of_servers(tmp_path, CONSTRUCT_DRAIN_SECONDS="30") as cluster:
        busy_id = new_session_id()
        busy, _ = await open_socket(cluster.a, busy_id, cluster.token)
        await send(busy, type="message", content="[[chunks=60]] [[delay_ms=50]]")
        seen = await frames_until(busy, ("chunk",))
        turn_id = seen[-1]["turn_id"]
        idle_id = new_session_id()
        idle, _ = await open_socket(cluster.a, idle_id, cluster.token)
        cluster.a.process.send_signal(signal.SIGTERM)  # drains: a turn runs there

        # No turn of its session runs there: sent away at once, long before the turn ends.
        with pytest.raises(ConnectionClosed) as closed:
            await recv(idle, timeout=3)
        assert closed.value.rcvd.code == 1012

        # A message on the busy session is not run there: no ack, no error (its client_id lets
        # the client send it again), and the socket is sent away mid-turn.
        await send(busy, type="message", content="the next one", client_id="m-2")
        others = []
        try:
            while True:
                frame = await recv(busy, timeout=5)
                (seen if "turn_id" in frame else others).append(frame)
        except ConnectionClosed as exc:
            assert exc.rcvd.code == 1012
        assert others == []
        assert seen[-1]["type"] == "chunk"

        # On the other process: the turn resumes from the last seq, then the message runs.
        resumed, start = await open_socket(cluster.b, busy_id, cluster.token, turn_id=turn_id,
                                           last_seq=seen[-1]["seq"])
        assert start["state"] == "running" and start["turn_id"] == turn_id
        frames = seen + await frames_until(resumed, timeout=30)
        assert frames[-1]["type"] == "done"
        assert_contiguous(frames)
        assert turn_text(frames) == "".join(f"tok{i} " for i in range(1, 61))
        await send(resumed, type="message", content="the next one", client_id="m-2")
        assert await recv(resumed) == {"type": "ack", "client_id": "m-2", "duplicate": False}
        assert (await frames_until(resumed))[-1]["type"] == "done"

        again, _ = await open_socket(cluster.b, idle_id, cluster.token)
        await send(again, type="message", content="after the restart")
        assert (await frames_until(again))[-1]["type"] == "done"
        assert await asyncio.to_thread(cluster.a.process.wait, 30) == 0
        for sock in (resumed, again):
            await sock.close()
