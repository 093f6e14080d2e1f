"""Where a turn's events go: straight to this process's sockets, batched to the others.

Measured here: a channels-redis `group_send` per streamed chunk runs at about a
hundredth of a direct send. So a turn hands each event to the sockets of its
session on this process directly, and only other processes get the events
through Redis, coalesced into one pipeline per short window for all sessions.
With the in-process layer there are no other processes and nothing goes there.

The hub also keeps each running turn's events so far, so a socket that
connects mid-turn can be replayed what it missed. Behind Redis the same window
also goes to the turn's shared log (chat/turnlog.py), which is what a socket on
another process is replayed from, and the hub keeps an eye on the turns its
sockets watch but another process runs: if that process dies, the turn is
ended as interrupted here.
"""

import asyncio
import json
import logging
import uuid
import weakref
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from chat import turnlog
from sessions_app import services

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.03
MAX_REPLAY_EVENTS = turnlog.LOG_MAX_EVENTS
TERMINAL_TYPES = frozenset({"done", "error", "stopped"})


@dataclass
class RunningTurn:
    turn_id: str
    task: asyncio.Task | None = None
    events: list = field(default_factory=list)
    truncated: bool = False
    # Only while the agent streams may a stop cancel the task: its bookkeeping
    # afterwards (saving, freeing the session) must run to the end.
    cancellable: bool = False


@dataclass
class RemoteTurn:
    """A turn another process runs, watched by sockets here: how far it got, and when."""

    turn_id: str
    seq: int
    seen_at: float


