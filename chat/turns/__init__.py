"""The turn engine: what a socket may ask of a session, whichever process runs its turn.

    session_join    a socket joins a session: it is sent session_start, the
                    running turn's events so far, then every event live
    session_leave   the socket is gone
    message_submit  a message from a joined socket: acknowledged, queued
                    behind the running turn, then run as the session's turn
                    (an edit or a regenerate too: a new branch, see branches.py)
    branch_switch   make another branch of the session active; every socket
                    gets the `history` frame
    turn_stop       stop the session's running turn, here or elsewhere
    approval_decide a person's answer to a tool call waiting for approval
    engine_start    what a server process starts before any socket (approvals' watchdog,
                    the messages a draining process handed on: queue.py)
    engine_drain    let this process's running turns end (up to a deadline) before it exits
    check_agent     raise AgentInitFailed if no turn could run

Inside, imports point down only: run (a turn) and remote (other processes'
turns) use lock (the session lease and queue) and fanout (the sockets), which
uses bus (Redis); queue (messages a draining process handed on) uses run;
engine holds one of each per process.
"""

import asyncio
import logging

from channels.db import database_sync_to_async

from chat.turns.branches import PLAIN, Ask, ask_target, history_frame
from chat.turns.engine import get_engine
from chat.turns.fanout import TERMINAL_TYPES, Sink, Subscriber
from chat.turns.run import message_run
from chat.turns.setup import check_agent
from construct_core.errors import ApprovalInvalid
from sessions_app import catalogue, selectors, services, windows
from sessions_app.events import operator_events_kept
from sessions_app.models import ChatSession

__all__ = ["Ask", "Sink", "Subscriber", "approval_decide", "branch_switch", "check_agent",
           "engine_drain", "engine_start", "message_submit", "session_join", "session_leave", "turn_stop"]

logger = logging.getLogger(__name__)


async def session_join(*, session_id: str, user_id: int, sink: Sink, name: str | None = None,
                       last_seq: int = 0, turn_id: str | None = None,
                       is_staff: bool = False) -> Subscriber:
    """Open (or create) the user's session for a socket and send it everything it needs, in order.

    Raises services.SessionOfAnotherUser when the id is another user's session.

    The socket is sent session_start, then the running turn's events after
    `last_seq` (counted in the running turn, or in `turn_id` when the client
    names the running one), then the turn's events live: nothing missed,
    nothing twice. The returned subscriber is the socket's handle from then on. The
    operator events, channel events and revocations for the socket (by `user_id`, and
    every user's turns for `is_staff`) reach it through `sink.relay`.
    """
    engine = get_engine()
    await engine.listening()
    # Not created here: a new id is stored as its first message is (message_submit).
    session = await database_sync_to_async(services.session_peek)(
        session_id=session_id, user_id=user_id, name=name
    )
    await engine.remote.recover_stale(session, running_here=engine.lock.running(session_id) is not None)
    # Attached before the replay is read, so an event is in the replay, held
    # back for after it, or both (then sent once): nothing falls in between.
    subscriber = engine.fanout.attach(session_id, user_id, sink, is_staff)
    if session._state.adding:  # unsaved: nobody used this id yet
        subscriber.stored, subscriber.new_name = False, session.name or None
    try:
        await engine.watch(session_id)
        state, running_id, replay = await _replay(engine, session, last_seq, turn_id)
        start = {
            "type": "session_start",
            "session_id": session_id,
            "resumed": session.message_count > 0,
            "message_count": session.message_count,
            "state": state,
        }
        if session.name:
            start["name"] = session.name
        start["model"] = catalogue.model_of_session(session.model).id
        if running_id is not None:
            start["turn_id"] = running_id
            if turn_id in (None, running_id):
                subscriber.skip_through(running_id, last_seq)
        await subscriber.open(start, replay)
    except BaseException:
        await session_leave(subscriber)
        raise
    if not session._state.adding:
        engine.handed_on.soon(session_id)  # messages a draining process handed on run now
    return subscriber


