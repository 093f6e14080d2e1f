"""The turns' events where every server process can read them: Redis.

With one process (no REDIS_URL) this process's memory is the whole story: a
running turn's events are in its replay (chat/turns/fanout.py). With several processes behind one
Redis, a socket may connect to a process that does not run its session's turn,
so each turn's events are also kept, briefly and bounded, in a Redis list
`construct:turn:<turn_id>`, and each window of events is published on a Redis
channel of the session that the processes with sockets on it subscribe to.

A process writes both in one pipeline per flush window (see chat/turns/fanout.py), the
list before the channel. A socket subscribes before it reads the list, so an
event is in what it reads, in what it is sent afterwards, or in both (the
socket drops a seq it has already sent): nothing falls in between.

Each process also listens on a control channel of its own, by which another
process asks it to stop a turn it runs (its id is the session's `turn_owner`).

Pub/sub channel names are global to a Redis server, not per database, so they
carry a namespace derived from the gateway's database: the processes of one
gateway share one database, and two gateways (or two test runs) that share a
Redis never hear each other.
"""

import asyncio
import hashlib
import json
import logging
from collections import deque

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from construct_core.loops import per_loop

logger = logging.getLogger(__name__)

# A turn's list outlives the turn by this long: enough for any reconnect.
LOG_TTL_SECONDS = 600
# The newest events kept per turn; older ones are dropped from the head.
LOG_MAX_EVENTS = 50_000
# Re-arm a running turn's TTL at most this often, not at every window.
_EXPIRE_EVERY = 60.0
_MAX_TRACKED_TURNS = 10_000
SUBSCRIBE_TIMEOUT = 5.0
# A Redis command that takes longer than this is treated as a failure.
OPERATION_TIMEOUT = 3.0
# After Redis failed to answer, how long to go on without it before trying again.
RETRY_DELAY = 2.0
_SEP = b"|"


class BusDown(Exception):
    """Redis did not answer a moment ago; the process works with its local sockets only."""


def log_key(turn_id: str) -> str:
    return f"construct:turn:{turn_id}"


def namespace() -> str:
    """What the processes of one gateway share: its database."""
    db = connection.settings_dict
    ident = "|".join(str(db.get(k) or "") for k in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def session_channel(ns: str, session_id: str) -> bytes:
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:40]
    return f"construct:{ns}:session:{digest}".encode()


def control_channel(ns: str, process_id: str) -> bytes:
    return f"construct:{ns}:control:{process_id}".encode()


def shared_log_enabled() -> bool:
    """Several processes can exist only behind Redis (and the Redis channel layer)."""
    layer = get_channel_layer()
    return (bool(settings.REDIS_URL) and layer is not None
            and layer.__class__.__name__ != "InMemoryChannelLayer")


def _redis_client():
    import redis.asyncio as aioredis

    # No socket_timeout: the pub/sub connection blocks on a quiet channel for
    # as long as it likes (redis-py 8 would cut it after 5 s); a dead peer is
    # found by TCP keepalive and the health check instead.
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=None, socket_connect_timeout=5,
        socket_keepalive=True, health_check_interval=30,
    )


# One client per event loop: a connection cannot move between loops.
get_redis = per_loop(_redis_client)


async def log_read(turn_id: str, after_seq: int = 0) -> list[dict]:
    """A turn's events with seq above `after_seq`, oldest first, from Redis."""
    raw = await asyncio.wait_for(get_redis().lrange(log_key(turn_id), 0, -1), OPERATION_TIMEOUT)
    events = []
    for item in raw:
        event = json.loads(item)
        if event.get("seq", 0) > after_seq:
            events.append(event)
    return events


