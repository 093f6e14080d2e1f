"""A turn: from an accepted message to its saved reply, owned by the session.

The socket that sent the message only starts it. The turn waits for the
session's lock, saves the user message, runs the agent, turns every agent
event into a frame for all of the session's sockets, saves the reply and its
usage, and frees the session. A dropped socket changes none of that.
"""

import asyncio
import contextlib
import logging
import time
import uuid

from channels.db import database_sync_to_async
from django import db
from django.conf import settings
from django.utils import timezone

from sessions_app import events
from chat.agent.events import Chunk, OperatorStatus, Record, Thinking, ToolCall, ToolResult, UsageInfo
from chat.agent.loop import unanswered_calls
from chat.agent.prompts import page_context_hint
from construct_core import metrics, tracing
from construct_core.errors import (
    DATABASE_UNAVAILABLE, AgentError, GatewayError, ServerRestarting, SessionBusy,
)
from construct_core.logs import log_context
from chat.turns import setup, titles
from chat.turns.approvals import Gate
from chat.turns.attachments import history_with_attachments
from chat.turns.branches import EDIT, MESSAGE, PLAIN, REGENERATE, Ask, ask_target, history_frame
from chat.turns.fanout import TERMINAL_TYPES, Subscriber
from chat.turns.remote import INTERRUPTED_MESSAGE
from construct_core.model_choices import REASONING_OFF, ModelChoice
from construct_core.redaction import sanitize, scrub_fields
from sessions_app import attachments as stored_attachments, budget, selectors, services, turn_db
from sessions_app.turn_db import TurnOpened
from sessions_app.models import ChatSession

logger = logging.getLogger(__name__)

STOPPED_MESSAGE = "Stopped: the partial reply is kept in history"


async def message_run(engine, subscriber: Subscriber, *, content: str, page_context: str | None,
                      client_id: str | None, attachments: list[str] | tuple = (),
                      ask: Ask = PLAIN, model: str | None = None, reasoning: str | None = None) -> None:
    """An accepted message's work (or an edit's, or a regenerate's): the budget, the session's
    lock (queueing), then the turn. On a process that drains (or starts to while the message
    waits for the lock), the message is handed on instead: kept in the database, it runs on
    a process that serves on (chat/turns/queue.py)."""
    session_id = subscriber.session_id
    turn_id = uuid.uuid4().hex
    accepted_at = timezone.now()
    handed_on = False
    # What the call that takes the session also does: a plain message is stored and
    # the history read with it (sessions_app.turn_db); an edit's or a regenerate's
    # branch is found first, once the turn holds the session (Turn._run).
    opening = {"model": model}
    if ask.kind == MESSAGE:
        opening.update(question={"content": content, "page_context": page_context,
                                 "client_id": client_id, "attachments": list(attachments)},
                       token_budget=setup.history_budget())
    try:
        try:
            await engine.ready()

            async def queued():
                await subscriber.send_frame({
                    "type": "operator_status", "phase": "queued",
                    "detail": "Waiting for the session's running turn to finish",
                })

            async def warn(warnings):
                for warning in warnings:
                    await subscriber.send_frame({"type": "operator_status", "phase": "budget",
                                                 "detail": warning})

            try:
                opened = await engine.lock.acquire(session_id, subscriber.user_id, turn_id, queued,
                                                   warn, **opening)
            except ServerRestarting:
                await _hand_on(subscriber, content=content, page_context=page_context,
                               client_id=client_id, attachments=attachments, ask=ask, model=model,
                               reasoning=reasoning, accepted_at=accepted_at)
                engine.handed_on.heard()  # this process too, once it serves again
                handed_on = True
        finally:
            # Begun by message_submit; once taken, the session counts as running (acquire).
            engine.lock.starting_end(session_id)
    except GatewayError as exc:
        if client_id is not None:
            await _client_id_forget(session_id, client_id)
        await subscriber.send_frame({"type": "error", "message": str(exc), "code": exc.code,
                                     **exc.details})
        return
    except Exception as exc:  # the database failed: say so, never leave the client waiting
        logger.error("session %s: could not start a turn: %s", session_id, exc)
        if client_id is not None:
            await _client_id_forget(session_id, client_id)
        await subscriber.send_frame({"type": "error", "message": _failure_message(exc),
                                     "code": AgentError.code})
        return
    if handed_on:
        # Behind Redis its socket goes to a process that serves on now (1012), where it
        # sees the message run; one process alone keeps it until the drain ends.
        await engine.send_away(session_id)
        return
    taken_over = opened.taken_over
    if taken_over is not None:
        try:
            await engine.remote.interrupted(session_id=session_id, turn_id=taken_over["turn_id"])
        except Exception:  # the new message runs whatever became of the old turn
            logger.exception("could not keep what turn %s streamed", taken_over["turn_id"])
    await Turn(engine, session_id, subscriber.user_id, turn_id).run(
        content, page_context, client_id, attachments, ask, model=model, reasoning=reasoning,
        opened=opened)


