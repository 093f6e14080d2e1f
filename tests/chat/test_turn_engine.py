"""The turn engine without a socket: sinks are plain objects, the provider is the loopback mock.

A socket whose transport closed before it left the session (the consumer's
`disconnect` not called yet) raises on send. That failure is the sink's own:
the turn goes on, its reply is saved once, and the session's other sockets
get every event and the end.
"""

import json
import random

import pytest
from channels.db import database_sync_to_async

from chat import turns
from chat.turns.engine import get_engine
from sessions_app import services
from sessions_app.models import ChatSession, Message
from tests.chat.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


async def owner_id():
    return (await database_sync_to_async(services.default_owner)()).pk


class Gone(Exception):
    """What a closed transport raises (autobahn's Disconnected, in daphne)."""


class Sink:
    """A socket as the engine sees it; `fail_after` frames it raises, like a dropped transport."""

    def __init__(self, fail_after=None):
        self.frames = []
        self.fail_after = fail_after

    async def send_text(self, text):
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise Gone("the transport closed")
        self.frames.append(json.loads(text))

    def types(self):
        return [frame["type"] for frame in self.frames]


async def run_turn(watcher, content, session_id="engine"):
    """Send `content` from a joined watcher and wait for the turn's end on it."""
    count = len(watcher.sink.frames)
    await turns.message_submit(watcher, content=content)

    async def ended():
        return any(frame["type"] in ("done", "error", "stopped") for frame in watcher.sink.frames[count:])

    await wait_for(ended, timeout=20)
    return watcher.sink.frames[count:]


async def test_a_sink_that_fails_mid_turn_fails_alone(gateway):
    watcher = await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink())
    dropped = await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink(fail_after=4))
    # Paced, so each delta is a frame of its own (deltas read together leave as one).
    frames = await run_turn(watcher, "[[chunks=30]] [[delay_ms=5]] hello")
    assert [f["type"] for f in frames][-2:] == ["chunk_reset", "done"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert dropped.closed and len(dropped.sink.frames) == 4
    session = await database_sync_to_async(ChatSession.objects.get)(pk="engine")
    assert session.state == "idle"
    replies = await database_sync_to_async(
        lambda: list(Message.objects.filter(session_id="engine", role="assistant").values_list("content", flat=True))
    )()
    assert replies == [frames[-1]["full_response"]]
    await turns.session_leave(dropped)
    await turns.session_leave(watcher)


async def test_sinks_dropped_at_random_points_of_many_turns_never_end_a_turn(gateway):
    """The soak's finding, compressed: 40 turns, a socket dropped at a random point of each."""
    rng = random.Random(20261130)
    watcher = await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink())
    for index in range(40):
        doomed = [await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink(fail_after=rng.randint(0, 25)))
                  for _ in range(3)]
        frames = await run_turn(watcher, f"[[chunks={rng.randint(5, 30)}]] turn {index}")
        assert frames[-1]["type"] == "done", frames[-1]
        assert frames[-1]["full_response"].startswith("tok1 ")
        for subscriber in doomed:
            await turns.session_leave(subscriber)
    assert get_engine().fanout.watched("engine")
    count = await database_sync_to_async(Message.objects.filter(session_id="engine").count)()
    assert count == 80
    await turns.session_leave(watcher)
    assert not get_engine().fanout.watched("engine")


async def test_a_socket_that_joins_mid_turn_gets_start_then_replay_then_live(gateway):
    watcher = await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink())
    await turns.message_submit(watcher, content="[[chunks=20]] [[delay_ms=20]] slow")

    async def streaming():
        return watcher.sink.types().count("chunk") >= 5

    await wait_for(streaming)
    late = await turns.session_join(session_id="engine", user_id=await owner_id(), sink=Sink())

    async def ended():
        return "done" in late.sink.types()

    await wait_for(ended, timeout=20)
    start, *events = late.sink.frames
    assert start["type"] == "session_start" and start["state"] == "running"
    assert [f["seq"] for f in events] == list(range(1, len(events) + 1))
    assert events == [f for f in watcher.sink.frames if f["type"] != "session_start"]
    await turns.session_leave(late)
    await turns.session_leave(watcher)


def test_events_encode_as_compact_json_text_whatever_they_hold():
    from chat.turns.fanout import dumps

    event = {"type": "chunk", "content": "é ✓ \u2028 \"q\"\n", "turn_id": "t", "seq": 1}
    assert dumps(event) == json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    # What orjson refuses (a key that is not a str, a lone surrogate, a huge int) encodes as json does.
    odd = {"type": "tool_result", "output": {1: "one"}, "id": 2**70, "text": "\ud800"}
    assert dumps(odd) == json.dumps(odd, ensure_ascii=False, separators=(",", ":"))
