"""Tool calls that wait for a person's approval, on any socket and any process.

Before each tool call runs, the turn asks its `Gate` (the agent awaits it).
The policy (construct_core/approvals.py, CONSTRUCT_TOOL_APPROVAL) says `auto`
(run it), `deny` (a denied result, nobody asked) or `ask`: then the approval
is written to the database (after the assistant message with the call is
saved), `approval_request` goes to every socket of the session as a turn
event, and the turn waits. It holds no provider connection meanwhile (the
model's reply has ended), and renews its session lease as any turn does.

An answer comes from any socket of the session, REST or admin, on any
process: `services.approval_decide` decides it (one conditional update, so
one answer wins), and `events.publish_approval_decided` tells every process's
engine (`Approvals.on_decided`). The process whose turn waits resumes it; if
that process died, the lease it held runs out and the turn is "parked": a
process that hears the answer, or whose watchdog finds the parked turn, takes
it over (`services.turn_adopt`) and continues it from the saved history
(chat/turns/run.py `turn_resume`).

The watchdog (on every process where some rule asks, or something waits)
also decides as `timeout` the approvals nobody answered in time, whether or
not any socket is open and whether or not the process that asked is alive;
and it runs the messages a draining process handed on (chat/turns/queue.py).
"""

import asyncio
import json
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from chat.agent.events import ToolCallRequest, Verdict
from chat.agent.loop import RUN
from construct_core import approvals as rules
from construct_core.drain import draining
from construct_core.errors import ApprovalInvalid
from sessions_app import events, selectors, services
from sessions_app.models import ToolApproval

logger = logging.getLogger(__name__)

# How often a waiting turn looks at its approval's row (an announcement lost
# on the way), and how often the watchdog looks for timeouts and parked turns.
POLL_SECONDS = 2.0
WATCH_SECONDS = 1.0
# Re-join the engines' group this often (channels-redis forgets members after a day).
REJOIN_SECONDS = 3600.0

STOPPED_RESULT = "Denied: the turn was stopped while {name} waited for approval; it was not run"
POLICY_RESULT = "Denied: the gateway's tool policy does not allow {name}; it was not run"
TIMEOUT_RESULT = "Denied: nobody approved {name} within {seconds:g} seconds; it was not run"
DENIED_RESULT = "Denied by {by}: {name} was not run"


def policy_rules() -> rules.Rules:
    return settings.CONSTRUCT_TOOL_APPROVAL


def asks_anyone() -> bool:
    return rules.asks_anyone(policy_rules())


@dataclass(slots=True)
class Decided:
    """An approval's answer, as a waiting turn gets it."""

    approval_id: str
    decision: str
    by: str
    args: dict | None = None

    @classmethod
    def of_row(cls, row: ToolApproval) -> "Decided":
        return cls(row.pk, row.decision, row.by, row.decided_args)

    @classmethod
    def of_message(cls, message: dict) -> "Decided":
        return cls(message["approval_id"], message["decision"], message.get("by", ""),
                   message.get("args"))