HANDED_ON_DETAIL = "The server is restarting: the message is kept and runs after the restart"


async def _hand_on(subscriber: Subscriber, *, content: str, page_context: str | None,
                   client_id: str | None, attachments, ask: Ask, model: str | None,
                   reasoning: str | None, accepted_at) -> None:
    """Keep an accepted message in the database for a process that serves on (this one drains),
    and tell its socket so. Raises BudgetExceeded when a budget is spent (checked here, as
    the process that runs it takes it as accepted), SessionBusy when too many wait already."""
    await _budget_check(subscriber)
    options = {key: value for key, value in (
        ("page_context", page_context), ("attachments", list(attachments)), ("model", model),
        ("reasoning", reasoning)) if value}
    if ask is not PLAIN:
        options["ask"] = {"kind": ask.kind, "message_id": ask.message_id}
    depth = settings.CONSTRUCT_SESSION_QUEUE_DEPTH
    queued_id = await database_sync_to_async(services.queued_add)(
        session_id=subscriber.session_id, user_id=subscriber.user_id, client_id=client_id,
        content=content, options=options, depth=depth, accepted_at=accepted_at,
    )
    if queued_id is None:
        raise SessionBusy(f"Session is busy: {depth} messages already wait for the restart")
    logger.info("session %s: message handed on (this process drains); it runs after the restart",
                subscriber.session_id)
    await subscriber.send_frame({"type": "operator_status", "phase": "queued",
                                 "detail": HANDED_ON_DETAIL})
    # Every process that serves wakes its watchdog, which runs it even if no socket comes back.
    await events.publish_queued_added(session_id=subscriber.session_id)


async def _budget_check(subscriber: Subscriber) -> None:
    """Refuse the message once a budget or quota is spent (BudgetExceeded); warn from 80 %."""
    warnings = await database_sync_to_async(budget.budget_check)(user_id=subscriber.user_id)
    for warning in warnings:
        await subscriber.send_frame({"type": "operator_status", "phase": "budget", "detail": warning})


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, db.Error):
        return DATABASE_UNAVAILABLE
    return sanitize(f"The gateway could not start the turn: {type(exc).__name__}")


async def _client_id_forget(session_id: str, client_id: str) -> None:
    """Forget a client id whose message was not kept, so the client may send it again."""
    try:
        await database_sync_to_async(services.client_id_release)(
            session_id=session_id, client_id=client_id
        )
    except Exception as exc:
        logger.warning("could not forget client id of session %s: %s", session_id, exc)


async def _queued_forget(queued_id: int, turn_id: str) -> None:
    try:
        await database_sync_to_async(services.queued_done)(queued_id=queued_id, turn_id=turn_id)
    except Exception as exc:
        logger.warning("could not forget handed-on message %s: %s", queued_id, exc)


