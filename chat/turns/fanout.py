"""Where a turn's events go: every socket of the session, here and on other processes.

Measured here: a channels-redis `group_send` per streamed chunk runs at about a
hundredth of a direct send. So a turn hands each event to the sockets of its
session on this process directly, and only other processes get the events
through Redis (chat/turns/bus.py), coalesced into one pipeline per short
window for all sessions. With the in-process layer there are no other
processes and nothing goes there.

Each socket is a `Subscriber`: it gets the frames of its session in order and
each turn event once (a seq it has already sent is dropped), and a socket that
fails to send fails alone: the turn and the session's other sockets never see
it. Fan-out also keeps the running turn's events, so a socket that joins
mid-turn is replayed what it missed.
"""

import asyncio
import json
import logging
from typing import Protocol

import orjson

from chat.turns import bus as bus_module
from construct_core import metrics

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.03
MAX_REPLAY_EVENTS = bus_module.LOG_MAX_EVENTS
TERMINAL_TYPES = frozenset({"done", "error", "stopped"})
# Turns a subscriber remembers the last seq of; older ones cannot send any more.
_SEEN_TURNS = 16

# One encoder for what orjson refuses: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value) -> str:
    """An event as compact JSON text. orjson: a tenth of json's time per event (measured)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a key that is not a str, a lone surrogate, an int past 64 bits: as json does
        return _encode(value)


class Sink(Protocol):
    """A socket, as fan-out sees it."""

    async def send_text(self, text: str) -> None:
        """Send one text frame; raises when the socket is gone."""

    async def close(self, code: int) -> None:
        """Close the socket with `code` (a draining process sends its sockets away)."""

    async def relay(self, message: dict, text: str | None = None) -> None:
        """A channel-layer message for this socket: `channel.event`, `operator.event` or
        `device.revoked` (the process hears them once and relays them, see Fanout.relay);
        `text`, for the two events, is the `agent_event` frame to send, encoded once."""


class Subscriber:
    """One socket of a session: its frames in order, each turn event once.

    Until `open` has sent the session_start frame and the replay, live events
    are held back, so a socket that joins mid-turn misses nothing and sees
    nothing twice. A send that fails closes this subscriber only.
    """

    def __init__(self, session_id: str, user_id: int, sink: Sink, is_staff: bool = False):
        self.session_id = session_id
        self.user_id = user_id
        self.is_staff = is_staff
        self.sink = sink
        self.ready = False
        self.closed = False
        # False while the session has no row yet (a new id): its first message stores it.
        self.stored = True
        self.new_name: str | None = None
        self._held: list[tuple[dict, str | None]] = []
        self._seen: dict[str, int] = {}

    def skip_through(self, turn_id: str, seq: int) -> None:
        """The client has the events of `turn_id` up to `seq` already."""
        self._seen[turn_id] = seq

    async def open(self, first: dict, replay: list[dict]) -> None:
        """Send `first` (session_start), the replay, then what arrived meanwhile; live from then on."""
        await self._send(dumps(first))
        for event in replay:
            await self._send_event(event, None)
        while self._held:
            held, self._held = self._held, []
            for event, text in held:
                await self._send_event(event, text)
        self.ready = True

    async def deliver(self, event: dict, text: str | None) -> None:
        """One event of the session's turns (fan-out calls this)."""
        if self.closed:
            return
        if not self.ready:
            self._held.append((event, text))
            return
        await self._send_event(event, text)

    async def send_frame(self, frame: dict) -> None:
        """A frame for this socket alone (an ack, a refusal, a queue status)."""
        metrics.error_sent(frame)
        await self._send(dumps(frame))

    async def _send_event(self, event: dict, text: str | None) -> None:
        turn_id, seq = event.get("turn_id"), event.get("seq")
        if turn_id is not None and seq is not None:
            if seq <= self._seen.get(turn_id, 0):
                return
            self._seen[turn_id] = seq
            if len(self._seen) > _SEEN_TURNS:
                del self._seen[next(iter(self._seen))]
        await self._send(text if text is not None else dumps(event))

    async def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.sink.send_text(text)
        except Exception as exc:  # the transport closed before the socket left: its own loss
            self.closed = True
            logger.debug("socket of session %s gone mid-send: %r", self.session_id, exc)


class _Replay:
    """The events of a session's running turn so far, for sockets that join late."""

    __slots__ = ("turn_id", "events")

    def __init__(self, turn_id: str):
        self.turn_id = turn_id
        self.events: list[dict] = []


