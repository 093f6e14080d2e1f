"""Two daphne processes on one PostgreSQL database and one Redis behave as one gateway."""

import asyncio
import uuid

import pytest

from tests.multiprocess.conftest import (
    assert_contiguous,
    frames_until,
    new_session_id,
    open_socket,
    pair_of_servers,
    post_channel_event,
    recv,
    saved_messages,
    send,
    session_state,
    turn_text,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services]


async def wait_for_event(ws, nonce, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await recv(ws, max(deadline - loop.time(), 0.01), skip_agent_events=False)
        if frame.get("type") == "agent_event" and frame["event"].get("nonce") == nonce:
            return frame


async def test_an_operator_event_posted_to_one_reaches_sockets_on_both(cluster):
    on_a, _ = await open_socket(cluster.a, new_session_id(), cluster.token)
    on_b, _ = await open_socket(cluster.b, new_session_id(), cluster.token)
    nonce = uuid.uuid4().hex
    await asyncio.to_thread(post_channel_event, cluster.a, cluster.token,
                            {"type": "agent.completed", "nonce": nonce})
    for ws in (on_a, on_b):
        frame = await wait_for_event(ws, nonce)
        assert frame == {"type": "agent_event", "event": {"type": "agent.completed", "nonce": nonce}}
    await on_a.close()
    await on_b.close()


async def timed_frames(ws):
    """The turn's frames, each with the time it arrived."""
    loop = asyncio.get_running_loop()
    frames = []
    while not frames or frames[-1][1]["type"] not in ("done", "error", "stopped"):
        frame = await recv(ws)
        frames.append((loop.time(), frame))
    return frames


async def test_a_turn_on_one_is_watched_live_from_the_other(cluster):
    session = new_session_id()
    sender, _ = await open_socket(cluster.a, session, cluster.token)
    watcher, _ = await open_socket(cluster.b, session, cluster.token)
    await send(sender, type="message", content="[[chunks=40]] [[delay_ms=20]]")
    sent, watched = await asyncio.gather(timed_frames(sender), timed_frames(watcher))
    assert [f for _, f in watched] == [f for _, f in sent]
    frames = [f for _, f in watched]
    assert_contiguous(frames)
    assert frames[-1]["type"] == "done"
    assert frames[-1]["full_response"] == turn_text(frames) == "".join(
        f"tok{i} " for i in range(1, 41)
    )
    # Live: the watcher had the first chunk well before the sender had the end (40 x 20 ms).
    first_watched = next(t for t, f in watched if f["type"] == "chunk")
    assert first_watched < sent[-1][0] - 0.2
    await sender.close()
    await watcher.close()


async def test_a_second_message_on_the_other_waits_its_turn(cluster):
    session = new_session_id()
    first, _ = await open_socket(cluster.a, session, cluster.token)
    second, _ = await open_socket(cluster.b, session, cluster.token)
    await send(first, type="message", content="[[chunks=40]] [[delay_ms=20]]")
    assert (await recv(first))["type"] in ("chunk", "operator_status")
    await send(second, type="message", content="after you")
    frames = await frames_until(second, types=("operator_status",))
    assert frames[-1]["phase"] == "queued"
    # The second turn starts only after the first one's done, on the other process.
    frames = await frames_until(second, types=("done",))
    first_done = next(i for i, f in enumerate(frames) if f["type"] == "done")
    frames = frames[first_done + 1:] + await frames_until(second, types=("done",))
    assert frames[-1]["full_response"].startswith("Echo: after you")
    await frames_until(first)
    roles = [(role, content[:9]) for role, content, _ in saved_messages(cluster.database_url, session)]
    assert roles == [("user", "[[chunks="), ("assistant", "tok1 tok2"), ("user", "after you"),
                     ("assistant", "Echo: aft")]
    await first.close()
    await second.close()


async def test_a_reconnect_to_the_other_mid_turn_resumes_without_loss_or_duplicates(cluster):
    session = new_session_id()
    ws, _ = await open_socket(cluster.a, session, cluster.token)
    await send(ws, type="message", content="[[chunks=80]] [[delay_ms=15]]")
    early = [await recv(ws) for _ in range(10)]
    await ws.close()  # dropped mid-turn; the client moves to the other process
    turn_id = early[0]["turn_id"]
    last_seq = early[-1]["seq"]

    resumed, start = await open_socket(cluster.b, session, cluster.token, last_seq=last_seq)
    assert start["state"] == "running" and start["turn_id"] == turn_id
    rest = await frames_until(resumed)
    assert_contiguous(rest, first=last_seq + 1)
    whole = early + rest
    assert_contiguous(whole)
    assert rest[-1]["type"] == "done"
    assert turn_text(whole) == rest[-1]["full_response"] == "".join(
        f"tok{i} " for i in range(1, 81)
    )
    await resumed.close()


async def test_a_socket_without_last_seq_gets_the_whole_turn_from_the_other(cluster):
    session = new_session_id()
    ws, _ = await open_socket(cluster.a, session, cluster.token)
    await send(ws, type="message", content="[[chunks=60]] [[delay_ms=15]]")
    for _ in range(15):
        await recv(ws)
    late, start = await open_socket(cluster.b, session, cluster.token)
    assert start["state"] == "running"
    frames = await frames_until(late)
    assert_contiguous(frames)
    assert frames[-1]["full_response"] == turn_text(frames)
    await ws.close()
    await late.close()


async def test_stop_from_the_other_process(cluster):
    session = new_session_id()
    runner, _ = await open_socket(cluster.a, session, cluster.token)
    stopper, _ = await open_socket(cluster.b, session, cluster.token)
    await send(runner, type="message", content="[[chunks=400]] [[delay_ms=20]]")
    seen = [await recv(stopper) for _ in range(5)]
    await send(stopper, type="stop")
    rest = await frames_until(stopper)
    assert rest[-1]["type"] == "stopped", rest[-1]
    streamed = turn_text(seen + rest)
    assert rest[-1]["full_response"] == streamed
    assert 0 < streamed.count("tok") < 400
    assert (await frames_until(runner))[-1]["type"] == "stopped"
    messages = saved_messages(cluster.database_url, session)
    assert messages[-1][0] == "assistant" and messages[-1][1] == streamed
    assert messages[-1][2].get("stopped") is True
    assert session_state(cluster.database_url, session) == "idle"
    await runner.close()
    await stopper.close()


async def test_sigkill_of_the_turns_process_leaves_a_session_the_other_recovers(tmp_path):
    with pair_of_servers(tmp_path, CONSTRUCT_TURN_LEASE_SECONDS="2") as cluster:
        watched, queued = new_session_id(), new_session_id()
        runner, _ = await open_socket(cluster.a, watched, cluster.token)
        watcher, _ = await open_socket(cluster.b, watched, cluster.token)
        other, _ = await open_socket(cluster.a, queued, cluster.token)
        alone = new_session_id()
        lonely, _ = await open_socket(cluster.a, alone, cluster.token)
        await send(runner, type="message", content="[[chunks=2000]] [[delay_ms=10]]")
        await send(other, type="message", content="[[chunks=2000]] [[delay_ms=10]]")
        await send(lonely, type="message", content="[[chunks=2000]] [[delay_ms=10]]")
        seen = [await recv(watcher) for _ in range(20)]
        for _ in range(20):
            await recv(other)
            await recv(lonely)
        cluster.a.kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        # Nobody watched the other session; a message to it now waits for the
        # dead turn's lease to run out, then takes the session over.
        fresh, start = await open_socket(cluster.b, queued, cluster.token)
        assert start["state"] == "running"
        await send(fresh, type="message", content="take over")

        # A socket watching from the other process is told the turn ended, within a lease or two.
        rest = await frames_until(watcher, timeout=15)
        end = rest[-1]
        assert end["type"] == "error" and end["interrupted"] is True and end["code"] == "AGENT_ERROR"
        assert loop.time() - killed_at < 12
        frames = seen + rest
        assert_contiguous(frames)
        streamed = turn_text(frames)
        assert streamed.startswith("tok1 tok2 ")
        messages = saved_messages(cluster.database_url, watched)
        assert messages[0][:2] == ("user", "[[chunks=2000]] [[delay_ms=10]]")
        assert messages[1] == ("assistant", streamed, {"interrupted": True, "model": "mock-model"})
        assert session_state(cluster.database_url, watched) == "interrupted"
        # A session nobody watched, joined after the lease ran out: the join recovers
        # it, and session_start counts the streamed text it saved.
        rejoined, rejoin_start = await open_socket(cluster.b, alone, cluster.token)
        assert rejoin_start["state"] == "interrupted"
        assert rejoin_start["message_count"] == 2 == len(saved_messages(cluster.database_url, alone))
        await rejoined.close()
        await lonely.close()
        await send(watcher, type="message", content="still there?")
        assert (await frames_until(watcher))[-1]["full_response"].startswith("Echo: still there?")

        frames = await frames_until(fresh, types=("done",), timeout=15)
        assert frames[-1]["full_response"].startswith("Echo: take over")
        old_end = next(f for f in frames if f["type"] == "error")
        assert old_end["interrupted"] is True and old_end["turn_id"] == start["turn_id"]
        messages = saved_messages(cluster.database_url, queued)
        assert [m[0] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert messages[1][2] == {"interrupted": True, "model": "mock-model"}
        assert messages[1][1].startswith("tok1 tok2 ") and messages[2][1] == "take over"
        await watcher.close()
        await fresh.close()
        await runner.close()
        await other.close()


@pytest.mark.slow
async def test_sockets_behind_redis_stay_healthy_after_a_minute_idle(cluster):
    session = new_session_id()
    on_a, _ = await open_socket(cluster.a, session, cluster.token)
    on_b, _ = await open_socket(cluster.b, session, cluster.token)
    # Longer than redis-py's default socket timeout and than daphne's ping interval.
    await asyncio.sleep(65)
    nonce = uuid.uuid4().hex
    await asyncio.to_thread(post_channel_event, cluster.b, cluster.token, {"nonce": nonce})
    for ws in (on_a, on_b):
        await wait_for_event(ws, nonce)
    # The turn events' subscription survived the quiet minute too.
    await send(on_a, type="message", content="[[chunks=10]]")
    watched = await frames_until(on_b)
    assert watched[-1]["type"] == "done" and turn_text(watched) == watched[-1]["full_response"]
    await on_a.close()
    await on_b.close()
