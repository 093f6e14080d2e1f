"""Turns that other processes run, and turns whose process died.

Behind Redis a socket may join a session whose turn runs on another process.
It is replayed from the turn's shared log, then hears the rest through the
session's channel (chat/turns/bus.py). This process keeps an eye on such turns:
one that goes quiet for a lease is checked, and if its process died (its lease
ran out) the turn is ended as interrupted here: what it streamed is kept and
every socket is told. A socket that joins a session whose turn died, or the
next message on it, does the same.
"""

import asyncio
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from sessions_app import events
from construct_core import metrics
from construct_core.errors import AgentError
from chat.turns import bus
from chat.turns.fanout import TERMINAL_TYPES, Fanout
from sessions_app import catalogue, selectors, services
from sessions_app.models import ChatSession

logger = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "Interrupted: the server process running this turn stopped; the partial reply is kept in history"
)


@dataclass
class _Followed:
    """A turn another process runs, watched by sockets here: how far it got, and when."""

    turn_id: str
    seq: int
    seen_at: float


def unsaved_text(logged: list[dict]) -> str:
    """The text a turn streamed after its last saved assistant message.

    The agent saves an assistant message (with its tool calls) before it
    announces the calls, so text before the last `tool_call` is in history.
    """
    parts: list[str] = []
    for event in logged:
        if event["type"] == "tool_call":
            parts = []
        elif event["type"] == "chunk":
            parts.append(event.get("content", ""))
    return "".join(parts)