# One encoder for every event: json.dumps with options builds a new one per call.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
        self._shared: bool | None = None
        self._bus: turnlog.RedisBus | None = None
        self._remote: dict[str, RemoteTurn] = {}
        self._watchdog: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes exist (Redis): decided once, off the per-event path."""
        if self._shared is None:
            self._shared = turnlog.shared_log_enabled()
        return self._shared

    @property
    def bus(self) -> "turnlog.RedisBus | None":
        if self._bus is None and self.shared:
            self._bus = turnlog.RedisBus(
                process_id=self.process_id, on_batch=self.deliver_remote, on_control=self._control
            )
        return self._bus

    async def ready(self) -> None:
        """Be reachable by other processes (to stop a turn) before owning one."""
        if self.bus is not None:
            try:
                await self.bus.start()
            except Exception as exc:  # Redis away: the turn still runs for this process's sockets
                logger.warning("Redis unreachable; a stop from another process cannot reach "
                               "this turn: %s", exc)

    # --- Sockets -----------------------------------------------------------

    def attach(self, session_id: str, sink) -> None:
        self._sockets.setdefault(session_id, set()).add(sink)

    def detach(self, session_id: str, sink) -> None:
        sinks = self._sockets.get(session_id)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self._sockets[session_id]
                self._remote.pop(session_id, None)
                if self.bus is not None:
                    self.spawn(session_id, self._unwatch(session_id))

    async def watch(self, session_id: str) -> None:
        """Hear the session's events from other processes from now on (after attach)."""
        if self.bus is not None:
            try:
                await self.bus.watch(session_id)
            except Exception as exc:  # Redis away: local events only, until it is back
                logger.warning("Redis unreachable; session %s gets this process's events only: %s",
                               session_id, exc)

    async def _unwatch(self, session_id: str) -> None:
        if session_id not in self._sockets:  # nobody came back meanwhile
            try:
                await self.bus.unwatch(session_id)
            except Exception:
                logger.warning("could not unsubscribe from session %s", session_id, exc_info=True)

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
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
        return turn

    async def _renew_loop(self) -> None:
        """Renew the leases of all of this process's running turns, in one query every lease/3."""
        lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
        renew = database_sync_to_async(services.turns_renew)
        while self._turns:
            await asyncio.sleep(lease / 3)
            turns = [(session_id, turn.turn_id) for session_id, turn in self._turns.items()]
            try:
                lost = await renew(turns=turns, lease_seconds=lease)
            except Exception as exc:
                logger.warning("could not renew the leases of %d turns: %r", len(turns), exc)
                continue
            for turn_id in lost:
                if any(turn.turn_id == turn_id for turn in self._turns.values()):
                    logger.warning("turn %s lost its hold on its session", turn_id)

    def turn_end(self, session_id: str, turn_id: str) -> None:
        turn = self._turns.get(session_id)
        if turn is not None and turn.turn_id == turn_id:
            del self._turns[session_id]
        if self._bus is not None:
            self._bus.turn_done(turn_id)
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
        if self.shared:
            self._outbox.setdefault(session_id, []).append((event, text))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def deliver_remote(self, session_id: str, batch: list[dict]) -> None:
        """Events another process published for a session with sockets here.

        A window that does not follow on from the last one seen (a lost
        subscription, or a turn that started before this process subscribed)
        is completed from the turn's log first.
        """
        if not batch or session_id not in self._sockets:
            return
        first = batch[0]
        turn_id, seq = first.get("turn_id"), first.get("seq", 0)
        known = self._remote.get(session_id)
        last = known.seq if known is not None and known.turn_id == turn_id else 0
        if turn_id is not None and seq > last + 1 and self.running(session_id) is None:
            try:
                missed = await turnlog.log_read(turn_id, last)
            except Exception:
                logger.warning("could not read the log of turn %s", turn_id, exc_info=True)
            else:
                batch = [event for event in missed if event["seq"] < seq] + batch
        for event in batch:
            text = dumps(event)
            for sink in tuple(self._sockets.get(session_id, ())):
                await sink.deliver(event, text)
        self.seen(session_id, batch)

    # --- Turns that run elsewhere --------------------------------------------

    def follow(self, session_id: str, turn_id: str, seq: int) -> None:
        """Watch a turn that runs on another process (or on none any more) for its end."""
        if self.running(session_id) is not None:
            return
        known = self._remote.get(session_id)
        now = asyncio.get_running_loop().time()
        if known is None or known.turn_id != turn_id:
            self._remote[session_id] = RemoteTurn(turn_id, seq, now)
        elif seq >= known.seq:
            known.seq, known.seen_at = seq, now
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_loop())

    def seen(self, session_id: str, batch: list[dict]) -> None:
        """Note how far a followed turn got (and forget it once it ended)."""
        if not batch or batch[-1].get("turn_id") is None:
            return
        last = batch[-1]
        if last.get("type") in TERMINAL_TYPES:
            known = self._remote.get(session_id)
            if known is not None and known.turn_id == last["turn_id"]:
                del self._remote[session_id]
        else:
            self.follow(session_id, last["turn_id"], last.get("seq", 0))

    def seen_seq(self, session_id: str, turn_id: str) -> int:
        """The last seq of a followed turn that reached this process (0 if none)."""
        known = self._remote.get(session_id)
        return known.seq if known is not None and known.turn_id == turn_id else 0

    async def _watch_loop(self) -> None:
        """While sockets here watch turns of other processes, check the quiet ones' leases."""
        from chat.turns import turn_check_remote

        lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
        loop = asyncio.get_running_loop()
        while self._remote:
            await asyncio.sleep(lease / 2)
            now = loop.time()
            for session_id, known in list(self._remote.items()):
                if now - known.seen_at < lease:
                    continue
                try:
                    keep = await turn_check_remote(
                        session_id=session_id, turn_id=known.turn_id, seq=known.seq
                    )
                except Exception:
                    logger.warning("could not check turn %s", known.turn_id, exc_info=True)
                    keep = True
                if self._remote.get(session_id) is known:
                    if keep:
                        known.seen_at = loop.time()
                    else:
                        del self._remote[session_id]

    async def _control(self, message: dict) -> None:
        """A control message another process sent to this one."""
        if message.get("action") == "stop":
            turn = self._turns.get(message.get("session_id"))
            if turn is not None and turn.turn_id == message.get("turn_id"):
                self.stop(message["session_id"])

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


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; one per test loop)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
