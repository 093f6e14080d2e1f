"""Messages a draining process handed on, run by whichever process serves on.

A process that drains starts no turn: a message it accepts (or one that
waited for the session's lock as the drain began) is kept in the database
instead (sessions_app QueuedMessage, run.message_run) and acknowledged. Any
process that serves runs such messages, in the order they were accepted,
each once (services.queued_claim takes the session and the message in one
transaction): as it starts, when a socket joins their session, after a turn
of their session ends here, and from the watchdog (chat/turns/approvals.py)
once it knows some wait, so a message runs even if no client comes back.
The processes hear of a handed-on message through the engines' group.
The turn's events reach the session's sockets as any turn's do.
"""

import logging
import uuid

from channels.db import database_sync_to_async
from django.conf import settings

from chat.turns.branches import PLAIN, Ask
from chat.turns.run import Turn
from construct_core.drain import draining
from sessions_app import selectors, services

logger = logging.getLogger(__name__)


class HandedOn:
    """This process's part in running the messages draining processes handed on."""

    def __init__(self, engine):
        self.engine = engine
        # Whether handed-on messages may wait: found as the process started, or heard of
        # since, until a watchdog round finds none. While not, a socket's join and a turn's
        # end look for none (a database call each, on every turn, for nothing).
        self.maybe_waiting = False

    async def start(self) -> None:
        """As the process starts: messages wait (from before a restart)? Run them."""
        if await database_sync_to_async(selectors.queued_count)():
            self.maybe_waiting = True
            self.engine.approvals.watch()

    def heard(self) -> None:
        """A message was handed on (on some process): the watchdog runs it once it can."""
        self.maybe_waiting = True
        if not draining():
            self.engine.approvals.watch()

    def soon(self, session_id: str) -> None:
        """Run the session's handed-on messages, if any may wait, as soon as it is free."""
        if self.maybe_waiting and not draining():
            self.engine.spawn(self.pickup(session_id))

    async def sweep(self) -> None:
        """The watchdog's round: every session with handed-on messages that no turn holds."""
        if draining():
            return
        sessions = await database_sync_to_async(selectors.queued_sessions)()
        if not sessions:
            self.maybe_waiting = False
        for session_id in sessions:
            await self.pickup(session_id)

    async def pickup(self, session_id: str) -> bool:
        """Claim the session's oldest handed-on message and start it here; False when none
        waits, or the session is busy (its turn's end here, or the watchdog, comes back)."""
        engine = self.engine
        if draining() or engine.lock.busy(session_id):
            return False
        turn_id = uuid.uuid4().hex
        # Busy from here: a second pickup here, or a message sent here, waits for this one.
        engine.lock.starting_begin(session_id)
        try:
            claimed = await database_sync_to_async(services.queued_claim)(
                session_id=session_id, turn_id=turn_id, owner=engine.process_id,
                lease_seconds=settings.CONSTRUCT_TURN_LEASE_SECONDS,
            )
        except Exception as exc:
            engine.lock.starting_end(session_id)
            logger.warning("could not claim a handed-on message of session %s: %r", session_id, exc)
            return False
        if claimed is None or claimed[0] is None:
            engine.lock.starting_end(session_id)
            if claimed is not None:  # some wait, behind a turn elsewhere: the watchdog comes back
                engine.approvals.watch()
            return False
        self.maybe_waiting = True  # one waited: more may, run after its turn's end
        engine.spawn(self._run(session_id, turn_id, *claimed))
        return True

    async def _run(self, session_id: str, turn_id: str, row, taken_over: dict | None) -> None:
        engine = self.engine
        engine.lock.taken(session_id, turn_id)
        engine.lock.starting_end(session_id)
        await engine.ready()
        if taken_over is not None:
            try:
                await engine.remote.interrupted(session_id=session_id, turn_id=taken_over["turn_id"])
            except Exception:  # the message runs whatever became of the old turn
                logger.exception("could not keep what turn %s streamed", taken_over["turn_id"])
        options = row.options if isinstance(row.options, dict) else {}
        ask = options.get("ask")
        ask = Ask(kind=ask.get("kind"), message_id=ask.get("message_id")) if isinstance(ask, dict) else PLAIN
        logger.info("session %s: running a message handed on by a process that drained", session_id)
        await Turn(engine, session_id, row.user_id, turn_id, queued_id=row.pk).run(
            row.content, options.get("page_context"), row.client_id, options.get("attachments") or (),
            ask, model=options.get("model"), reasoning=options.get("reasoning"),
        )