class Approvals:
    """This process's part: the turns waiting here, the engines' group, the watchdog.

    `resume(session_id, turn_id)` is awaited (as an engine task) for a parked
    turn this process took over.
    """

    def __init__(self, engine, resume, sweep_also=None):
        self.engine = engine
        self._resume = resume
        # More work for each round of the watchdog (the messages draining processes handed on).
        self._sweep_also = sweep_also
        self._waiting: dict[str, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        self._listening: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._started = False

    # --- Life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Listen to the engines' group; run the watchdog if some rule asks or something waits.

        Once per process (per loop), and in the background: a socket that joins
        never waits for the channel layer or the database here.
        """
        if self._started:
            return
        self._started = True
        self._listening = asyncio.Event()
        self._listener = self.engine.spawn(self._listen())
        if asks_anyone():
            self.watch()
        else:
            self.engine.spawn(self._watch_if_waiting())

    async def _watch_if_waiting(self) -> None:
        """No rule asks (now): still watch if approvals from before wait, or a dead turn does."""
        try:
            if await database_sync_to_async(selectors.approvals_waiting_any)():
                self.watch()
        except Exception as exc:
            logger.warning("could not look for waiting approvals: %r", exc)

    async def listening(self, timeout: float = 1.0) -> None:
        """Wait (a little) until this process hears decisions made elsewhere.

        Not hearing them is not fatal: a waiting turn also looks at its row.
        """
        self.start()
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning("the channel layer did not answer: approvals decided on other processes "
                           "reach this one by polling only, for now")

    def watch(self) -> None:
        """Run the watchdog (timeouts, parked turns) from now on; wake it if it sleeps."""
        if self._kick is None:
            self._kick = asyncio.Event()
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = self.engine.spawn(self._watch_loop())
        self._kick.set()

    async def _listen(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            self._listening.set()
            return
        loop = asyncio.get_running_loop()
        channel = None
        joined_at = None
        delay = 0.5
        task = asyncio.current_task()
        while True:
            if task.cancelling():
                # A cancellation that came as a message did (Python 3.11's wait_for then
                # returns the message): honour it, or the task would wait on for good.
                raise asyncio.CancelledError()
            try:
                if channel is None:
                    channel = await layer.new_channel()
                if joined_at is None or loop.time() - joined_at > REJOIN_SECONDS:
                    # The process's groups, for the engine and for its sockets (events.py).
                    for group in events.PROCESS_GROUPS:
                        await layer.group_add(group, channel)
                    joined_at = loop.time()
                    self._listening.set()
                try:
                    message = await asyncio.wait_for(layer.receive(channel), REJOIN_SECONDS)
                except asyncio.TimeoutError:
                    continue
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer (Redis) is away: wait, then join again
                if task.cancelling():
                    # Cancelled mid-read: the Redis client may raise ConnectionError instead
                    # of CancelledError, and a retry would swallow the cancellation for good.
                    raise asyncio.CancelledError() from exc
                logger.warning("approvals: the channel layer failed, retrying: %r", exc)
                joined_at = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if message.get("type") == "approval.decided":
                try:
                    await self.on_decided(message)
                except Exception:
                    logger.exception("approvals: could not act on a decision")
            elif message.get("type") == "queued.added":
                self.engine.handed_on.heard()
            elif message.get("type") == "branch.switched":
                # The engines' group carries this too: one listener per process.
                try:
                    await self.engine.on_branch_switched(message)
                except Exception:
                    logger.exception("could not send the history of a switched branch")
            else:  # for this process's sockets (events.PROCESS_GROUPS)
                try:
                    await self.engine.fanout.relay(message)
                except Exception:
                    logger.exception("could not relay a %s to the sockets", message.get("type"))

    # --- Decisions -----------------------------------------------------------------------

    async def announce(self, row: ToolApproval) -> None:
        """A decision was written: wake the turn waiting here, and tell every process."""
        self._resolve(events.approval_decided_message(row))
        await events.publish_approval_decided(row)

    def _resolve(self, message: dict) -> bool:
        future = self._waiting.get(message.get("approval_id"))
        if future is None:
            return False
        if not future.done():
            future.set_result(message)
        return True

    async def on_decided(self, message: dict) -> None:
        """Every process hears each decision: the waiting turn's continues; if it died, one takes over."""
        if self._resolve(message):
            return
        session_id, turn_id = message.get("session_id"), message.get("turn_id")
        if isinstance(session_id, str) and isinstance(turn_id, str):
            await self.adopt(session_id, turn_id)

    async def deny_waiting(self, *, session_id: str, turn_id: str, by: str) -> bool:
        """Deny the approvals a turn with no live process waits for (a stop); False when none."""
        pending = await database_sync_to_async(selectors.approvals_pending_of_turn)(
            session_id=session_id, turn_id=turn_id
        )
        denied = False
        for approval_id in pending:
            try:
                row = await database_sync_to_async(services.approval_decide)(
                    approval_id=approval_id, decision=rules.DENY, by=by or "stop"
                )
            except ApprovalInvalid:
                continue
            await self.announce(row)
            denied = True
        if denied:
            self.watch()
        return denied

    async def adopt(self, session_id: str, turn_id: str) -> bool:
        """Take over a parked turn (its process died while it waited) and continue it here."""
        if self.engine.lock.running(session_id) is not None or draining():
            return False  # a draining process starts no turn: one that serves on takes it
        won = await database_sync_to_async(services.turn_adopt)(
            session_id=session_id, turn_id=turn_id, owner=self.engine.process_id,
            lease_seconds=settings.CONSTRUCT_TURN_LEASE_SECONDS,
        )
        if won:
            logger.warning("session %s: continuing turn %s, whose process stopped while it waited "
                           "for an approval", session_id, turn_id)
            self.engine.spawn(self._resume(session_id, turn_id))
        return won

    async def wait(self, row: ToolApproval) -> Decided:
        """The approval's answer: from any process, or the timeout's once it expires."""
        loop = asyncio.get_running_loop()
        approval_id = row.pk
        future = self._waiting.get(approval_id)
        if future is None:
            future = self._waiting[approval_id] = loop.create_future()
        get = database_sync_to_async(selectors.approval_get)
        try:
            while True:
                if row.state != ToolApproval.State.PENDING:
                    return Decided.of_row(row)
                remaining = (row.expires_at - timezone.now()).total_seconds()
                try:
                    message = await asyncio.wait_for(asyncio.shield(future),
                                                     max(min(remaining, POLL_SECONDS), 0.0))
                except asyncio.TimeoutError:
                    pass
                else:
                    return Decided.of_message(message)
                if remaining <= 0:
                    try:
                        decided = await database_sync_to_async(services.approval_decide)(
                            approval_id=approval_id, decision=rules.TIMEOUT, by="timeout"
                        )
                    except ApprovalInvalid:
                        pass  # answered meanwhile: the row says how
                    else:
                        await self.announce(decided)
                        return Decided.of_row(decided)
                fresh = await get(approval_id=approval_id)
                if fresh is None:  # its session was deleted under the turn
                    return Decided(approval_id, rules.DENY, "gone")
                row = fresh
        finally:
            self._waiting.pop(approval_id, None)

    def expect(self, approval_id: str) -> None:
        """Be ready for the answer before anyone can see the request."""
        self._waiting.setdefault(approval_id, asyncio.get_running_loop().create_future())

    # --- The watchdog --------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("approvals watchdog: %r", exc)
            self._kick.clear()
            try:
                await asyncio.wait_for(self._kick.wait(), WATCH_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def sweep(self) -> None:
        """Decide the approvals past their expiry as `timeout`; take over parked turns."""
        for approval_id in await database_sync_to_async(selectors.approvals_expired)():
            try:
                row = await database_sync_to_async(services.approval_decide)(
                    approval_id=approval_id, decision=rules.TIMEOUT, by="timeout"
                )
            except ApprovalInvalid:
                continue  # another process (or the turn itself) was first
            await self.announce(row)
        for session_id, turn_id in await database_sync_to_async(selectors.turns_parked)():
            await self.adopt(session_id, turn_id)
        if self._sweep_also is not None:
            await self._sweep_also()


class Gate:
    """A turn's gate: asked by the agent before each tool call runs (chat/agent/loop.py)."""

    def __init__(self, turn, resuming: list[ToolCallRequest] = (), logged: list[dict] = ()):
        self.turn = turn
        self.approvals: Approvals = turn.engine.approvals
        self.rules = policy_rules()
        # Calls a continued turn answers first: they may have an approval already.
        self._resuming = {call.id for call in resuming}
        self._requested = {event.get("approval_id") for event in logged
                           if event.get("type") == "approval_request"}
        self._answered = {event.get("approval_id") for event in logged
                          if event.get("type") == "approval_result"}

    async def __call__(self, call: ToolCallRequest) -> Verdict:
        turn = self.turn
        row = None
        if call.id in self._resuming:
            row = await database_sync_to_async(selectors.approval_for_call)(
                session_id=turn.session_id, turn_id=turn.turn_id, tool_call_id=call.id
            )
        if row is None:
            policy = rules.policy_for(self.rules, call.name)
            if policy == rules.AUTO:
                return RUN
            args = _parse_args(call.arguments)
            if policy == rules.DENY:
                await database_sync_to_async(services.approval_policy_denied)(
                    session_id=turn.session_id, name=call.name, args=args
                )
                return Verdict(run=False, reason=POLICY_RESULT.format(name=call.name))
            allowed = await database_sync_to_async(selectors.session_always_allowed)(
                session_id=turn.session_id
            )
            if call.name in allowed:
                return RUN
            row = await self._ask(call, args)
        try:
            # A new approval's request, or one lost with its process's memory. A stop that
            # comes while it is announced finds the row written: it is denied like any.
            if row.state == ToolApproval.State.PENDING and row.pk not in self._requested:
                await self._request(row)
            decided = await self.approvals.wait(row)
        except asyncio.CancelledError:
            await self._stopped(row, call)
            raise
        await database_sync_to_async(services.approval_applied)(approval_id=row.pk)
        if decided.approval_id not in self._answered:
            await self._result(row, decided)
        if decided.decision in (rules.APPROVE, rules.ALWAYS):
            return Verdict(run=True, args=decided.args if isinstance(decided.args, dict) else None)
        if decided.decision == rules.TIMEOUT:
            return Verdict(run=False, reason=TIMEOUT_RESULT.format(
                name=call.name, seconds=settings.CONSTRUCT_APPROVAL_TIMEOUT))
        return Verdict(run=False, reason=DENIED_RESULT.format(by=decided.by or "a person",
                                                              name=call.name))

    async def _ask(self, call: ToolCallRequest, args) -> ToolApproval:
        """Write the approval (the caller sends its request): no answer can come before the row exists."""
        turn = self.turn
        await self.approvals.listening()
        row = await database_sync_to_async(services.approval_create)(
            session_id=turn.session_id, turn_id=turn.turn_id, tool_call_id=call.id, name=call.name,
            args=args, seq=turn.seq + 1, timeout_seconds=settings.CONSTRUCT_APPROVAL_TIMEOUT,
        )
        self.approvals.expect(row.pk)
        self.approvals.watch()
        return row

    async def _request(self, row: ToolApproval) -> None:
        turn = self.turn
        self._requested.add(row.pk)
        await turn.emit("approval_request", approval_id=row.pk, tool_call_id=row.tool_call_id,
                        name=row.name, args=row.args, expires_at=row.expires_at.isoformat())
        await events.publish_operator_event({
            "type": "approval_request", "session_id": turn.session_id, "turn_id": turn.turn_id,
            "approval_id": row.pk, "name": row.name, "expires_at": row.expires_at.isoformat(),
        }, user_id=turn.user_id)

    async def _result(self, row: ToolApproval, decided: Decided) -> None:
        turn = self.turn
        self._answered.add(decided.approval_id)
        fields = {"approval_id": decided.approval_id, "decision": decided.decision, "by": decided.by}
        if isinstance(decided.args, dict) and decided.decision in (rules.APPROVE, rules.ALWAYS):
            fields["args"] = decided.args
        await turn.emit("approval_result", **fields)
        await events.publish_operator_event({
            "type": "approval_result", "session_id": turn.session_id, "turn_id": turn.turn_id,
            "approval_id": decided.approval_id, "name": row.name, "decision": decided.decision,
            "by": decided.by,
        }, user_id=turn.user_id)

    async def _stopped(self, row: ToolApproval, call: ToolCallRequest) -> None:
        """A stop while the call waits: the approval is denied (by who stopped) and the call not run."""
        turn = self.turn
        by = getattr(turn.running, "stopped_by", "") or "stop"
        try:
            decided_row = await database_sync_to_async(services.approval_decide)(
                approval_id=row.pk, decision=rules.DENY, by=by, user_id=None
            )
            await events.publish_approval_decided(decided_row)
        except ApprovalInvalid:
            decided_row = await database_sync_to_async(selectors.approval_get)(approval_id=row.pk)
        except Exception as exc:
            logger.warning("could not deny approval %s of a stopped turn: %r", row.pk, exc)
            decided_row = None
        decided = (Decided.of_row(decided_row) if decided_row is not None
                   and decided_row.state != ToolApproval.State.PENDING
                   else Decided(row.pk, rules.DENY, by))
        try:
            await database_sync_to_async(services.approval_applied)(approval_id=row.pk)
            if decided.approval_id not in self._answered:
                await self._result(row, decided)
            output = STOPPED_RESULT.format(name=call.name)
            await turn.emit("tool_result", name=call.name, output=output, id=call.id, is_error=True)
            await database_sync_to_async(services.message_append)(
                session_id=turn.session_id, role="tool", content=output, turn_id=turn.turn_id,
                data={"tool_call_id": call.id, "name": call.name, "is_error": True, "denied": True},
            )
        except Exception as exc:
            logger.warning("could not record the denied call of a stopped turn: %r", exc)


def _parse_args(arguments: str):
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