async def _replay(engine, session: ChatSession, last_seq: int,
                  turn_id: str | None) -> tuple[str, str | None, list[dict]]:
    """(state, running turn id, its events the socket has not seen) as the socket joins."""
    local = engine.fanout.replay(session.id)
    if local is None:
        return await engine.remote.replay(session, last_seq, turn_id)
    running_id, events = local
    last = events[-1]["type"] if events else None
    if last in TERMINAL_TYPES:  # ended; only its last window is still going out
        return (ChatSession.State.ERROR if last == "error" else ChatSession.State.IDLE), None, []
    after = last_seq if turn_id in (None, running_id) else 0
    return ChatSession.State.RUNNING, running_id, [event for event in events if event["seq"] > after]


async def session_leave(subscriber: Subscriber) -> None:
    """The socket is gone (closed, revoked, or failed to join)."""
    engine = get_engine()
    if engine.fanout.detach(subscriber):
        engine.remote.forget(subscriber.session_id)
        # Its history window serves a next turn from a socket here: none is left. A turn
        # still running keeps nothing more (its answer extends no window), and a socket that
        # comes back reads the history once again. So the windows held follow the sessions
        # open here, not every session used since the process started.
        windows.window_forget(subscriber.session_id)
        if engine.bus is not None:
            engine.spawn(engine.unwatch(subscriber.session_id))


async def message_submit(subscriber: Subscriber, *, content: str = "", page_context: str | None = None,
                         client_id: str | None = None, attachments: list[str] | tuple = (),
                         ask: Ask = PLAIN, model: str | None = None,
                         reasoning: str | None = None) -> None:
    """Accept a message: drop a resend, acknowledge, and start its work as the session's task.

    `attachments` are the attachment ids the message names; those that are not
    the session's are skipped when the turn saves it, never refused. With
    `ask`, an edit of a user message or a regenerate of the last answer: one
    that cannot be (MessageNotFound, NotEditable, NothingToRegenerate) is
    refused here, before the acknowledgement, and queues like a message otherwise.
    `model` (an id of the model list) becomes the session's model when the
    turn starts; one not in the list (ModelNotFound), or one whose provider
    cannot be set up (AgentInitFailed), is refused here, with nothing run or
    kept. `reasoning` is the turn's level (None: the default). On a process that drains,
    the message is accepted all the same and handed on: it runs on a process that serves on
    (chat/turns/queue.py).
    """
    engine = get_engine()
    # From here until its turn holds the session (message_run), a drain neither sends this
    # socket away nor exits: an acknowledged message is either run here or forgotten first.
    engine.lock.starting_begin(subscriber.session_id)
    try:
        if model is not None:
            check_agent(catalogue.model_get(model_id=model))
        if ask is not PLAIN:
            await database_sync_to_async(ask_target)(subscriber.session_id, ask)
        if client_id is not None or not subscriber.stored:
            # One database call: on the session's first message the session is stored (with
            # the socket's ?name=), and a client's message id is recorded (a resend is known).
            fresh = await database_sync_to_async(services.message_accept)(
                session_id=subscriber.session_id, user_id=subscriber.user_id, client_id=client_id,
                session_new=not subscriber.stored, name=subscriber.new_name,
            )
            subscriber.stored = True
        if client_id is not None:
            await subscriber.send_frame({"type": "ack", "client_id": client_id,
                                         "duplicate": not fresh})
            if not fresh:
                engine.lock.starting_end(subscriber.session_id)
                return
    except BaseException:
        engine.lock.starting_end(subscriber.session_id)
        raise
    engine.spawn(message_run(engine, subscriber, content=content, page_context=page_context,
                             client_id=client_id, attachments=attachments, ask=ask, model=model,
                             reasoning=reasoning))


