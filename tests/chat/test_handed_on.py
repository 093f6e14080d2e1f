"""A draining process hands an accepted message on instead of refusing it: kept in the database,
acknowledged, and run once, whole, by a process that serves on (chat/turns/queue.py).

The engine without a socket (sinks are plain objects), on the loopback mock provider. A
second `Engine` stands for a second process on the same database.
"""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat import turns
from chat.turns.engine import Engine, get_engine
from construct_core.drain import drain_begin, drain_reset
from sessions_app import services
from sessions_app.models import ChatSession, ClientMessageId, Message, QueuedMessage
from tests.chat.conftest import wait_for
from tests.chat.test_turn_engine import Sink as FrameSink, owner_id

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = ("done", "error", "stopped")


class Sink(FrameSink):
    """A socket that also records how the engine closed it (1012: behind Redis, go elsewhere)."""

    closed_with = None

    async def close(self, code):
        self.closed_with = code


@pytest.fixture
def drain():
    """Start draining when the test says so; serve again afterwards."""
    yield drain_begin
    drain_reset()


def queued_rows(session_id):
    return list(QueuedMessage.objects.filter(session_id=session_id).values(
        "content", "client_id", "options", "turn_id"))


def saved(session_id, role):
    return list(Message.objects.filter(session_id=session_id, role=role).order_by("seq").values(
        "content", "data"))


async def frames_until(sink, predicate, timeout=20):
    async def seen():
        return any(predicate(frame) for frame in sink.frames)

    await wait_for(seen, timeout=timeout)
    return sink.frames


def tokens(n):
    return "".join(f"tok{i} " for i in range(1, n + 1))


async def test_a_draining_process_keeps_the_message_and_a_second_process_runs_it_once(gateway, drain):
    user = await owner_id()
    watcher = await turns.session_join(session_id="handoff", user_id=user, sink=Sink())
    drain()
    await turns.message_submit(watcher, content="[[chunks=5]] after the restart",
                               client_id="c-1", page_context="canvas")
    frames = await frames_until(watcher.sink, lambda f: f.get("phase") == "queued")
    assert frames[1:] == [
        {"type": "ack", "client_id": "c-1", "duplicate": False},
        {"type": "operator_status", "phase": "queued",
         "detail": "The server is restarting: the message is kept and runs after the restart"},
    ]
    # Behind Redis the socket goes to a process that serves on at once (closed just after
    # the frame, once the other processes are told of the message); alone, it stays.
    behind_redis = get_engine().bus is not None
    if behind_redis:
        async def sent_away():
            return watcher.sink.closed_with == 1012

        await wait_for(sent_away, timeout=10)
    # A resend is known: not kept twice.
    again = await turns.session_join(session_id="handoff", user_id=user, sink=Sink())
    await turns.message_submit(again, content="[[chunks=5]] after the restart", client_id="c-1")
    await frames_until(again.sink, lambda f: f.get("duplicate") is True)
    await asyncio.sleep(0.3)
    assert "chunk" not in watcher.sink.types() + again.sink.types()  # nothing runs here
    assert watcher.sink.closed_with == (1012 if behind_redis else None)
    rows = await database_sync_to_async(queued_rows)("handoff")
    assert rows == [{"content": "[[chunks=5]] after the restart", "client_id": "c-1",
                     "options": {"page_context": "canvas"}, "turn_id": ""}]
    assert await database_sync_to_async(saved)("handoff", "user") == []
    # Still draining: the process does not run it either.
    assert await get_engine().handed_on.pickup("handoff") is False

    drain_reset()
    other = Engine()  # another process, serving
    assert await other.handed_on.pickup("handoff") is True

    async def answered():
        return bool(await database_sync_to_async(saved)("handoff", "assistant"))

    await wait_for(answered, timeout=20)
    user_messages = await database_sync_to_async(saved)("handoff", "user")
    assert [m["content"] for m in user_messages] == ["[[chunks=5]] after the restart"]
    assert user_messages[0]["data"]["client_id"] == "c-1"
    assert user_messages[0]["data"]["page_context"] == "canvas"
    assert [m["content"] for m in await database_sync_to_async(saved)("handoff", "assistant")] == [tokens(5)]
    assert await database_sync_to_async(queued_rows)("handoff") == []

    async def idle():
        session = await database_sync_to_async(ChatSession.objects.get)(pk="handoff")
        return session.state == "idle" and not other.lock.busy("handoff")

    await wait_for(idle)
    assert await other.handed_on.pickup("handoff") is False  # once
    assert await database_sync_to_async(
        ClientMessageId.objects.filter(session_id="handoff", client_id="c-1").exists)()
    await turns.session_leave(watcher)
    await turns.session_leave(again)


async def test_after_the_restart_a_socket_that_joins_sees_the_handed_on_message_run(
        gateway, drain, monkeypatch):
    user = await owner_id()
    engine = get_engine()
    heard = []
    hear = engine.handed_on.heard
    monkeypatch.setattr(engine.handed_on, "heard", lambda: (heard.append(1), hear()))
    sender = await turns.session_join(session_id="handoff-join", user_id=user, sink=Sink())
    drain()
    await turns.message_submit(sender, content="[[chunks=8]] no client id")
    await frames_until(sender.sink, lambda f: f.get("phase") == "queued")
    await turns.session_leave(sender)
    # The process hears of the message twice: at once, and as every process does, through
    # the channel layer (behind Redis, a moment later). Heard after the process serves
    # again, that notice would start the message before the socket below joins (the
    # watchdog's round, which is right: it then joins an ended run, and reads it in its
    # history); this test is of a join that finds it waiting, so it waits for both.

    async def both_heard():
        return len(heard) >= 2

    await wait_for(both_heard, timeout=20)

    drain_reset()  # the process serves again (as after a restart on the same database)
    back = await turns.session_join(session_id="handoff-join", user_id=user, sink=Sink())
    frames = await frames_until(back.sink, lambda f: f["type"] in TERMINAL)
    events = [f for f in frames if "seq" in f]
    assert events[-1]["type"] == "done" and events[-1]["full_response"] == tokens(8)
    assert [f["seq"] for f in events] == list(range(1, len(events) + 1))
    assert [m["content"] for m in await database_sync_to_async(saved)("handoff-join", "user")] == [
        "[[chunks=8]] no client id"]
    await turns.session_leave(back)


