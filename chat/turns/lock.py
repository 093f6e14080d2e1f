"""The session lock: one turn at a time per session, across processes, and the queue before it.

The lock is the session row itself (sessions_app.services.turn_try_start):
state "running" with a turn id and a lease this process renews. Waiting
messages are rows too (TurnWaiter), so they go in order whichever process
holds them, and a process that dies leaves a lease that runs out.
"""

import asyncio
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from construct_core import metrics
from construct_core.drain import draining
from construct_core.errors import ServerRestarting, SessionBusy
from sessions_app import services, turn_db
from sessions_app.turn_db import TurnOpened

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.25


@dataclass
class RunningTurn:
    turn_id: str
    task: asyncio.Task | None = None
    # Only while the agent streams may a stop cancel the task: its bookkeeping
    # afterwards (saving, freeing the session) must run to the end.
    cancellable: bool = False
    # Who stopped it (a device's name): the approval it waits for is denied by them.
    stopped_by: str = ""
    # Cancelled because its process drained past CONSTRUCT_DRAIN_SECONDS: it ends interrupted.
    interrupted: bool = False
    # It freed its session (or is freeing it) and only finishes here (its last events go out
    # to other processes): its lease is not renewed, and it cannot lose a hold it gave up.
    freed: bool = False


class SessionLock:
    """The sessions this process runs a turn on, their leases, and the waits in front of them."""

    def __init__(self, process_id: str):
        self.process_id = process_id
        self._running: dict[str, RunningTurn] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._renewer: asyncio.Task | None = None
        # Sessions with a message between its acceptance and its turn's start, and how many.
        self._starting: dict[str, int] = {}

    async def acquire(self, session_id: str, user_id: int, turn_id: str, on_queued,
                      on_warnings=None, **opening) -> TurnOpened:
        """Take the session, queueing behind its running turn; raise SessionBusy.

        Each try is one database call (sessions_app.turn_db.turn_open): the
        first also checks the budgets (`on_warnings(warnings)` is awaited with
        what it says from 80 %), and the one that takes the session also does
        the turn's first steps, as `opening` asks (model, question, token_budget).
        `on_queued()` is awaited once if the message has to wait. Returns what
        turn_open did, with the turn this took over from a dead process
        ({"turn_id", "owner"}), if any.
        """
        timeout = settings.CONSTRUCT_SESSION_QUEUE_TIMEOUT
        depth = settings.CONSTRUCT_SESSION_QUEUE_DEPTH
        lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
        try_open = database_sync_to_async(turn_db.turn_open)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter_id = None
        first = True
        try:
            while True:
                if draining():
                    # Not started here: the caller hands it on to a process that serves on.
                    raise ServerRestarting()
                opened = await try_open(
                    session_id=session_id, user_id=user_id, turn_id=turn_id, owner=self.process_id,
                    lease_seconds=lease, waiter_id=waiter_id, budget_first=first, **opening,
                )
                if first:
                    first = False
                    if opened.warnings and on_warnings is not None:
                        await on_warnings(opened.warnings)
                taken_over = opened.taken_over
                if opened.started:
                    self.taken(session_id, turn_id)
                    if taken_over:
                        logger.warning("session %s: took over turn %s of a process that stopped",
                                       session_id, taken_over["turn_id"])
                    return opened
                if waiter_id is None:
                    waiter_id = await database_sync_to_async(services.waiter_add)(
                        session_id=session_id, depth=depth, timeout=timeout
                    )
                    if waiter_id is None:
                        raise SessionBusy(
                            f"Session is busy: {depth} messages are already waiting for the running turn"
                        )
                    metrics.QUEUED_MESSAGES.inc()
                    await on_queued()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise SessionBusy(
                        f"Session is busy: the running turn did not finish within {timeout:g} seconds"
                    )
                # A turn ending here wakes us at once; one on another process is seen by polling.
                await self._wait_turn_end(session_id, min(remaining, POLL_INTERVAL))
        finally:
            if waiter_id is not None:
                metrics.QUEUED_MESSAGES.dec()
                await database_sync_to_async(services.waiter_remove)(waiter_id=waiter_id)

    def taken(self, session_id: str, turn_id: str) -> None:
        """The calling task took the session in the database for `turn_id`: counted as running
        from now on, before the turn itself begins (a drain that starts meanwhile waits for it)."""
        self._running[session_id] = RunningTurn(turn_id=turn_id, task=asyncio.current_task())

    async def _wait_turn_end(self, session_id: str, timeout: float) -> None:
        wakeup = self._wakeups.setdefault(session_id, asyncio.Event())
        try:
            await asyncio.wait_for(wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def begin(self, session_id: str, turn_id: str) -> RunningTurn:
        """The calling task runs `turn_id` on the session from now on."""
        turn = RunningTurn(turn_id=turn_id, task=asyncio.current_task())
        self._running[session_id] = turn
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
        return turn

    def end(self, session_id: str, turn_id: str) -> None:
        turn = self._running.get(session_id)
        if turn is not None and turn.turn_id == turn_id:
            del self._running[session_id]
        wakeup = self._wakeups.pop(session_id, None)
        if wakeup is not None:
            wakeup.set()

    def running(self, session_id: str) -> RunningTurn | None:
        return self._running.get(session_id)

    def starting_begin(self, session_id: str) -> None:
        """A message of the session is accepted here: until `starting_end`, the session counts
        as busy (a drain waits for it, and keeps its sockets)."""
        self._starting[session_id] = self._starting.get(session_id, 0) + 1

    def starting_end(self, session_id: str) -> None:
        """The message has taken the session (it runs now: `running`), or was refused."""
        left = self._starting.pop(session_id, 0) - 1
        if left > 0:
            self._starting[session_id] = left

    def count(self) -> int:
        """How many turns run here, or are about to (their message is taking the session)."""
        return len(self._running) + sum(self._starting.values())

    def busy(self, session_id: str) -> bool:
        """Whether a turn of the session runs here, or a message here is taking the session."""
        return session_id in self._running or session_id in self._starting

    def interrupt_all(self) -> int:
        """Cancel every turn here that streams, to end as interrupted; how many were."""
        cancelled = 0
        for turn in self._running.values():
            if turn.task is not None and not turn.task.done() and turn.cancellable:
                turn.interrupted = True
                turn.task.cancel()
                cancelled += 1
        return cancelled

    def stop(self, session_id: str, turn_id: str | None = None, by: str = "") -> bool:
        """Cancel the session's turn here (only `turn_id`, if given); False when none can be."""
        turn = self._running.get(session_id)
        if (turn is None or turn.task is None or turn.task.done() or not turn.cancellable
                or turn_id not in (None, turn.turn_id)):
            return False
        turn.stopped_by = by
        turn.task.cancel()
        return True

    async def release(self, session_id: str, turn_id: str, state: str) -> None:
        """Free the session in the state the turn ended in.

        Never raises: if the database fails here, the turn's lease runs out
        instead and the session's next message takes it over.
        """
        try:
            await database_sync_to_async(services.turn_finish)(
                session_id=session_id, turn_id=turn_id, state=state
            )
        except Exception as exc:
            logger.warning("turn %s could not free session %s (its lease will run out): %s",
                           turn_id, session_id, exc)

    async def _renew_loop(self) -> None:
        """Renew the leases of all of this process's running turns, in one query every lease/3."""
        lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
        renew = database_sync_to_async(services.turns_renew)
        while self._running:
            await asyncio.sleep(lease / 3)
            turns = [(session_id, turn.turn_id) for session_id, turn in self._running.items()
                     if not turn.freed]
            if not turns:
                continue
            try:
                lost = await renew(turns=turns, lease_seconds=lease)
            except Exception as exc:
                logger.warning("could not renew the leases of %d turns: %r", len(turns), exc)
                continue
            for turn_id in lost:
                if any(turn.turn_id == turn_id and not turn.freed for turn in self._running.values()):
                    logger.warning("turn %s lost its hold on its session", turn_id)
