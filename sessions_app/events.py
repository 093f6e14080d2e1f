"""Channel-layer groups and every event that leaves through them: the domain's one outlet.

Low-volume events (operator events, channel events, a revoked device) go
through the channel layer, from the REST API, the admin and the turn engine
alike. A turn's streamed events do not: the turn engine sends them itself.

The groups' members are server processes, not sockets: each process's turn
engine joins them once, on one channel, and hands each message to its own
sockets (by user, or staff). So a socket that connects or leaves makes no
channel-layer call at all: a burst of connects cannot exhaust the layer's
Redis connections, and an idle socket holds no channel of its own.
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from construct_core.loops import per_loop
from construct_core.redaction import scrub_value
from sessions_app import services

logger = logging.getLogger(__name__)

# For every chat socket: a staff operator's channel events (relayed as `agent_event`),
# a revoked device (the sockets of that device close).
SOCKETS_GROUP = "construct.sockets"
# A turn's start, end or error, with its `user_id`: for that user's sockets and staff sockets.
OPERATORS_GROUP = "construct.operators"
# The turn engine of every server process: approvals decided anywhere, active branches
# switched anywhere, and a user's own channel events (with its `user_id`).
ENGINES_GROUP = "construct.engines"
# What a server process joins, on one channel, for itself and its sockets.
PROCESS_GROUPS = (ENGINES_GROUP, SOCKETS_GROUP, OPERATORS_GROUP)


async def _group_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception:  # a lost fan-out must not end a turn; local sockets still work
        logger.warning("could not send to group %s", group, exc_info=True)


async def _keep(event, *, user_id: int | None) -> None:
    """Keep the event (scrubbed) for pages opened later (GET /api/channel-events/); one that
    cannot be kept is still sent."""
    try:
        await database_sync_to_async(services.operator_event_record)(
            event=event, user_id=user_id, session_id=_session_of(event))
    except Exception as exc:
        logger.warning("could not keep an operator event: %s", type(exc).__name__)


def _session_of(event) -> str:
    return event.get("session_id", "") if isinstance(event, dict) else ""


class _Keeper:
    """The turns' events waiting to be kept, and the task that keeps them.

    A turn's start and end each made a database call of their own, queued on the
    one database thread with every turn's work. Now they wait here, and one call
    keeps all that came meanwhile: one at a time when the gateway is quiet (at
    once, no timer), in batches under load.
    """

    def __init__(self):
        self.waiting: list[tuple] = []
        self.task: asyncio.Task | None = None

    def add(self, event, user_id: int | None) -> None:
        self.waiting.append((event, user_id, _session_of(event)))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._keep_all())

    async def _keep_all(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                await database_sync_to_async(services.operator_events_record)(events=batch)
            except Exception as exc:
                logger.warning("could not keep %d operator events: %s", len(batch), type(exc).__name__)


_keeper = per_loop(_Keeper)


async def operator_events_kept() -> None:
    """Return once the turns' events published so far are kept (a draining process, tests)."""
    keeper = _keeper()
    while keeper.task is not None and not keeper.task.done():
        await asyncio.shield(keeper.task)


async def publish_channel_event(event, *, user_id: int | None = None) -> None:
    """Relay an event to every connected chat socket (a staff operator's, `user_id` None),
    or to one user's sockets only; it is kept for them, and relayed, with no registered secret."""
    await _keep(event, user_id=user_id)
    if user_id is None:
        await _group_send(SOCKETS_GROUP, {"type": "channel.event", "event": scrub_value(event)})
    else:
        await _group_send(ENGINES_GROUP, {"type": "channel.event", "event": scrub_value(event),
                                          "user_id": int(user_id)})


async def publish_device_revoked(device_id: int) -> None:
    """Tell every chat socket, on every process, that a device's token no longer works."""
    await _group_send(SOCKETS_GROUP, {"type": "device.revoked", "device_id": device_id})


async def publish_operator_event(event: dict, *, user_id: int, kept: bool = False) -> None:
    """A turn's start, end or error: to its user's sockets and to staff only; kept for that user.

    Kept in the background, in batches (_Keeper). With `kept`, return only once it is
    stored: a turn's last event is, before the turn's terminal frame goes out, so that
    nothing of a turn writes to the database once a client has its answer.
    """
    await _group_send(OPERATORS_GROUP, {"type": "operator.event", "event": event,
                                        "user_id": int(user_id)})
    _keeper().add(event, user_id)
    if kept:
        await operator_events_kept()


def approval_decided_message(approval) -> dict:
    """What every engine hears when an approval is decided (a ToolApproval row, decided)."""
    return {
        "type": "approval.decided",
        "approval_id": approval.pk,
        "session_id": approval.session_id,
        "turn_id": approval.turn_id,
        "decision": approval.decision,
        "by": approval.by,
        "args": approval.decided_args,
    }


async def publish_approval_decided(approval) -> None:
    """Tell every process's turn engine that an approval was decided, once it is in the database.

    The process whose turn waits for it continues the turn; if that process
    died, one that hears this takes the turn over (chat/turns/approvals.py).
    """
    await _group_send(ENGINES_GROUP, approval_decided_message(approval))


def branch_switched_message(*, session_id: str, leaf_id: int, origin: str = "") -> dict:
    """What every engine hears when a session's active branch changed (`origin`: the process
    that told its own sockets already, or empty)."""
    return {"type": "branch.switched", "session_id": session_id, "leaf_id": leaf_id, "origin": origin}


async def publish_branch_switched(*, session_id: str, leaf_id: int, origin: str = "") -> None:
    """Tell every process's turn engine that a session's active branch now ends at `leaf_id`,
    once that is in the database: each sends the `history` frame to its sockets of the session."""
    await _group_send(ENGINES_GROUP, branch_switched_message(
        session_id=session_id, leaf_id=leaf_id, origin=origin))


def queued_added_message(*, session_id: str) -> dict:
    """What every engine hears when a draining process handed a message on (QueuedMessage)."""
    return {"type": "queued.added", "session_id": session_id}


async def publish_queued_added(*, session_id: str) -> None:
    """Tell every process's turn engine that a message of the session waits in the database
    for a process that serves on: each wakes its watchdog, which runs it (chat/turns/queue.py)."""
    await _group_send(ENGINES_GROUP, queued_added_message(session_id=session_id))