async def test_messages_waiting_for_the_lock_when_the_drain_starts_are_handed_on_in_order(gateway, drain):
    user = await owner_id()
    watcher = await turns.session_join(session_id="handoff-wait", user_id=user, sink=Sink())
    await turns.message_submit(watcher, content="[[chunks=40]] [[delay_ms=50]] first")
    await frames_until(watcher.sink, lambda f: f["type"] == "chunk")
    await turns.message_submit(watcher, content="[[chunks=2]] second", client_id="c-2")
    await turns.message_submit(watcher, content="[[chunks=3]] third", client_id="c-3")

    def waiting():
        return sum(1 for f in watcher.sink.frames if f.get("detail", "").startswith("Waiting"))

    await frames_until(watcher.sink, lambda f: waiting() == 2)
    drain()
    frames = await frames_until(watcher.sink, lambda f: f["type"] in TERMINAL)
    assert frames[-1]["type"] == "done" and frames[-1]["full_response"] == tokens(40)
    await frames_until(watcher.sink, lambda f: sum(
        1 for g in watcher.sink.frames if g.get("detail", "").startswith("The server is restarting")) == 2)
    rows = await database_sync_to_async(queued_rows)("handoff-wait")
    assert [(r["content"], r["client_id"]) for r in rows] == [
        ("[[chunks=2]] second", "c-2"), ("[[chunks=3]] third", "c-3")]
    assert not any(f.get("code") for f in watcher.sink.frames)  # nothing refused

    drain_reset()
    other = Engine()
    assert await other.handed_on.pickup("handoff-wait") is True

    async def both():
        return len(await database_sync_to_async(saved)("handoff-wait", "assistant")) == 3

    await wait_for(both, timeout=20)  # the second's end starts the third
    assert [m["content"] for m in await database_sync_to_async(saved)("handoff-wait", "user")] == [
        "[[chunks=40]] [[delay_ms=50]] first", "[[chunks=2]] second", "[[chunks=3]] third"]
    assert [m["content"] for m in await database_sync_to_async(saved)("handoff-wait", "assistant")] == [
        tokens(40), tokens(2), tokens(3)]
    await turns.session_leave(watcher)


async def test_two_processes_racing_claim_a_handed_on_message_once(gateway, drain):
    user = await owner_id()
    watcher = await turns.session_join(session_id="handoff-race", user_id=user, sink=Sink())
    drain()
    await turns.message_submit(watcher, content="[[chunks=4]] [[delay_ms=30]] once", client_id="r-1")
    await frames_until(watcher.sink, lambda f: f.get("phase") == "queued")
    drain_reset()
    first, second = Engine(), Engine()
    won = await asyncio.gather(*(engine.handed_on.pickup("handoff-race")
                                 for engine in (first, second, first, second)))
    assert sorted(won) == [False, False, False, True]

    async def answered():
        return bool(await database_sync_to_async(saved)("handoff-race", "assistant"))

    await wait_for(answered, timeout=20)
    await asyncio.sleep(0.3)
    assert len(await database_sync_to_async(saved)("handoff-race", "user")) == 1
    assert len(await database_sync_to_async(saved)("handoff-race", "assistant")) == 1
    await turns.session_leave(watcher)


def test_a_claim_whose_process_died_before_saving_the_message_is_claimed_again(gateway):
    user = services.default_owner()
    services.session_open(session_id="handoff-dead", user_id=user.pk)
    queued_id = services.queued_add(session_id="handoff-dead", user_id=user.pk, client_id=None,
                                    content="hello", options={}, depth=8)
    row, taken_over = services.queued_claim(session_id="handoff-dead", turn_id="t-1", owner="p1",
                                            lease_seconds=30)
    assert row.pk == queued_id and taken_over is None
    # Held by t-1's live lease: nobody else gets it.
    assert services.queued_claim(session_id="handoff-dead", turn_id="t-2", owner="p2",
                                 lease_seconds=30) == (None, None)
    # p1 dies: its lease runs out; the message is claimed again, and the dead turn ended.
    ChatSession.objects.filter(pk="handoff-dead").update(lease_expires_at=None)
    row, taken_over = services.queued_claim(session_id="handoff-dead", turn_id="t-3", owner="p3",
                                            lease_seconds=30)
    assert row.pk == queued_id and taken_over == {"turn_id": "t-1", "owner": "p1"}
    # The dead turn cannot save it any more; the live one saves it and forgets it, at once.
    with pytest.raises(services.SessionBusy):
        services.queued_message_append(queued_id=queued_id, session_id="handoff-dead", turn_id="t-1",
                                       role="user", content="hello")
    services.queued_message_append(queued_id=queued_id, session_id="handoff-dead", turn_id="t-3",
                                   role="user", content="hello")
    assert not QueuedMessage.objects.filter(session_id="handoff-dead").exists()
    assert Message.objects.filter(session_id="handoff-dead").count() == 1
