"""The chat socket: authenticate, decode, check the frame's type, dispatch, send.

Everything else (the turn, the session lock, persistence, fan-out) lives in
the turn engine (chat/turns/), so this class stays a thin protocol layer: it
joins the engine once, as the session's sink, and hands it the messages.
"""

import asyncio
import json
import logging
import uuid

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django import db
from django.conf import settings

from chat import limits, protocol, security, turns
from construct_core.errors import DATABASE_UNAVAILABLE, AgentInitFailed, GatewayError
from construct_core.logs import session_id_var
from construct_core.redaction import sanitize
from chat.protocol import FrameError, error_frame
from construct_core import metrics
from construct_core.redaction import scrub
from sessions_app import selectors, services
from sessions_app.audit import audit_batch
from sessions_app.clients import client_from_scope
from sessions_app.pairing import device_active, device_authenticate

logger = logging.getLogger(__name__)

CLOSE_AGENT_INIT_FAILED = 1011
# "Try again later": the database failed while the socket opened.
CLOSE_TRY_AGAIN = 1013
# The session id is another user's (found only in a race: normally refused before accept).
CLOSE_POLICY = 1008
# The device's token was revoked: pair again rather than reconnect.
CLOSE_TOKEN_REVOKED = 4401
# "Service restart": this process drains; reconnect now and resume from the last seq.
CLOSE_SERVICE_RESTART = 1012


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One browser tab (or script) talking to one session."""

    session_id: str | None = None
    user_id: int | None = None
    is_staff = False
    subscription: turns.Subscriber | None = None
    device_id: int | None = None
    # Who answers an approval from this socket: the device's name (audit, approval_result).
    device_name = ""
    limit_key = ""
    _slot_held = False
    _revoked = False
    _accepted = False
    _closing = False
    # No channel of its own: the process hears the channel layer once, for all its sockets,
    # and hands each socket its messages (turns.Sink.relay). A connect makes no layer call.
    channel_layer_alias = None

    async def __call__(self, scope, receive, send):
        """Channels' `AsyncConsumer.__call__` for a consumer with no layer channel: each
        message is awaited from the socket's queue in turn and dispatched, as Channels'
        `await_many_dispatch` does, but with no task per wait and no `asyncio.wait` around it
        (about 2 KiB an idle socket holds for its whole life)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message):
        """Channels' dispatch without its `aclose_old_connections`: a trip to the one database
        thread before every message (the connect, each frame, the disconnect), queued behind
        the other sockets' queries. Every database call here goes through
        database_sync_to_async, which closes old connections around the call itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        try:
            await self._connect()
        except db.Error as exc:
            # Before accept, so say why on an accepted socket rather than a bare 500.
            logger.error("could not open a chat socket: the database failed: %s", exc)
            if not self._accepted:
                await self.accept()
            await self.send_json(error_frame("AGENT_ERROR", DATABASE_UNAVAILABLE))
            await self.close(code=CLOSE_TRY_AGAIN)

    async def accept(self, subprotocol=None, headers=None):
        self._accepted = True
        metrics.OPEN_SOCKETS.inc()
        await super().accept(subprotocol, headers)

    async def close(self, code=None, reason=None):
        self._closing = True
        await super().close(code, reason)

    async def send(self, text_data=None, bytes_data=None, close=False):
        # Closed by this side (a drain sends sockets away): an operator event that comes
        # before the transport is gone would only raise inside daphne.
        if self._closing:
            return
        await super().send(text_data, bytes_data, close)

    async def _connect(self):
        params = protocol.query_params(self.scope)
        self.client = client_from_scope(self.scope)
        if not security.origin_allowed(self.scope):
            origin = protocol.header(self.scope, b"origin") or ""
            # Scrubbed before the cut, so no cut leaves part of a key in the audit trail.
            await self._refuse("origin not allowed", origin=scrub(origin)[:200])
            return
        if settings.CONSTRUCT_REQUIRE_PAIRING:
            token = protocol.extract_token(self.scope, params.get("token"))
            device = await database_sync_to_async(device_authenticate)(token=token) if token else None
            if device is None:
                await self._refuse("missing or invalid token")
                return
            self.device_id = device.pk
            self.device_name = device.display_name
            user = device.user
        else:
            user = await database_sync_to_async(services.default_owner)()
            self.device_name = user.get_username()
        self.user_id, self.is_staff = user.pk, user.is_staff

        session_id = params.get("session_id") or str(uuid.uuid4())
        # An id cannot be scrubbed like the rest of what is stored: one with a secret is refused.
        if not protocol.SESSION_ID_RE.match(session_id) or scrub(session_id) != session_id:
            await self._refuse("invalid session_id")
            return
        owner = await database_sync_to_async(selectors.session_owner_id)(session_id=session_id)
        if owner is not None and owner != self.user_id:
            # To the REST API this session does not exist; here it is refused like a bad token.
            await self._refuse("session of another user", session_id=session_id, user_id=self.user_id)
            return
        self.limit_key = limits.limit_key(user_id=self.user_id, client=self.client)
        refusal = limits.socket_admit(self.limit_key)
        if refusal is not None:
            await self._refuse(refusal)
            return
        self._slot_held = True
        subprotocol = protocol.select_subprotocol(self.scope)

        try:
            turns.check_agent()
        except AgentInitFailed as exc:
            logger.error("agent initialisation failed: %s", exc)
            await self.accept(subprotocol)
            await self.send_json(error_frame(
                AgentInitFailed.code, sanitize(f"Failed to initialise agent: {exc}")
            ))
            await self.close(code=CLOSE_AGENT_INIT_FAILED)
            return

        self.session_id = session_id
        # Every line this socket's task logs from now on names its session (it lives as long).
        session_id_var.set(session_id)
        self._frames = 0
        self._connected_at = self._loop_time()
        await self.accept(subprotocol)
        # ?last_seq=N counts in the running turn (or in ?turn_id= if it names it).
        try:
            self.subscription = await turns.session_join(
                session_id=session_id, user_id=self.user_id, sink=self, name=params.get("name"),
                last_seq=_int(params.get("last_seq"), 0), turn_id=params.get("turn_id"),
                is_staff=self.is_staff,
            )
        except services.SessionOfAnotherUser:  # taken by another user a moment ago
            await self.send_json(error_frame("AUTH_ERROR", "Session not found"))
            await self.close(code=CLOSE_POLICY)
            return
        await self._audit("socket_connect", session_id=session_id)
        # The client as the trusted proxies report it: daphne's own access line shows the proxy.
        logger.info("chat socket opened: session %s, user %s, from %s", session_id, self.user_id,
                    self.client, extra={"user_id": self.user_id, "client": self.client})

    async def disconnect(self, code):
        if self._accepted:
            self._accepted = False
            metrics.OPEN_SOCKETS.dec()
            if self.session_id:
                logger.info("chat socket closed: session %s, user %s, from %s (code %s)",
                            self.session_id, self.user_id, self.client, code)
        if self._slot_held:
            self._slot_held = False
            limits.socket_release(self.limit_key)
        if self.subscription is not None:
            await turns.session_leave(self.subscription)

    # --- Frames from the client ------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self._revoked:  # closing: nothing more from this device is acted on
            return
        try:
            frame = self._decode(text_data, bytes_data)
            await self._dispatch(frame)
        except FrameError as exc:
            await self.send_json(error_frame(exc.code, exc.message))
        except GatewayError as exc:  # a refusal with details (an approval's id)
            await self.send_json({**error_frame(exc.code, sanitize(str(exc))), **exc.details})
        except Exception as exc:  # the database or the layer failed: say so, keep the socket
            logger.exception("could not handle a frame on session %s", self.session_id)
            if isinstance(exc, db.Error):
                message = DATABASE_UNAVAILABLE
            else:
                message = sanitize(f"The gateway could not handle that message: {type(exc).__name__}")
            await self.send_json(error_frame("AGENT_ERROR", message))

    def _decode(self, text_data, bytes_data) -> dict:
        self._frames += 1
        if text_data is None:
            raise FrameError("BAD_FRAME", f"Binary frames are not supported. {protocol.HINT}")
        limit = settings.CONSTRUCT_MAX_FRAME_BYTES
        if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
            raise FrameError("MESSAGE_TOO_LARGE", f"Frame is larger than {limit} bytes")
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError) as exc:
            raise FrameError("INVALID_JSON", f"Invalid JSON: {exc}. {protocol.HINT}"[:300]) from None
        if not isinstance(frame, dict):
            raise FrameError("BAD_FRAME", f"A frame must be a JSON object. {protocol.HINT}")
        return frame

    async def _dispatch(self, frame: dict) -> None:
        msg_type = frame.get("type")
        if msg_type == "connect" and self._frames == 1 and self._within_connect_window():
            logger.debug("connect params: session=%s device=%s", frame.get("session_id"),
                         frame.get("device_name"))
            await self.send_json({"type": "connected", "message": "Connection established"})
        elif msg_type == "message":
            content, page_context, client_id = protocol.parse_message(frame)
            model, reasoning = protocol.parse_model_choice(frame)
            if not await self._allowed_to_ask():
                return
            attachments = protocol.parse_attachments(frame, settings.CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE)
            await turns.message_submit(
                self.subscription, content=content, page_context=page_context, client_id=client_id,
                attachments=attachments, model=model, reasoning=reasoning,
            )
        elif msg_type == "edit":
            message_id, content, page_context, client_id = protocol.parse_edit(frame)
            model, reasoning = protocol.parse_model_choice(frame)
            if not await self._allowed_to_ask():
                return
            attachments = protocol.parse_attachments(frame, settings.CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE)
            await turns.message_submit(
                self.subscription, content=content, page_context=page_context, client_id=client_id,
                attachments=attachments, ask=turns.Ask("edit", message_id), model=model,
                reasoning=reasoning,
            )
        elif msg_type == "regenerate":
            client_id = protocol.parse_regenerate(frame)
            model, reasoning = protocol.parse_model_choice(frame)
            if not await self._allowed_to_ask():
                return
            await turns.message_submit(self.subscription, client_id=client_id,
                                       ask=turns.Ask("regenerate"), model=model, reasoning=reasoning)
        elif msg_type == "switch_branch":
            message_id = protocol.parse_switch_branch(frame)
            if not await self._allowed_to_ask():
                return
            await turns.branch_switch(self.subscription, message_id=message_id)
        elif msg_type == "stop":
            if not await self._still_authorised():
                return
            if not await turns.turn_stop(session_id=self.session_id, by=self.device_name):
                await self.send_json({"type": "stopped", "message": "No turn is running"})
        elif msg_type == "approval":
            approval_id, decision, args = protocol.parse_approval(frame)
            if not await self._still_authorised():
                return
            await turns.approval_decide(self.subscription, approval_id=approval_id, decision=decision,
                                        args=args, by=self.device_name)
        else:
            shown = msg_type if isinstance(msg_type, str) else ""
            raise FrameError(
                "UNKNOWN_MESSAGE_TYPE", f'Unsupported message type "{shown[:64]}". {protocol.HINT}'
            )

    # --- Frames for the client -------------------------------------------

    async def send_json(self, content, close=False):
        """The socket's own frames (the turn engine's go through send_text, counted there)."""
        metrics.error_sent(content)
        await super().send_json(content, close)

    async def send_text(self, text: str) -> None:
        """The turn engine's way to this socket (turns.Sink)."""
        await self.send(text_data=text)

    async def relay(self, message: dict, text: str | None = None) -> None:
        """A channel-layer message for this socket (turns.Sink): the process heard it once.
        `text`: the `agent_event` frame of a channel or operator event, encoded once for
        every socket it goes to."""
        kind = message.get("type")
        if kind == "device.revoked":
            await self.device_revoked(message)
        elif kind in ("channel.event", "operator.event"):
            if self._revoked:
                return
            if text is None:
                await self.send_json({"type": "agent_event", "event": message["event"]})
            else:
                await self.send(text_data=text)

    async def device_revoked(self, message):
        if self.device_id is not None and message.get("device_id") == self.device_id:
            await self._close_revoked()

    # --- Helpers ----------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _within_connect_window(self) -> bool:
        return self._loop_time() - self._connected_at <= settings.CONSTRUCT_CONNECT_FRAME_TIMEOUT

    async def _refuse(self, reason: str, **detail) -> None:
        """Refuse the upgrade (403, before accept); audited unless this client floods us."""
        if limits.refusal_worth_auditing(self.client):
            await self._audit("socket_refused", reason=reason, **detail)
        else:
            logger.info("chat socket refused for %s: %s", self.client, reason)
        await self.close()

    async def _allowed_to_ask(self) -> bool:
        """The token still works and the message rate allows one more (else the client is told)."""
        if not await self._still_authorised():
            return False
        retry_after = limits.message_hit(self.limit_key)
        if retry_after:
            await self.send_json({
                **error_frame("RATE_LIMITED", f"Too many messages: retry after {retry_after} s"),
                "retry_after": retry_after,
            })
            return False
        return True

    async def _still_authorised(self) -> bool:
        """Check the token again (revocation acts at once, even with no shared layer)."""
        if self.device_id is None:
            return True
        if await database_sync_to_async(device_active)(device_id=self.device_id):
            return True
        await self._close_revoked()
        return False

    async def _close_revoked(self) -> None:
        if self._revoked:
            return
        self._revoked = True
        if self.subscription is not None:
            await turns.session_leave(self.subscription)
        await self.send_json(error_frame("AUTH_ERROR", "Token revoked: pair this device again"))
        await self.close(code=CLOSE_TOKEN_REVOKED)

    async def _audit(self, kind: str, **detail) -> None:
        try:
            # With every other socket's entry of the moment: one transaction for a burst.
            await audit_batch().record(kind=kind, client=self.client, **detail)
        except Exception:
            logger.warning("could not write the audit trail", exc_info=True)


def _int(value, default: int) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return default
