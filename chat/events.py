"""Channel-layer groups and every event that leaves through them.

Low-volume events (operator events, channel events) go through the channel
layer. A turn's streamed events do not: see chat/turns/fanout.py and chat/turns/bus.py.
"""

import logging

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

# Every chat socket: operator channel events, relayed as `agent_event`.
SOCKETS_GROUP = "construct.sockets"
# Whoever watches the gateway's own activity: agent_start, agent_end, error.
OPERATORS_GROUP = "construct.operators"


async def _group_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, message)
    except Exception:  # a lost fan-out must not end a turn; local sockets still work
        logger.warning("could not send to group %s", group, exc_info=True)


async def publish_channel_event(event) -> None:
    """Relay an operator's event to every connected chat socket."""
    await _group_send(SOCKETS_GROUP, {"type": "channel.event", "event": event})


async def publish_device_revoked(device_id: int) -> None:
    """Tell every chat socket, on every process, that a device's token no longer works."""
    await _group_send(SOCKETS_GROUP, {"type": "device.revoked", "device_id": device_id})


async def publish_operator_event(event: dict) -> None:
    await _group_send(OPERATORS_GROUP, {"type": "operator.event", "event": event})
