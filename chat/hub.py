"""Where a turn's events go: straight to this process's sockets, batched to the others.

Measured here: a channels-redis `group_send` per streamed chunk runs at about a
hundredth of a direct send. So a turn hands each event to the sockets of its
session on this process directly, and only other processes get the events
through the channel layer, coalesced into one message per short window. With
the in-process layer there are no other processes and nothing goes through it.

The hub also keeps each running turn's events so far, so a socket that
connects mid-turn can be replayed what it missed.
"""

import asyncio
import json
import logging
import uuid
import weakref
from dataclasses import dataclass, field

from channels.layers import get_channel_layer

from chat import events

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.03
MAX_REPLAY_EVENTS = 50_000


@dataclass
class RunningTurn:
    turn_id: str
    task: asyncio.Task | None = None
    events: list = field(default_factory=list)
    truncated: bool = False
    # Only while the agent streams may a stop cancel the task: its bookkeeping
    # afterwards (saving, freeing the session) must run to the end.
    cancellable: bool = False


def dumps(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class Hub:
    """The sockets and the running turns of one process, by session."""

    def __init__(self):
        self.process_id = "p" + uuid.uuid4().hex[:16]
        self._sockets: dict[str, set] = {}
        self._turns: dict[str, RunningTurn] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._outbox: dict[str, list] = {}
        self._flusher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- Sockets -----------------------------------------------------------

    def attach(self, session_id: str, sink) -> None:
        self._sockets.setdefault(session_id, set()).add(sink)

    def detach(self, session_id: str, sink) -> None:
        sinks = self._sockets.get(session_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self._sockets[session_id]

    def socket_count(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    # --- Turns -------------------------------------------------------------

    def spawn(self, session_id: str, coro) -> asyncio.Task:
        """Run a message's work as a task owned by the hub, not by the socket that sent it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def turn_begin(self, session_id: str, turn_id: str) -> RunningTurn:
        turn = RunningTurn(turn_id=turn_id, task=asyncio.current_task())
        self._turns[session_id] = turn
        return turn

    def turn_end(self, session_id: str, turn_id: str) -> None:
        turn = self._turns.get(session_id)
        if turn is not None and turn.turn_id == turn_id:
            del self._turns[session_id]
        wakeup = self._wakeups.pop(session_id, None)
        if wakeup is not None:
            wakeup.set()

    def running(self, session_id: str) -> RunningTurn | None:
        return self._turns.get(session_id)

    def replay(self, session_id: str, turn_id: str | None = None, after_seq: int = 0) -> list[dict]:
        """The running turn's events after `after_seq`, for a socket that arrives late."""
        turn = self._turns.get(session_id)
        if turn is None or (turn_id is not None and turn.turn_id != turn_id):
            return []
        return [event for event in turn.events if event["seq"] > after_seq]

    async def wait_turn_end(self, session_id: str, timeout: float) -> None:
        """Sleep until a turn of this session ends here, or `timeout` passes."""
        wakeup = self._wakeups.setdefault(session_id, asyncio.Event())
        try:
            await asyncio.wait_for(wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def stop(self, session_id: str) -> bool:
        turn = self._turns.get(session_id)
        if turn is None or turn.task is None or turn.task.done() or not turn.cancellable:
            return False
        turn.task.cancel()
        return True

    # --- Events ------------------------------------------------------------

    async def publish(self, session_id: str, event: dict) -> None:
        """Send one of a turn's events to every socket of the session, here and elsewhere."""
        turn = self._turns.get(session_id)
        if turn is not None and turn.turn_id == event.get("turn_id"):
            if len(turn.events) >= MAX_REPLAY_EVENTS:
                turn.events.pop(0)
                turn.truncated = True
            turn.events.append(event)
        text = dumps(event)
        for sink in tuple(self._sockets.get(session_id, ())):
            await sink.deliver(event, text)
        if remote_fanout_enabled():
            self._outbox.setdefault(session_id, []).append(event)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def deliver_remote(self, session_id: str, batch: list[dict]) -> None:
        """Events another process published for a session with sockets here."""
        for event in batch:
            text = dumps(event)
            for sink in tuple(self._sockets.get(session_id, ())):
                await sink.deliver(event, text)

    async def _flush_loop(self) -> None:
        while self._outbox:
            await asyncio.sleep(FLUSH_INTERVAL)
            outbox, self._outbox = self._outbox, {}
            for session_id, batch in outbox.items():
                await events.publish_turn_batch(session_id, self.process_id, batch)

    async def flush(self) -> None:
        """Send what waits for other processes now (at the end of a turn)."""
        if self._flusher is not None and not self._flusher.done():
            await self._flusher


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; one per test loop)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def remote_fanout_enabled() -> bool:
    """Other processes exist only behind a shared (Redis) channel layer."""
    layer = get_channel_layer()
    return layer is not None and layer.__class__.__name__ != "InMemoryChannelLayer"
