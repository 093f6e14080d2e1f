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

import logging

from channels.layers import get_channel_layer

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


async def publish_channel_event(event, *, user_id: int | None = None) -> None:
    """Relay an event to every connected chat socket (a staff operator's, `user_id` None),
    or to one user's sockets only."""
    if user_id is None:
        await _group_send(SOCKETS_GROUP, {"type": "channel.event", "event": event})
    else:
        await _group_send(ENGINES_GROUP, {"type": "channel.event", "event": event,
                                          "user_id": int(user_id)})


async def publish_device_revoked(device_id: int) -> None:
    """Tell every chat socket, on every process, that a device's token no longer works."""
    await _group_send(SOCKETS_GROUP, {"type": "device.revoked", "device_id": device_id})


async def publish_operator_event(event: dict, *, user_id: int) -> None:
    """A turn's start, end or error: to its user's sockets and to staff only."""
    await _group_send(OPERATORS_GROUP, {"type": "operator.event", "event": event,
                                        "user_id": int(user_id)})


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