class RedisBus:
    """One process's link to the others: turn logs, session channels, its control channel.

    `on_batch(session_id, events)` is awaited for each window of events another
    process published on a session subscribed here; `on_control(message)` for
    each control message sent to this process.
    """

    def __init__(self, *, process_id: str, on_batch, on_control):
        self.process_id = process_id
        self.origin = process_id.encode()
        self.ns = namespace()
        self.redis = get_redis()
        self._on_batch = on_batch
        self._on_control = on_control
        self._pubsub = None
        self._reader: asyncio.Task | None = None
        self._starting: asyncio.Future | None = None
        self._retry_at = 0.0
        self._channels: dict[bytes, str] = {}  # subscribed channel -> session id
        self._confirm: dict[bytes, deque] = {}  # channel -> futures waiting for "subscribe"
        self._control = control_channel(self.ns, process_id)
        self._expired_at: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    # --- Life cycle ----------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to this process's control channel and start reading (once).

        Raises when Redis cannot be reached; after a failure, calls within
        RETRY_DELAY fail at once, so an outage does not slow every socket down.
        """
        if self._reader is not None:
            return
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise BusDown("Redis was unreachable a moment ago")
        self._starting = loop.create_future()
        try:
            pubsub = self.redis.pubsub()
            # Sessions watched while Redis was down are subscribed now too.
            channels = [self._control, *self._channels]
            waiter = self._expect(self._control)
            try:
                await asyncio.wait_for(pubsub.subscribe(*channels), OPERATION_TIMEOUT)
            except BaseException:
                self._forget(self._control, waiter)
                raise
            self._pubsub = pubsub
            self._reader = loop.create_task(self._read_loop())
            await self._confirmed(waiter, self._control)
        except BaseException as exc:
            self._retry_at = loop.time() + RETRY_DELAY
            starting, self._starting = self._starting, None
            if isinstance(exc, Exception):
                starting.set_exception(exc)
                starting.exception()  # retrieved: whoever waits gets it raised
            else:
                starting.cancel()
            raise
        starting, self._starting = self._starting, None
        starting.set_result(None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._pubsub is not None:
            await self._pubsub.aclose()

    # --- Sessions ------------------------------------------------------------

    async def watch(self, session_id: str) -> None:
        """Subscribe to a session's channel; return once Redis confirms it.

        Raises when Redis cannot be reached; the session stays on the list and
        is subscribed when Redis answers again.
        """
        channel = session_channel(self.ns, session_id)
        self._channels[channel] = session_id
        await self.start()
        waiter = self._expect(channel)
        try:
            await asyncio.wait_for(self._pubsub.subscribe(channel), OPERATION_TIMEOUT)
        except BaseException:
            self._forget(channel, waiter)
            raise
        await self._confirmed(waiter, channel)

    async def unwatch(self, session_id: str) -> None:
        channel = session_channel(self.ns, session_id)
        if self._channels.pop(channel, None) is not None and self._pubsub is not None:
            await asyncio.wait_for(self._pubsub.unsubscribe(channel), OPERATION_TIMEOUT)

    def _forget(self, channel: bytes, waiter: asyncio.Future) -> None:
        waiters = self._confirm.get(channel)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._confirm[channel]

    def _expect(self, channel: bytes) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, deque()).append(future)
        return future

    async def _confirmed(self, future: asyncio.Future, channel: bytes) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(future), SUBSCRIBE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("Redis did not confirm the subscription to %s in time", channel)

    # --- Publishing ----------------------------------------------------------

    async def flush(self, outbox: dict[str, list[tuple[dict, str]]]) -> None:
        """One window of every session's events: appended to the turn logs, then published.

        One pipeline, one round trip, whatever the number of sessions and events.
        """
        loop_time = asyncio.get_running_loop().time()
        if len(self._counts) > _MAX_TRACKED_TURNS:
            # Turns that ended elsewhere (interrupted ones) are never turn_done() here.
            self._counts.clear()
            self._expired_at.clear()
        pipe = self.redis.pipeline(transaction=False)
        for session_id, items in outbox.items():
            by_turn: dict[str, list[str]] = {}
            for event, text in items:
                # A frame of no turn (a `history` frame) is published, not kept in a turn log.
                if event.get("turn_id") is not None:
                    by_turn.setdefault(event["turn_id"], []).append(text)
            for turn_id, texts in by_turn.items():
                key = log_key(turn_id)
                pipe.rpush(key, *texts)
                count = self._counts.get(turn_id, 0) + len(texts)
                self._counts[turn_id] = count
                if count > LOG_MAX_EVENTS:
                    pipe.ltrim(key, -LOG_MAX_EVENTS, -1)
                if loop_time - self._expired_at.get(turn_id, -_EXPIRE_EVERY) >= _EXPIRE_EVERY:
                    self._expired_at[turn_id] = loop_time
                    pipe.expire(key, LOG_TTL_SECONDS)
            body = ",".join(text for _event, text in items)
            pipe.publish(
                session_channel(self.ns, session_id), self.origin + _SEP + f"[{body}]".encode()
            )
        await asyncio.wait_for(pipe.execute(), OPERATION_TIMEOUT)

    def turn_done(self, turn_id: str) -> None:
        """Forget the per-turn bookkeeping of a turn that ended here."""
        self._counts.pop(turn_id, None)
        self._expired_at.pop(turn_id, None)

    async def send_control(self, process_id: str, message: dict) -> int:
        """Send a control message to one process; the number of processes that heard it."""
        return await asyncio.wait_for(
            self.redis.publish(control_channel(self.ns, process_id), json.dumps(message).encode()),
            OPERATION_TIMEOUT,
        )

    # --- Reading -------------------------------------------------------------

    async def _read_loop(self) -> None:
        failed = False
        while True:
            try:
                if failed:
                    await self._resubscribe()
                    failed = False
                message = await self._pubsub.get_message(timeout=None)
                if message is not None:
                    await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # redis-py reconnects and subscribes again on the next read;
                # what was published meanwhile is found later in the turn logs.
                if not failed:
                    logger.warning("Redis subscription failed, retrying: %s", exc)
                failed = True
                await asyncio.sleep(RETRY_DELAY)

    async def _resubscribe(self) -> None:
        """Subscribe to the sessions whose subscription failed while Redis was away."""
        missing = [channel for channel in self._channels if channel not in self._pubsub.channels]
        if missing:
            await asyncio.wait_for(self._pubsub.subscribe(*missing), OPERATION_TIMEOUT)

    async def _handle(self, message: dict) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            data = message["data"]
            if channel == self._control:
                await self._on_control(json.loads(data))
                return
            session_id = self._channels.get(channel)
            origin, _, payload = data.partition(_SEP)
            if session_id is None or origin == self.origin:
                return  # our own window, or a session nobody here watches any more
            await self._on_batch(session_id, json.loads(payload))
        elif kind == "subscribe":
            waiters = self._confirm.get(channel)
            if waiters:
                future = waiters.popleft()
                if not waiters:
                    del self._confirm[channel]
                if not future.done():
                    future.set_result(None)
