"""A turn: from an accepted message to its saved reply, owned by the session.

The socket that sent the message only starts it. The turn waits for the
session's lock (in the database, so it holds across processes), saves the user
message, runs the agent, streams every event to all of the session's sockets
through the hub, saves the reply and frees the session. A dropped socket changes
none of that.
"""

import asyncio
import logging
import time
import uuid

from channels.db import database_sync_to_async
from django import db
from django.conf import settings
from django.utils import timezone

from chat import runtime, turnlog
from chat.agent import Chunk, OperatorStatus, Record, Thinking, ToolCall, ToolResult, UsageInfo
from chat.hub import TERMINAL_TYPES, get_hub
from chat.prompts import page_context_hint
from construct_core.errors import DATABASE_UNAVAILABLE, AgentError, GatewayError, SessionBusy
from construct_core.redaction import sanitize, scrub_fields
from sessions_app import budget, events, selectors, services
from sessions_app.models import ChatSession

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.25


class Requester:
    """The socket that sent a message, for the replies meant for it alone."""

    def __init__(self, send_json):
        self._send_json = send_json

    async def send(self, frame: dict) -> None:
        try:
            await self._send_json(frame)
        except Exception:  # the socket is gone; the turn goes on without it
            logger.debug("requester socket gone", exc_info=True)


async def message_submit(*, session_id: str, content: str, page_context: str | None,
                         client_id: str | None, requester: Requester) -> None:
    """Accept a message: drop a resend, acknowledge, and start its work as the session's task."""
    if client_id is not None:
        fresh = await database_sync_to_async(services.client_id_claim)(
            session_id=session_id, client_id=client_id
        )
        await requester.send({"type": "ack", "client_id": client_id, "duplicate": not fresh})
        if not fresh:
            return
    get_hub().spawn(
        session_id,
        _message_run(session_id=session_id, content=content, page_context=page_context,
                     client_id=client_id, requester=requester),
    )


async def turn_stop(*, session_id: str) -> bool:
    """Cancel the session's running turn, here or on the process that runs it.

    False when no turn runs anywhere (or its process is gone). The turn's own
    `stopped` event is the answer, to every socket of the session.
    """
    hub = get_hub()
    if hub.stop(session_id):
        return True
    if hub.bus is None or hub.running(session_id) is not None:
        return False
    session = await database_sync_to_async(selectors.session_get)(session_id=session_id)
    if session is None or session.state != ChatSession.State.RUNNING or not session.turn_owner:
        return False
    try:
        heard = await hub.bus.send_control(
            session.turn_owner, {"action": "stop", "session_id": session_id, "turn_id": session.turn_id}
        )
    except Exception as exc:
        logger.warning("could not ask process %s to stop turn %s: %r", session.turn_owner,
                       session.turn_id, exc)
        return False
    return heard > 0


async def _message_run(*, session_id, content, page_context, client_id, requester) -> None:
    turn_id = uuid.uuid4().hex
    try:
        await _budget_check(requester)
        taken_over = await _acquire(session_id, turn_id, requester)
    except GatewayError as exc:
        if client_id is not None:
            await database_sync_to_async(services.client_id_release)(
                session_id=session_id, client_id=client_id
            )
        await requester.send({"type": "error", "message": str(exc), "code": exc.code})
        return
    except Exception as exc:  # the database failed: say so, never leave the client waiting
        logger.error("session %s: could not start a turn: %s", session_id, exc)
        if client_id is not None:
            await _client_id_forget(session_id, client_id)
        await requester.send({"type": "error", "message": _failure_message(exc), "code": AgentError.code})
        return
    if taken_over is not None:
        try:
            await turn_interrupted(session_id=session_id, turn_id=taken_over["turn_id"])
        except Exception:  # the new message runs whatever became of the old turn
            logger.exception("could not keep what turn %s streamed", taken_over["turn_id"])
    await Turn(session_id, turn_id).run(content, page_context, client_id)


async def _budget_check(requester: Requester) -> None:
    """Refuse the message once the daily budget is spent (BudgetExceeded); warn from 80 %."""
    status = await database_sync_to_async(budget.budget_check)()
    if status.warning:
        await requester.send({"type": "operator_status", "phase": "budget", "detail": status.warning})


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