class Turn:
    """One run of the agent for one message, numbering its events."""

    def __init__(self, engine, session_id: str, user_id: int, turn_id: str,
                 queued_id: int | None = None):
        self.engine = engine
        # The handed-on message (QueuedMessage) this turn runs, if it is one: its user
        # message is saved and the row forgotten at once.
        self.queued_id = queued_id
        self.fanout = engine.fanout
        self.session_id = session_id
        self.user_id = user_id
        self.turn_id = turn_id
        self.seq = 0
        self.text: list[str] = []  # everything streamed: the `done` full_response
        self.pending: list[str] = []  # streamed since the last saved message
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0  # of the usage recorded so far
        # Held back for the turn's next database write (_write): the usage of its provider
        # calls (input, output tokens), and its last message, stored as the turn ends.
        self.usages: list[tuple[int, int]] = []
        self.held: list[dict] = []
        self.released = False
        self.running = None  # the lock's RunningTurn, once the turn runs
        self.choice: ModelChoice | None = None  # the model that answers, once the turn runs
        self.reasoning = REASONING_OFF
        self.counted = False  # its end is in the metrics
        self.started = 0.0  # time.monotonic() as it started running here (_observed)
        self.first_chunk = True
        self.outcome = "error"  # how it ended: done, stopped, error or interrupted (_count_end)
        self.first_question: str | None = None  # the session's first message, if this turn answers it

    async def emit(self, type_: str, **fields) -> None:
        if type_ in TERMINAL_TYPES:
            # The operator events published so far (its end or error event too) are kept
            # first: nothing of the turn writes to the database once a client has its end.
            await events.operator_events_kept()
        self.seq += 1
        # No key the gateway holds reaches a client, even if a provider or a tool echoes it.
        event = {"type": type_, **scrub_fields(fields), "turn_id": self.turn_id, "seq": self.seq}
        await self.fanout.publish(self.session_id, event)

    async def run(self, content: str, page_context: str | None, client_id: str | None,
                  attachments: list[str] | tuple = (), ask: Ask = PLAIN, *, model: str | None = None,
                  reasoning: str | None = None, opened: TurnOpened | None = None) -> None:
        with self._observed():
            await self._run(content, page_context, client_id, attachments, ask, model=model,
                            reasoning=reasoning, opened=opened)

    async def _run(self, content, page_context, client_id, attachments, ask, *, model, reasoning,
                   opened):
        """The turn, from the session taken to its end. `opened` says which first steps the call
        that took the session did (turn_db.turn_open); the others are done here."""
        self.running = self.engine.turn_begin(self.session_id, self.turn_id)
        state = ChatSession.State.IDLE
        opened = opened or TurnOpened(started=True)
        user_saved = opened.message_saved
        if opened.first_question:
            self.first_question = content  # its answer's turn proposes a title (titles.py)
        history = opened.history
        try:
            if opened.failure is not None:
                raise opened.failure
            await self._choose(model, reasoning, opened.choice)
            # Found again now the turn holds the session: the branch may have grown meanwhile.
            target = None if ask.kind == MESSAGE else await database_sync_to_async(ask_target)(
                self.session_id, ask)
            if ask.kind == REGENERATE:
                # No new question: the branch ends at the last one again, and the new
                # answer follows it, beside the answer it replaces.
                await database_sync_to_async(services.active_leaf_set)(
                    session_id=self.session_id, message_id=target.pk
                )
                if self.queued_id is not None:
                    await database_sync_to_async(services.queued_done)(
                        queued_id=self.queued_id, turn_id=self.turn_id)
                page_context = (target.data or {}).get("page_context")
            elif not user_saved:  # else stored as the turn took the session
                data = await database_sync_to_async(stored_attachments.question_data)(
                    session_id=self.session_id, page_context=page_context, client_id=client_id,
                    attachment_ids=list(attachments))
                # An edit is a new question beside the one edited; a message continues the branch.
                parent = {"parent_id": target.parent_id} if ask.kind == EDIT else {}
                if self.queued_id is not None:
                    parent["queued_id"] = self.queued_id
                append = services.message_append if self.queued_id is None else \
                    services.queued_message_append
                question = await database_sync_to_async(append)(
                    session_id=self.session_id, role="user", content=content, data=data,
                    turn_id=self.turn_id, **parent,
                )
                if ask.kind == MESSAGE and question.seq == 1:
                    self.first_question = content
            user_saved = True
            if ask.kind != MESSAGE:
                # The active branch changed: every socket redraws it before the turn's first event.
                await self.fanout.publish(self.session_id, await history_frame(self.session_id))
            await events.publish_operator_event({
                "type": "agent_start", "provider": self.choice.provider, "model": self.choice.id,
                "reasoning": self.reasoning, "session_id": self.session_id, "turn_id": self.turn_id,
            }, user_id=self.user_id)
            state = await self._through(self._stream(page_context, history=history))
        except Exception as exc:  # the database failed outside the agent's stream
            state = ChatSession.State.ERROR
            if not user_saved and client_id is not None:
                await _client_id_forget(self.session_id, client_id)  # so a resend runs
            if not user_saved and self.queued_id is not None:
                await _queued_forget(self.queued_id, self.turn_id)  # refused, not run again
            await self._fail(exc)
        finally:
            await self._release(state)
            await self.engine.turn_end(self.session_id, self.turn_id)

    async def resume(self, logged: list[dict], seq_floor: int = 0) -> None:
        """Continue this turn from its saved history, on the process that took it over.

        Its process died while it waited for an approval. `logged` is what it
        sent so far (the shared log): the events number on from there, sockets
        that join are replayed all of it, and `done` has the whole text.
        """
        self.seq = max([event.get("seq", 0) for event in logged] + [seq_floor])
        self.text = [event.get("content", "") for event in logged if event.get("type") == "chunk"]
        with self._observed(resumed=True):
            await self._resume(logged)

    async def _resume(self, logged: list[dict]) -> None:
        self.running = self.engine.turn_begin(self.session_id, self.turn_id, replay=logged)
        state = ChatSession.State.ERROR
        try:
            # The session's model; the level asked for died with the process: the default's.
            await self._choose(None, None)
            state = await self._through(self._stream(None, logged=logged))
        except Exception as exc:
            state = ChatSession.State.ERROR
            await self._fail(exc)
        finally:
            await self._release(state)
            await self.engine.turn_end(self.session_id, self.turn_id)

    def _count_end(self, outcome: str | None = None) -> None:
        """The turn's end, once: its outcome, counted just before its last frame goes out (so
        a client that reads /metrics on that frame finds it counted), or none at all.

        A turn cut off with no end of its own (its task cancelled as the process
        stops) is counted where it is found interrupted (remote.py).
        """
        if outcome is not None:
            self.outcome = outcome  # the last one said, for the span and the end line
        if self.counted:
            return
        self.counted = True
        metrics.RUNNING_TURNS.dec()
        if outcome is not None:
            metrics.turn_ended(outcome, time.monotonic() - self.started)

    @contextlib.contextmanager
    def _observed(self, *, resumed: bool = False):
        """The turn's session and turn ids on every line it logs, its trace span, and its
        start and end lines (who, which model, how it ended, how long it took), and its place
        among the running turns of the metrics."""
        self.started = time.monotonic()
        metrics.RUNNING_TURNS.inc()
        with log_context(session_id=self.session_id, turn_id=self.turn_id), tracing.span("turn", {
            "gen_ai.conversation.id": self.session_id,
            "construct.session_id": self.session_id,
            "construct.turn_id": self.turn_id,
            "construct.user_id": self.user_id,
            "construct.turn.resumed": resumed or None,
        }):
            try:
                yield
            finally:
                self._count_end()  # if it ended with no outcome of its own
                model = self.choice.id if self.choice is not None else None
                duration_ms = round((time.monotonic() - self.started) * 1000)
                tracing.set_attributes({"construct.model": model,
                                        "construct.turn.outcome": self.outcome},
                                       failed=self.outcome == "error")
                logger.info("turn %s of session %s ended: %s after %d ms (user %s, model %s)",
                            self.turn_id, self.session_id, self.outcome, duration_ms, self.user_id,
                            model, extra={"user_id": self.user_id, "model": model,
                                          "outcome": self.outcome, "duration_ms": duration_ms})

    async def _choose(self, model: str | None, reasoning: str | None,
                      choice: ModelChoice | None = None) -> None:
        """The model and reasoning level of this turn (`model` becomes the session's), unless
        the call that took the session chose it (`choice`)."""
        if choice is None:
            choice = await database_sync_to_async(turn_db.turn_model)(self.session_id, model)
        self.choice = choice
        self.reasoning = setup.reasoning_for(self.choice, reasoning)
        tracing.set_attributes({"construct.model": self.choice.id})
        # The turn's start line, once it holds the session and knows its model.
        logger.info("turn %s of session %s started (user %s, model %s)", self.turn_id,
                    self.session_id, self.user_id, self.choice.id,
                    extra={"user_id": self.user_id, "model": self.choice.id})

    async def _through(self, stream) -> str:
        """Run the agent's stream to `done`, `stopped` or `error`; the state the session ends in."""
        running = self.running
        try:
            running.cancellable = True
            await stream
        except asyncio.CancelledError:
            running.cancellable = False
            asyncio.current_task().uncancel()
            if running.interrupted:
                return await self._interrupted()
            await self._save_partial({"stopped": True})
            await self._release(ChatSession.State.IDLE)
            self._count_end("stopped")
            await self.emit("stopped", message=STOPPED_MESSAGE, full_response="".join(self.text))
            return ChatSession.State.IDLE
        except Exception as exc:
            running.cancellable = False
            await self._fail(exc)
            return ChatSession.State.ERROR
        running.cancellable = False
        # The session is free before `done` goes out: a client that sends
        # its next message on `done` finds it idle, not queued.
        failure = await self._release(ChatSession.State.IDLE)
        if failure is not None:  # the reply could not be stored: the turn fails as a save does
            await self._fail(failure)
            return ChatSession.State.ERROR
        self._count_end("done")
        # Its end event is kept before `done` goes out: nothing of the turn writes to the
        # database once a client has its answer.
        await events.publish_operator_event({
            "type": "agent_end", "provider": self.choice.provider, "model": self.choice.id,
            "session_id": self.session_id, "turn_id": self.turn_id,
            "duration_ms": round((time.monotonic() - self.started) * 1000),
            **self._usage(),
        }, user_id=self.user_id)
        await self.emit("chunk_reset")
        await self.emit("done", full_response="".join(self.text), usage=self._usage(),
                        model=self.choice.id)
        if self.first_question is not None and titles.wanted():
            # The chat's first answer: its model proposes a title, in the background.
            self.engine.spawn(titles.title_propose(
                self.fanout, session_id=self.session_id, user_id=self.user_id, turn_id=self.turn_id,
                choice=self.choice, question=self.first_question, answer="".join(self.text)))
        return ChatSession.State.IDLE

    async def _interrupted(self) -> str:
        """End the turn as if its process had died (it drained past CONSTRUCT_DRAIN_SECONDS):
        what it streamed is kept, and every socket is told, as remote.interrupted does."""
        await self._save_partial({"interrupted": True})
        await self._release(ChatSession.State.INTERRUPTED)
        self._count_end("interrupted")
        logger.warning("session %s: turn %s was interrupted: the process drained past its deadline",
                       self.session_id, self.turn_id)
        await self.emit("error", message=INTERRUPTED_MESSAGE, code=AgentError.code, interrupted=True)
        return ChatSession.State.INTERRUPTED

    async def _release(self, state: str) -> Exception | None:
        """Free the session (once) in the state the turn ended in, storing with it what the
        turn held back (its last message, usage not yet recorded): one database call.

        Never raises: returns why the held back part could not be stored (the session
        is then left in the error state, or its lease runs out).
        """
        if self.released:
            return None
        self.released = True
        if self.running is not None:
            self.running.freed = True  # no lease to renew from here on (lock.py)
        if not self.held and not self.usages:
            await self.engine.lock.release(self.session_id, self.turn_id, state)
            return None
        try:
            await self._write([], finish_state=state)
        except Exception as exc:
            logger.warning("turn %s could not store its reply and free session %s: %s",
                           self.turn_id, self.session_id, exc)
            return exc
        return None

    async def _write(self, messages: list[dict], finish_state: str | None = None) -> None:
        """Store the messages held back and `messages` after them, with the usage not yet
        recorded, in one database call (turn_db.turn_save); with `finish_state`, free the
        session too."""
        messages = self.held + messages
        usages, self.usages, self.held = self.usages, [], []
        new_in, new_out = sum(u[0] for u in usages), sum(u[1] for u in usages)
        saved = await database_sync_to_async(turn_db.turn_save)(
            session_id=self.session_id, user_id=self.user_id, turn_id=self.turn_id,
            model=self.choice.id if self.choice is not None else "", usages=usages,
            messages=messages, finish_state=finish_state,
            usage_so_far=(self.input_tokens - new_in, self.output_tokens - new_out, self.cost_usd),
        )
        self.cost_usd += saved.cost_usd
        for (input_tokens, output_tokens), cost in zip(usages, saved.usage_costs):
            metrics.tokens_used(self.choice.id, input_tokens, output_tokens, cost)

    async def _stream(self, page_context: str | None, logged: list[dict] | None = None,
                      history: list[dict] | None = None) -> None:
        """The agent's events as frames; with `logged`, a continued turn (see `resume`);
        `history` when it is read already (turn_db.turn_open)."""
        agent = await setup.prepare_agent(self.choice)
        if history is None:
            history, _dropped = await database_sync_to_async(selectors.history_for_provider)(
                session_id=self.session_id, token_budget=setup.history_budget(),
                open_tail=logged is not None,
            )
        hint = page_context_hint(page_context)
        if hint and history and history[-1]["role"] == "user":
            history[-1] = {**history[-1], "content": hint + history[-1]["content"]}
        # Each message's files go in front of its text (and so in front of the hint).
        history = await history_with_attachments(history, self.session_id)
        if logged is None:
            gate = Gate(self)
        else:
            gate = Gate(self, resuming=unanswered_calls(history), logged=logged)
        emit = self.emit
        ctx = setup.tool_context(self.session_id, self.user_id)
        tools = frozenset(agent.tools.names())
        async for event in agent.run(history, ctx, gate=gate, reasoning=self.reasoning):
            kind = event.__class__
            if kind is Chunk:
                metrics.CHUNKS.inc()
                if self.first_chunk:
                    self.first_chunk = False
                    metrics.TIME_TO_FIRST_CHUNK.observe(time.monotonic() - self.started)
                self.text.append(event.text)
                self.pending.append(event.text)
                await emit("chunk", content=event.text)
            elif kind is Thinking:
                await emit("thinking", content=event.text)
            elif kind is ToolCall:
                await emit("tool_call", name=event.name, args=event.args, id=event.id)
            elif kind is ToolResult:
                await emit("tool_result", name=event.name, output=event.output, id=event.id,
                           is_error=event.is_error)
            elif kind is OperatorStatus:
                await emit("operator_status", phase=event.phase, detail=event.detail)
            elif kind is UsageInfo:
                self._usage_add(event)
            elif kind is Record:
                if event.message["role"] == "tool":
                    _tool_counted(event, tools)
                await self._save(event)

    async def _save(self, record: Record) -> None:
        message = record.message
        data = dict(record.data)
        if message.get("tool_calls"):
            data["tool_calls"] = message["tool_calls"]
        if message["role"] == "tool":
            data.update(tool_call_id=message["tool_call_id"], name=message["name"])
        else:
            self.pending = []
            data.update(self._answered_by())
            if not message.get("tool_calls"):
                # The turn's last message: stored as the turn ends, in the call that frees
                # the session, with the usage of all its provider calls (turn_db.turn_save).
                self.held.append({"role": message["role"], "content": message.get("content") or "",
                                  "data": data, "with_usage": True})
                return
        await self._write([{"role": message["role"], "content": message.get("content") or "",
                            "data": data}])

    async def _save_partial(self, data: dict) -> None:
        """Keep what was streamed since the last saved message, marked as cut short."""
        if self.pending:
            await self._write([{"role": "assistant", "content": "".join(self.pending),
                                "data": {**data, **self._answered_by()}}])
            self.pending = []

    def _usage_add(self, usage: UsageInfo) -> None:
        """A provider call's usage: counted now, recorded (priced under the listed id people
        configure prices for, not usage.model) with the turn's next database write."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.usages.append((usage.input_tokens, usage.output_tokens))

    def _answered_by(self) -> dict:
        """What an assistant message keeps of who wrote it: the model, and the reasoning level.

        Only called once the agent streams, so after `_choose`."""
        by = {"model": self.choice.id}
        if self.reasoning != REASONING_OFF:
            by["reasoning"] = self.reasoning
        return by

    def _usage(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": round(self.cost_usd, 8)}

    async def _fail(self, exc: Exception) -> None:
        if isinstance(exc, GatewayError):
            code, message = exc.code, sanitize(str(exc))
            logger.warning("turn %s of session %s failed: %s", self.turn_id, self.session_id, message)
        elif isinstance(exc, db.Error):
            code, message = AgentError.code, DATABASE_UNAVAILABLE
            logger.error("turn %s of session %s: the database failed: %s", self.turn_id,
                         self.session_id, exc)
        else:
            code, message = AgentError.code, sanitize(f"Agent error: {exc}")
            logger.exception("turn %s of session %s crashed", self.turn_id, self.session_id)
        try:
            await self._save_partial({"error": code})
        except Exception as save_exc:
            logger.warning("turn %s could not keep its partial reply: %s", self.turn_id, save_exc)
        await self._release(ChatSession.State.ERROR)
        self._count_end("error")
        await events.publish_operator_event(
            {"type": "error", "component": "ws_chat", "message": message, "code": code,
             "session_id": self.session_id, "turn_id": self.turn_id},
            user_id=self.user_id,
        )
        await self.emit("error", message=message, code=code)


def _tool_counted(record: Record, tools: frozenset[str]) -> None:
    """Count a tool call by its result's record; a name the model made up counts as unknown."""
    name = record.message.get("name")
    metrics.TOOL_CALLS.labels(name if name in tools else metrics.UNKNOWN_TOOL, record.tool_outcome()).inc()


async def turn_resume(engine, session_id: str, turn_id: str) -> None:
    """Continue a turn this process took over (services.turn_adopt) from its saved history."""
    try:
        session = await database_sync_to_async(selectors.session_get)(session_id=session_id)
        if session is None:
            return
        engine.remote.forget(session_id)  # it runs here from now on
        logged = await engine.remote.logged(turn_id)
        if any(event.get("type") in TERMINAL_TYPES for event in logged):
            # It did end; only the session row missed it.
            await engine.lock.release(session_id, turn_id, ChatSession.State.IDLE)
            return
        floor = await database_sync_to_async(selectors.turn_approvals_seq)(
            session_id=session_id, turn_id=turn_id
        )
    except Exception:  # the lease taken runs out again, and the watchdog tries again
        logger.exception("could not continue turn %s of session %s", turn_id, session_id)
        return
    await Turn(engine, session_id, session.user_id, turn_id).resume(logged, seq_floor=floor)
