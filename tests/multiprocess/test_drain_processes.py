"""A draining process behind Redis: its sockets close with 1012 at once when it runs no turn,
a socket that reconnects (to the other process) resumes the running turn from its last seq,
and a message sent to the draining process is kept and run by the other one."""

import asyncio
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from tests.multiprocess.conftest import (
    assert_contiguous, frames_until, new_session_id, open_socket, pair_of_servers, recv, saved_messages,
    send, turn_text,
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


async def test_a_draining_process_hands_a_message_on_and_the_other_process_runs_it(tmp_path):
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

        # A message with no client_id on the busy session is not run there, nor refused: it is
        # kept for the other process. The turn streams on to its end, then the socket goes (1012).
        await send(busy, type="message", content="[[chunks=5]] the next one")
        others = []
        try:
            while True:
                frame = await recv(busy, timeout=10)
                (seen if "turn_id" in frame else others).append(frame)
        except ConnectionClosed as exc:
            assert exc.rcvd.code == 1012
        assert [(f["type"], f.get("phase")) for f in others] == [("operator_status", "queued")]
        assert "after the restart" in others[0]["detail"]
        assert seen[-1]["type"] == "done" and {f["turn_id"] for f in seen} == {turn_id}
        assert_contiguous(seen)
        assert turn_text(seen) == "".join(f"tok{i} " for i in range(1, 61))
        assert await asyncio.to_thread(cluster.a.process.wait, 30) == 0

        # The client reconnects (to the other process) and sees the answer: live if it still
        # runs, else in the history, the same once.
        back, start = await open_socket(cluster.b, busy_id, cluster.token)
        if start["state"] == "running":
            assert start["turn_id"] != turn_id
            frames = await frames_until(back, timeout=30)
            assert frames[-1]["type"] == "done"
            assert frames[-1]["full_response"] == "tok1 tok2 tok3 tok4 tok5 "
        messages = saved_messages(cluster.database_url, busy_id)
        for _ in range(100):
            if len(messages) == 4:
                break
            await asyncio.sleep(0.1)
            messages = saved_messages(cluster.database_url, busy_id)
        assert [(role, content) for role, content, _ in messages] == [
            ("user", "[[chunks=60]] [[delay_ms=50]]"), ("assistant", turn_text(seen)),
            ("user", "[[chunks=5]] the next one"), ("assistant", "tok1 tok2 tok3 tok4 tok5 "),
        ]

        again, _ = await open_socket(cluster.b, idle_id, cluster.token)
        await send(again, type="message", content="after the restart")
        assert (await frames_until(again))[-1]["type"] == "done"
        for sock in (back, again):
            await sock.close()


async def test_a_handed_on_message_runs_on_the_other_process_with_no_client_back(tmp_path):
    with pair_of_servers(tmp_path, CONSTRUCT_DRAIN_SECONDS="30") as cluster:
        session_id = new_session_id()
        sender, _ = await open_socket(cluster.a, session_id, cluster.token)
        await send(sender, type="message", content="[[chunks=30]] [[delay_ms=50]] first")
        await frames_until(sender, ("chunk",))
        cluster.a.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        await send(sender, type="message", content="[[chunks=3]] second", client_id="k-1")
        frames = await frames_until(sender, ("ack",))
        assert frames[-1] == {"type": "ack", "client_id": "k-1", "duplicate": False}
        await sender.close()  # nobody comes back
        for _ in range(300):
            messages = saved_messages(cluster.database_url, session_id)
            if len(messages) == 4:
                break
            await asyncio.sleep(0.1)
        assert [(role, content) for role, content, _ in messages][2:] == [
            ("user", "[[chunks=3]] second"), ("assistant", "tok1 tok2 tok3 "),
        ]
        assert messages[2][2]["client_id"] == "k-1"
        assert await asyncio.to_thread(cluster.a.process.wait, 30) == 0
        # The client_id stays known: a resend is answered as a duplicate, not run again.
        back, _ = await open_socket(cluster.b, session_id, cluster.token)
        await send(back, type="message", content="[[chunks=3]] second", client_id="k-1")
        assert await recv(back) == {"type": "ack", "client_id": "k-1", "duplicate": True}
        await back.close()
