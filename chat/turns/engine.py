"""This process's turn engine: its sockets, its running turns, its link to the other processes.

One engine per event loop (one per server process, one per test). It only
holds the parts together; each part has a module of its own.
"""

import asyncio
import logging
import uuid

from chat.turns import bus
from chat.turns.approvals import Approvals
from chat.turns.branches import history_frame
from chat.turns.fanout import Fanout
from chat.turns.lock import RunningTurn, SessionLock
from chat.turns.queue import HandedOn
from chat.turns.remote import RemoteTurns
from chat.turns.run import turn_resume
from construct_core import heap
from construct_core.drain import draining
from construct_core.loops import per_loop

logger = logging.getLogger(__name__)

# "Service restart": reconnect now (to another process) and resume from the last seq.
CLOSE_SERVICE_RESTART = 1012


class Engine:
    def __init__(self):
        self.process_id = "p" + uuid.uuid4().hex[:16]
        # Other processes exist only behind Redis: decided once, off the per-event path.
        self.bus = bus.RedisBus(
            process_id=self.process_id, on_batch=self._on_batch, on_control=self._on_control
        ) if bus.shared_log_enabled() else None
        self.fanout = Fanout(self.bus)
        self.lock = SessionLock(self.process_id)
        self.handed_on = HandedOn(self)
        self.approvals = Approvals(self, resume=lambda session_id, turn_id: turn_resume(
            self, session_id, turn_id), sweep_also=self.handed_on.sweep)
        self.remote = RemoteTurns(self.fanout, self.bus, on_parked=self._on_parked)
        self._tasks: set[asyncio.Task] = set()
        self._listening: asyncio.Future | None = None

    def spawn(self, coro) -> asyncio.Task:
        """Run work as a task owned by the engine, not by the socket that asked for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def listening(self) -> None:
        """This process hears the groups' messages for its sockets (sessions_app.events) before
        its first socket joins: the first joins wait for that (a second at most), later ones
        never (a server process starts listening before any socket, construct_site.serving)."""
        if self._listening is None:
            self._listening = asyncio.ensure_future(self.approvals.listening())
        if not self._listening.done():
            await asyncio.shield(self._listening)

    async def ready(self) -> None:
        """Be reachable by other processes (to stop a turn) before owning one."""
        if self.bus is not None:
            try:
                await self.bus.start()
            except Exception as exc:  # Redis away: the turn still runs for this process's sockets
                logger.warning("Redis unreachable; a stop from another process cannot reach "
                               "this turn: %s", exc)

    async def watch(self, session_id: str) -> None:
        """Hear the session's events from other processes from now on."""
        if self.bus is not None:
            try:
                await self.bus.watch(session_id)
            except Exception as exc:  # Redis away: local events only, until it is back
                logger.warning("Redis unreachable; session %s gets this process's events only: %s",
                               session_id, exc)

    async def unwatch(self, session_id: str) -> None:
        if self.bus is not None and not self.fanout.watched(session_id):  # nobody came back
            try:
                await self.bus.unwatch(session_id)
            except Exception:
                logger.warning("could not unsubscribe from session %s", session_id, exc_info=True)

    def turn_begin(self, session_id: str, turn_id: str, replay: list[dict] = ()) -> RunningTurn:
        """The calling task runs the turn here; `replay` is what it sent before (a turn taken over)."""
        self.fanout.turn_open(session_id, turn_id, replay)
        return self.lock.begin(session_id, turn_id)

    async def turn_end(self, session_id: str, turn_id: str) -> None:
        await self.fanout.flush()
        self.fanout.turn_close(session_id, turn_id)
        self.lock.end(session_id, turn_id)
        self.handed_on.soon(session_id)  # a message handed on meanwhile runs now
        # What the turn imported first, out of full collections; else, once a minute at most,
        # a full collection for the garbage that grew old (closed sockets' objects).
        heap.freeze_if_imported() or heap.collect_if_due()
        if self.bus is not None:
            self.bus.turn_done(turn_id)
            if draining():  # its sockets go now, before they send their next message here
                await self.send_away(session_id)

    async def send_away(self, session_id: str | None = None) -> None:
        """While draining behind Redis, close with 1012 the sockets here of sessions whose turn
        does not run here (none, or one on another process), or of `session_id` alone: another
        process serves them at once, and their next message is not refused here."""
        if self.bus is None:
            return  # no other process: they stay until the drain ends
        for session in [session_id] if session_id is not None else self.fanout.sessions():
            if self.lock.busy(session):
                continue
            for subscriber in self.fanout.subscribers(session):
                if not subscriber.closed:
                    subscriber.closed = True
                    try:
                        await subscriber.sink.close(code=CLOSE_SERVICE_RESTART)
                    except Exception as exc:
                        logger.debug("could not close a socket of session %s: %r", session, exc)

    async def _on_batch(self, session_id: str, batch: list[dict]) -> None:
        await self.remote.on_batch(session_id, batch)

    async def _on_control(self, message: dict) -> None:
        """A control message another process sent to this one."""
        if message.get("action") == "stop" and message.get("session_id"):
            by = message.get("by")
            self.lock.stop(message["session_id"], message.get("turn_id"),
                           by=by if isinstance(by, str) else "")

    async def on_branch_switched(self, message: dict) -> None:
        """A session's active branch changed (through REST, on any process): its sockets here
        get the `history` frame."""
        session_id, leaf_id = message.get("session_id"), message.get("leaf_id")
        if isinstance(session_id, str) and isinstance(leaf_id, int) and self.fanout.watched(session_id):
            frame = await history_frame(session_id, leaf_id)
            await self.fanout.deliver_local(session_id, [frame])

    def _on_parked(self, session_id: str, turn_id: str) -> None:
        """A dead process's turn waits for an approval: have the watchdog take it over now."""
        self.approvals.watch()


get_engine = per_loop(Engine)