async def _acquire(session_id: str, turn_id: str, requester: Requester) -> dict | None:
    """Take the session's lock, queueing behind its running turn; raise SessionBusy.

    Returns the turn it took over from a dead process ({"turn_id", "owner"}), if any.
    """
    hub = get_hub()
    await hub.ready()
    timeout = settings.CONSTRUCT_SESSION_QUEUE_TIMEOUT
    depth = settings.CONSTRUCT_SESSION_QUEUE_DEPTH
    lease = settings.CONSTRUCT_TURN_LEASE_SECONDS
    try_start = database_sync_to_async(services.turn_try_start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiter_id = None
    try:
        while True:
            started, taken_over = await try_start(
                session_id=session_id, turn_id=turn_id, owner=hub.process_id,
                lease_seconds=lease, waiter_id=waiter_id,
            )
            if started:
                if taken_over:
                    logger.warning("session %s: took over turn %s of a process that stopped",
                                   session_id, taken_over["turn_id"])
                return taken_over
            if waiter_id is None:
                waiter_id = await database_sync_to_async(services.waiter_add)(
                    session_id=session_id, depth=depth, timeout=timeout
                )
                if waiter_id is None:
                    raise SessionBusy(
                        f"Session is busy: {depth} messages are already waiting for the running turn"
                    )
                await requester.send({
                    "type": "operator_status", "phase": "queued",
                    "detail": "Waiting for the session's running turn to finish",
                })
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SessionBusy(
                    f"Session is busy: the running turn did not finish within {timeout:g} seconds"
                )
            # A turn ending here wakes us at once; one on another process is seen by polling.
            await hub.wait_turn_end(session_id, min(remaining, POLL_INTERVAL))
    finally:
        if waiter_id is not None:
            await database_sync_to_async(services.waiter_remove)(waiter_id=waiter_id)


# --- Turns seen from a socket, and turns whose process died ------------------------

INTERRUPTED_MESSAGE = (
    "Interrupted: the server process running this turn stopped; the partial reply is kept in history"
)


async def turn_recover_stale(*, session: ChatSession) -> None:
    """End the session's turn as interrupted if its process died (its lease ran out).

    Called as a socket opens, before it joins the session: it is told
    "interrupted" in session_start; sockets already watching get the turn's end.
    """
    lease = session.lease_expires_at
    if (session.state == ChatSession.State.RUNNING and session.turn_id
            and get_hub().running(session.id) is None
            and (lease is None or lease <= timezone.now())):
        if await turn_interrupted(session_id=session.id, turn_id=session.turn_id, mark=True):
            session.state = ChatSession.State.INTERRUPTED


async def turn_replay(*, session: ChatSession, last_seq: int = 0,
                      turn_id: str | None = None) -> tuple[str, str | None, list[dict]]:
    """What a socket that connects now is told: (state, running turn id, its events so far).

    Called once the socket is attached and watching (hub.attach, hub.watch), so
    whatever the turn emits later reaches it live. `last_seq` counts in the
    running turn, or in `turn_id` when the client names the running one.
    """
    hub = get_hub()
    local = hub.running(session.id)
    if local is not None:
        last = local.events[-1]["type"] if local.events else None
        if last in TERMINAL_TYPES:  # ended; only its last window is still going out
            ended = ChatSession.State.ERROR if last == "error" else ChatSession.State.IDLE
            return ended, None, []
        after = last_seq if turn_id in (None, local.turn_id) else 0
        return ChatSession.State.RUNNING, local.turn_id, hub.replay(session.id, local.turn_id, after)
    state, current = session.state, session.turn_id
    if state != ChatSession.State.RUNNING or not current:
        return state, None, []
    after = last_seq if turn_id in (None, current) else 0
    hub.follow(session.id, current, after)
    replay = await _logged(current, after)
    hub.seen(session.id, replay)
    return state, current, replay


async def turn_check_remote(*, session_id: str, turn_id: str, seq: int) -> bool:
    """Look at a quiet turn of another process; False once there is nothing more to wait for."""
    session = await database_sync_to_async(selectors.session_get)(session_id=session_id)
    if session is None:
        return False
    if session.state == ChatSession.State.RUNNING and session.turn_id == turn_id:
        lease = session.lease_expires_at
        if lease is not None and lease > timezone.now():
            return True
        await turn_interrupted(session_id=session_id, turn_id=turn_id, mark=True)
        return False
    # It ended and its last window never reached this process: send the rest.
    rest = await _logged(turn_id, seq)
    if rest:
        await get_hub().deliver_remote(session_id, rest)
    return False


async def turn_interrupted(*, session_id: str, turn_id: str, mark: bool = False) -> bool:
    """End a turn whose process died: keep what it streamed, tell whoever watches it.

    With `mark`, first mark the session interrupted, if the turn still holds
    it with a lease that ran out; False when it does not (someone else ended
    it). Without, the caller has taken the session over already (turn_try_start).
    """
    if mark and not await database_sync_to_async(services.turn_interrupt)(
        session_id=session_id, turn_id=turn_id
    ):
        return False
    hub = get_hub()
    logged = await _logged(turn_id)
    if any(event["type"] in TERMINAL_TYPES for event in logged):
        return True  # it did end; only the session row missed it
    text = _unsaved_text(logged)
    if text:
        await database_sync_to_async(services.message_append)(
            session_id=session_id, role="assistant", content=text, data={"interrupted": True},
            turn_id=turn_id,
        )
    seq = max([event["seq"] for event in logged] + [hub.seen_seq(session_id, turn_id)])
    logger.warning("session %s: turn %s was interrupted (its process stopped) after %d events",
                   session_id, turn_id, seq)
    await hub.publish(session_id, {
        "type": "error", "message": INTERRUPTED_MESSAGE, "code": AgentError.code,
        "interrupted": True, "turn_id": turn_id, "seq": seq + 1,
    })
    await events.publish_operator_event({
        "type": "error", "component": "ws_chat", "message": INTERRUPTED_MESSAGE,
        "code": AgentError.code, "session_id": session_id, "turn_id": turn_id,
    })
    return True


async def _logged(turn_id: str, after_seq: int = 0) -> list[dict]:
    """A turn's events from the shared log; none without Redis, or while it is away."""
    if get_hub().bus is None:
        return []
    try:
        return await turnlog.log_read(turn_id, after_seq)
    except Exception as exc:
        logger.warning("could not read the log of turn %s: %r", turn_id, exc)
        return []


def _unsaved_text(logged: list[dict]) -> str:
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


class Turn:
    """One run of the agent for one message, numbering its events."""

    def __init__(self, session_id: str, turn_id: str):
        self.session_id = session_id
        self.turn_id = turn_id
        self.seq = 0
        self.hub = get_hub()
        self.text: list[str] = []  # everything streamed: the `done` full_response
        self.pending: list[str] = []  # streamed since the last saved message
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.released = False

    async def emit(self, type_: str, **fields) -> None:
        self.seq += 1
        # No key the gateway holds reaches a client, even if a provider or a tool echoes it.
        event = {"type": type_, **scrub_fields(fields), "turn_id": self.turn_id, "seq": self.seq}
        await self.hub.publish(self.session_id, event)

    async def run(self, content: str, page_context: str | None, client_id: str | None) -> None:
        running = self.hub.turn_begin(self.session_id, self.turn_id)
        started = time.monotonic()
        config = runtime.provider_config()
        state = ChatSession.State.IDLE
        user_saved = False
        try:
            data = {k: v for k, v in (("page_context", page_context), ("client_id", client_id)) if v}
            await database_sync_to_async(services.message_append)(
                session_id=self.session_id, role="user", content=content, data=data,
                turn_id=self.turn_id,
            )
            user_saved = True
            await events.publish_operator_event({
                "type": "agent_start", "provider": config.provider, "model": config.model,
                "session_id": self.session_id, "turn_id": self.turn_id,
            })
            try:
                running.cancellable = True
                await self._stream(page_context)
            except asyncio.CancelledError:
                running.cancellable = False
                asyncio.current_task().uncancel()
                await self._save_partial({"stopped": True})
                await self._release(ChatSession.State.IDLE)
                await self.emit("stopped", message="Stopped: the partial reply is kept in history",
                                full_response="".join(self.text))
                return
            except Exception as exc:
                running.cancellable = False
                state = ChatSession.State.ERROR
                await self._fail(exc)
                return
            running.cancellable = False
            # The session is free before `done` goes out: a client that sends
            # its next message on `done` finds it idle, not queued.
            await self._release(ChatSession.State.IDLE)
            await self.emit("chunk_reset")
            await self.emit("done", full_response="".join(self.text), usage=self._usage())
            await events.publish_operator_event({
                "type": "agent_end", "provider": config.provider, "model": config.model,
                "session_id": self.session_id, "turn_id": self.turn_id,
                "duration_ms": round((time.monotonic() - started) * 1000),
                **self._usage(),
            })
        except Exception as exc:  # the database failed outside the agent's stream
            state = ChatSession.State.ERROR
            if not user_saved and client_id is not None:
                await _client_id_forget(self.session_id, client_id)  # so a resend runs
            await self._fail(exc)
        finally:
            await self._release(state)
            await self.hub.flush()
            self.hub.turn_end(self.session_id, self.turn_id)

    async def _release(self, state: str) -> None:
        """Free the session (once) in the state the turn ended in.

        Never raises: if the database fails here, the turn's lease runs out
        instead and the session's next message takes it over.
        """
        if not self.released:
            self.released = True
            try:
                await database_sync_to_async(services.turn_finish)(
                    session_id=self.session_id, turn_id=self.turn_id, state=state
                )
            except Exception as exc:
                logger.warning("turn %s could not free session %s (its lease will run out): %s",
                               self.turn_id, self.session_id, exc)

    async def _stream(self, page_context: str | None) -> None:
        agent = await runtime.prepare_agent()
        history, _dropped = await database_sync_to_async(selectors.history_for_provider)(
            session_id=self.session_id, token_budget=runtime.history_budget()
        )
        hint = page_context_hint(page_context)
        if hint and history and history[-1]["role"] == "user":
            history[-1] = {**history[-1], "content": hint + history[-1]["content"]}
        async for event in agent.run(history, runtime.tool_context(self.session_id)):
            if isinstance(event, Chunk):
                self.text.append(event.delta)
                self.pending.append(event.delta)
                await self.emit("chunk", content=event.delta)
            elif isinstance(event, Thinking):
                await self.emit("thinking", content=event.delta)
            elif isinstance(event, ToolCall):
                await self.emit("tool_call", name=event.name, args=event.args, id=event.id)
            elif isinstance(event, ToolResult):
                await self.emit("tool_result", name=event.name, output=event.output, id=event.id,
                                is_error=event.is_error)
            elif isinstance(event, OperatorStatus):
                await self.emit("operator_status", phase=event.phase, detail=event.detail)
            elif isinstance(event, UsageInfo):
                await self._record_usage(event)
            elif isinstance(event, Record):
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
        await database_sync_to_async(services.message_append)(
            session_id=self.session_id, role=message["role"], content=message.get("content") or "",
            data=data, turn_id=self.turn_id,
        )

    async def _save_partial(self, data: dict) -> None:
        """Keep what was streamed since the last saved message, marked as cut short."""
        if self.pending:
            await database_sync_to_async(services.message_append)(
                session_id=self.session_id, role="assistant", content="".join(self.pending),
                data=data, turn_id=self.turn_id,
            )
            self.pending = []

    async def _record_usage(self, usage: UsageInfo) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        record = await database_sync_to_async(services.usage_record)(
            session_id=self.session_id, turn_id=self.turn_id, model=usage.model,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        )
        self.cost_usd += float(record.cost_usd)

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
        await self.emit("error", message=message, code=code)
        await events.publish_operator_event(
            {"type": "error", "component": "ws_chat", "message": message, "code": code,
             "session_id": self.session_id, "turn_id": self.turn_id}
        )