class Fanout:
    """The subscribers of this process by session, the running turns' replay, the outbox to Redis."""

    def __init__(self, bus: "bus_module.RedisBus | None" = None):
        self.bus = bus
        self._subscribers: dict[str, set[Subscriber]] = {}
        # The same subscribers by user, and the staff ones: for the channel layer's messages.
        self._by_user: dict[int, set[Subscriber]] = {}
        self._staff: set[Subscriber] = set()
        self._replays: dict[str, _Replay] = {}
        self._outbox: dict[str, list[tuple[dict, str]]] = {}
        self._flusher: asyncio.Task | None = None

    # --- Subscribers -------------------------------------------------------------

    def attach(self, session_id: str, user_id: int, sink: Sink, is_staff: bool = False) -> Subscriber:
        subscriber = Subscriber(session_id, user_id, sink, is_staff)
        self._subscribers.setdefault(session_id, set()).add(subscriber)
        self._by_user.setdefault(user_id, set()).add(subscriber)
        if is_staff:
            self._staff.add(subscriber)
        return subscriber

    def detach(self, subscriber: Subscriber) -> bool:
        """Forget a subscriber; True when it was the session's last one here."""
        subscriber.closed = True
        self._staff.discard(subscriber)
        mine = self._by_user.get(subscriber.user_id)
        if mine is not None:
            mine.discard(subscriber)
            if not mine:
                del self._by_user[subscriber.user_id]
        subscribers = self._subscribers.get(subscriber.session_id)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        del self._subscribers[subscriber.session_id]
        return True

    def watched(self, session_id: str) -> bool:
        return session_id in self._subscribers

    def sessions(self) -> list[str]:
        """The sessions with subscribers here."""
        return list(self._subscribers)

    def subscribers(self, session_id: str) -> list[Subscriber]:
        return list(self._subscribers.get(session_id, ()))

    async def relay(self, message: dict) -> None:
        """A message of the process groups (sessions_app.events) to the sockets it is for here:
        an operator event to its user's and staff sockets, a channel event with a `user_id` to
        that user's, any other (a staff operator's channel event, a revoked device) to all."""
        kind, user_id = message.get("type"), message.get("user_id")
        if kind == "operator.event":
            targets = self._staff | self._by_user.get(user_id, set())
        elif kind == "channel.event" and user_id is not None:
            targets = set(self._by_user.get(user_id, ()))
        elif kind in ("channel.event", "device.revoked"):
            targets = {s for subscribers in self._subscribers.values() for s in subscribers}
        else:
            return
        # A turn's start and end go to every socket of its user: encoded once, not per socket.
        text = dumps({"type": "agent_event", "event": message.get("event")}) \
            if kind != "device.revoked" else None
        for subscriber in targets:
            if subscriber.closed or not subscriber.ready:
                # A socket that has not had its session_start yet gets none: nothing goes
                # before that frame (a page loads the events it missed when it opens).
                continue
            try:
                await subscriber.sink.relay(message, text)
            except Exception as exc:  # one socket's failure is its own
                logger.debug("could not relay %s to a socket of session %s: %r", kind,
                             subscriber.session_id, exc)

    # --- The running turns' replay -----------------------------------------------

    def turn_open(self, session_id: str, turn_id: str, events=()) -> None:
        """A turn runs here from now on; `events` it sent before (on another process) start its replay."""
        replay = self._replays[session_id] = _Replay(turn_id)
        replay.events.extend(events[-MAX_REPLAY_EVENTS:])

    def turn_close(self, session_id: str, turn_id: str) -> None:
        replay = self._replays.get(session_id)
        if replay is not None and replay.turn_id == turn_id:
            del self._replays[session_id]

    def replay(self, session_id: str) -> tuple[str, list[dict]] | None:
        """(turn id, events so far) of the turn this process runs on the session, if any."""
        replay = self._replays.get(session_id)
        return None if replay is None else (replay.turn_id, replay.events)

    # --- Events ------------------------------------------------------------------

    async def publish(self, session_id: str, event: dict) -> None:
        """One of a turn's events, to every subscriber of the session, here and elsewhere."""
        replay = self._replays.get(session_id)
        if replay is not None and replay.turn_id == event.get("turn_id"):
            if len(replay.events) >= MAX_REPLAY_EVENTS:
                del replay.events[0]
            replay.events.append(event)
        text = dumps(event)
        # Counted once, here, where it is made; other processes only pass it on (deliver_local).
        metrics.error_sent(event)
        await self._deliver(session_id, event, text)
        if self.bus is not None:
            self._outbox.setdefault(session_id, []).append((event, text))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def deliver_local(self, session_id: str, events: list[dict]) -> None:
        """Events another process published, to this process's subscribers only."""
        for event in events:
            await self._deliver(session_id, event, dumps(event))

    async def _deliver(self, session_id: str, event: dict, text: str) -> None:
        subscribers = self._subscribers.get(session_id)
        if subscribers:
            for subscriber in tuple(subscribers):
                await subscriber.deliver(event, text)

    async def _flush_loop(self) -> None:
        while self._outbox:
            await asyncio.sleep(FLUSH_INTERVAL)
            outbox, self._outbox = self._outbox, {}
            try:
                await self.bus.flush(outbox)
            except Exception as exc:  # a lost window must not end a turn; local sockets have it
                logger.warning("could not publish a window of turn events: %r", exc)

    async def flush(self) -> None:
        """Send what waits for other processes now (at the end of a turn)."""
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