async def branch_switch(subscriber: Subscriber, *, message_id: int) -> None:
    """Make active the newest leaf under message `message_id`; every socket of the session, on
    every process, gets the `history` frame of the new active branch.

    Raises SessionBusy at once while a turn runs (its messages go on its branch)
    and MessageNotFound for a message that is not the session's.
    """
    engine = get_engine()
    session_id = subscriber.session_id
    leaf = await database_sync_to_async(services.branch_switch)(session_id=session_id,
                                                                message_id=message_id)
    # Through fan-out: this process's sockets now, the others' in the next window.
    await engine.fanout.publish(session_id, await history_frame(session_id, leaf.pk))


async def turn_stop(*, session_id: str, by: str = "") -> bool:
    """Cancel the session's running turn, here or on the process that runs it.

    False when no turn runs anywhere (or its process is gone). The turn's own
    `stopped` event is the answer, to every socket of the session. An approval
    the turn waits for is denied, `by` (the device that stopped it).
    """
    engine = get_engine()
    if engine.lock.stop(session_id, by=by):
        return True
    if engine.lock.running(session_id) is not None:
        return False
    session = await database_sync_to_async(selectors.session_get)(session_id=session_id)
    if session is None or session.state != ChatSession.State.RUNNING or not session.turn_id:
        return False
    if engine.bus is not None and session.turn_owner:
        try:
            heard = await engine.bus.send_control(
                session.turn_owner,
                {"action": "stop", "session_id": session_id, "turn_id": session.turn_id, "by": by},
            )
        except Exception as exc:
            logger.warning("could not ask process %s to stop turn %s: %r", session.turn_owner,
                           session.turn_id, exc)
            heard = 0
        if heard > 0:
            return True
    # Nobody runs it: its process died. If it waits for an approval, that is denied now
    # (the process that continues the turn gives the model the denial).
    return await engine.approvals.deny_waiting(session_id=session_id, turn_id=session.turn_id,
                                               by=by)


async def approval_decide(subscriber: Subscriber, *, approval_id: str, decision: str,
                          args: dict | None, by: str) -> None:
    """A socket's answer to an approval of its user's sessions: `approve`, `deny` or `always`.

    The turn waiting for it (here, on another process, or taken over after its
    process died) sends `approval_result` to every socket of the session. An
    unknown, expired or already decided approval is refused to this socket
    alone, with APPROVAL_INVALID.
    """
    engine = get_engine()
    try:
        row = await database_sync_to_async(services.approval_decide)(
            approval_id=approval_id, decision=decision, by=by, args=args, user_id=subscriber.user_id
        )
    except ApprovalInvalid as exc:
        await subscriber.send_frame({"type": "error", "message": str(exc), "code": exc.code,
                                     **exc.details})
        return
    await engine.approvals.announce(row)


async def engine_start() -> None:
    """Start what this process runs before any socket connects: the approvals' listener and
    watchdog, so a timeout fires and a dead process's turn is continued with no socket open."""
    engine = get_engine()
    try:
        engine.approvals.start()
        await engine.handed_on.start()
    except Exception:
        logger.exception("could not start the approvals watchdog")


# How long turns cut at the drain's deadline get to save what they streamed and say so.
INTERRUPT_GRACE_SECONDS = 5.0


async def engine_drain(*, seconds: float) -> int:
    """Wait until no turn runs in this process, for at most `seconds`; then end the turns
    still running as interrupted (what they streamed is kept). Returns how many were.

    Called once the process drains (construct_core.drain): no new turn starts here any more.
    """
    engine = get_engine()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    await engine.send_away()
    while engine.lock.count() and loop.time() < deadline:
        await asyncio.sleep(0.1)
        await engine.send_away()
    cut = engine.lock.interrupt_all()
    deadline = loop.time() + INTERRUPT_GRACE_SECONDS
    while engine.lock.count() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await engine.fanout.flush()
    await operator_events_kept()
    return cut

