"""Model factories as plain functions: each makes one valid row with sensible defaults.

They write rows directly rather than through the services, so a test of a
service never depends on the service it tests to set up its data.
"""

import uuid
from datetime import timedelta

from django.utils import timezone

from sessions_app.models import ChatSession, Message, PairedDevice, PairingCode
from sessions_app.pairing import code_hash, device_create


def make_session(*, session_id: str | None = None, name: str = "", **fields) -> ChatSession:
    """A session with a random id unless one is given."""
    return ChatSession.objects.create(id=session_id or uuid.uuid4().hex, name=name, **fields)


def make_message(*, session: ChatSession, role: str = Message.Role.USER, content: str = "hello",
                 **fields) -> Message:
    """The next message of `session`; keeps the session's message_count in step."""
    seq = fields.pop("seq", None) or session.message_count + 1
    message = Message.objects.create(session=session, seq=seq, role=role, content=content, **fields)
    session.message_count = max(session.message_count, seq)
    session.save(update_fields=["message_count"])
    return message


def make_device(*, name: str = "test device", client: str = "127.0.0.1",
                revoked: bool = False) -> tuple[PairedDevice, str]:
    """A paired device and its clear token (which the database never holds)."""
    device, token = device_create(
        name=name, client=client, revoked_at=timezone.now() if revoked else None
    )
    return device, token


def make_pairing_code(*, code: str = "123456", ttl_seconds: int = 3600,
                      used: bool = False) -> PairingCode:
    """A stored code with a known value (a negative ttl_seconds makes an expired one)."""
    now = timezone.now()
    return PairingCode.objects.create(
        code_hash=code_hash(code),
        expires_at=now + timedelta(seconds=ttl_seconds),
        used_at=now if used else None,
    )