class RemoteTurns:
    """What this process knows of the turns that run elsewhere on sessions it has sockets on."""

    def __init__(self, fanout: Fanout, redis_bus: "bus.RedisBus | None", on_parked=None):
        self.fanout = fanout
        self.bus = redis_bus
        # Called (session_id, turn_id) for a dead process's turn that waits for an
        # approval: it is not interrupted, but continued (chat/turns/approvals.py).
        self.on_parked = on_parked or (lambda session_id, turn_id: None)
        self._followed: dict[str, _Followed] = {}
        self._watchdog: asyncio.Task | None = None

    # --- Joining a session ---------------------------------------------------------

    async def recover_stale(self, session: ChatSession, running_here: bool) -> None:
        """End the session's turn as interrupted if its process died (its lease ran out).

        Called as a socket joins, before it is attached: it is told
        "interrupted" in session_start; sockets already watching get the turn's end.
        """
        lease = session.lease_expires_at
        if (session.state == ChatSession.State.RUNNING and session.turn_id and not running_here
                and (lease is None or lease <= timezone.now())):
            if await self.interrupted(session_id=session.id, turn_id=session.turn_id, mark=True):
                # Read back what the recovery wrote (the state, and the streamed text
                # saved as a message), so session_start counts it.
                await database_sync_to_async(session.refresh_from_db)(
                    fields=["state", "message_count", "last_seq", "active_leaf"])
            else:  # it waits for an approval (or just ended): it goes on, still "running"
                self.on_parked(session.id, session.turn_id)

    async def replay(self, session: ChatSession, last_seq: int,
                     turn_id: str | None) -> tuple[str, str | None, list[dict]]:
        """(state, running turn id, its events after the client's last) of a turn run elsewhere."""
        state, current = session.state, session.turn_id
        if state != ChatSession.State.RUNNING or not current:
            return state, None, []
        after = last_seq if turn_id in (None, current) else 0
        self.follow(session.id, current, after)
        logged = await self.logged(current, after)
        self.seen(session.id, logged)
        return state, current, logged

    def forget(self, session_id: str) -> None:
        """No socket here watches the session any more."""
        self._followed.pop(session_id, None)

    # --- Events from other processes -------------------------------------------------

    async def on_batch(self, session_id: str, batch: list[dict]) -> None:
        """A window of events another process published on a session with sockets here.

        A window that does not follow on from the last one seen (a lost
        subscription, or a turn that started before this process subscribed)
        is completed from the turn's log first.
        """
        if not batch or not self.fanout.watched(session_id):
            return
        first = batch[0]
        turn_id, seq = first.get("turn_id"), first.get("seq", 0)
        known = self._followed.get(session_id)
        last = known.seq if known is not None and known.turn_id == turn_id else 0
        if turn_id is not None and seq > last + 1 and self.fanout.replay(session_id) is None:
            try:
                missed = await bus.log_read(turn_id, last)
            except Exception:
                logger.warning("could not read the log of turn %s", turn_id, exc_info=True)
            else:
                batch = [event for event in missed if event["seq"] < seq] + batch
        await self.fanout.deliver_local(session_id, batch)
        self.seen(session_id, batch)

    def follow(self, session_id: str, turn_id: str, seq: int) -> None:
        """Watch a turn that runs on another process (or on none any more) for its end."""
        if self.fanout.replay(session_id) is not None:
            return  # it runs here
        known = self._followed.get(session_id)
        now = asyncio.get_running_loop().time()
        if known is None or known.turn_id != turn_id:
            self._followed[session_id] = _Followed(turn_id, seq, now)
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
            known = self._followed.get(session_id)
            if known is not None and known.turn_id == last["turn_id"]:
                del self._followed[session_id]
        else:
            self.follow(session_id, last["turn_id"], last.get("seq", 0))

    async def _watch_loop(self) -> None:
        """While sockets here watch turns of other processes, check the quiet ones' leases."""
        lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
        loop = asyncio.get_running_loop()
        while self._followed:
            await asyncio.sleep(lease / 2)
            now = loop.time()
            for session_id, known in list(self._followed.items()):
                if now - known.seen_at < lease:
                    continue
                try:
                    keep = await self._check(session_id, known.turn_id, known.seq)
                except Exception:
                    logger.warning("could not check turn %s", known.turn_id, exc_info=True)
                    keep = True
                if self._followed.get(session_id) is known:
                    if keep:
                        known.seen_at = loop.time()
                    else:
                        del self._followed[session_id]

    async def _check(self, session_id: str, turn_id: str, seq: int) -> bool:
        """Look at a quiet turn of another process; False once there is nothing more to wait for."""
        session = await database_sync_to_async(selectors.session_get)(session_id=session_id)
        if session is None:
            return False
        if session.state == ChatSession.State.RUNNING and session.turn_id == turn_id:
            lease = session.lease_expires_at
            if lease is not None and lease > timezone.now():
                return True
            if await self.interrupted(session_id=session_id, turn_id=turn_id, mark=True):
                return False
            self.on_parked(session_id, turn_id)  # it waits for an approval: another process continues it
            return True
        # It ended and its last window never reached this process: send the rest.
        rest = await self.logged(turn_id, seq)
        if rest:
            await self.fanout.deliver_local(session_id, rest)
        return False

    # --- Turns whose process died ------------------------------------------------------

    async def interrupted(self, *, session_id: str, turn_id: str, mark: bool = False) -> bool:
        """End a turn whose process died: keep what it streamed, tell whoever watches it.

        With `mark`, first mark the session interrupted, if the turn still holds
        it with a lease that ran out; False when it does not (someone else ended
        it). Without, the caller has taken the session over already (turn_try_start).
        """
        if mark and not await database_sync_to_async(services.turn_interrupt)(
            session_id=session_id, turn_id=turn_id
        ):
            return False
        logged = await self.logged(turn_id)
        if any(event["type"] in TERMINAL_TYPES for event in logged):
            return True  # it did end; only the session row missed it
        text = unsaved_text(logged)
        if text:
            # The session's model is the one its running turn chose.
            model = await database_sync_to_async(catalogue.session_model)(session_id=session_id)
            await database_sync_to_async(services.message_append)(
                session_id=session_id, role="assistant", content=text,
                data={"interrupted": True, "model": model.id}, turn_id=turn_id,
            )
        known = self._followed.get(session_id)
        seen = known.seq if known is not None and known.turn_id == turn_id else 0
        seq = max([event["seq"] for event in logged] + [seen])
        logger.warning("session %s: turn %s was interrupted (its process stopped) after %d events",
                       session_id, turn_id, seq)
        # Counted by the one process that ends it: turn_interrupt, or the take-over, has one winner.
        metrics.turn_ended("interrupted")
        # Its operator event is kept before the error frame goes out: nothing of the
        # turn writes to the database once a client has its end.
        owner = await database_sync_to_async(selectors.session_owner_id)(session_id=session_id)
        if owner is not None:
            await events.publish_operator_event({
                "type": "error", "component": "ws_chat", "message": INTERRUPTED_MESSAGE,
                "code": AgentError.code, "session_id": session_id, "turn_id": turn_id,
            }, user_id=owner, kept=True)
        await self.fanout.publish(session_id, {
            "type": "error", "message": INTERRUPTED_MESSAGE, "code": AgentError.code,
            "interrupted": True, "turn_id": turn_id, "seq": seq + 1,
        })
        return True

    async def logged(self, turn_id: str, after_seq: int = 0) -> list[dict]:
        """A turn's events from the shared log; none without Redis, or while it is away."""
        if self.bus is None:
            return []
        try:
            return await bus.log_read(turn_id, after_seq)
        except Exception as exc:
            logger.warning("could not read the log of turn %s: %r", turn_id, exc)
            return []
