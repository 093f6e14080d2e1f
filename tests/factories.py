"""Model factories as plain functions: each makes one valid row with sensible defaults.

They write rows directly rather than through the services, so a test of a
service never depends on the service it tests to set up its data.
"""

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from sessions_app.models import ChatSession, Message, PairedDevice, PairingCode
from sessions_app.pairing import code_hash, device_create
from sessions_app.services import default_owner


def make_session(*, session_id: str | None = None, name: str = "", user=None, **fields) -> ChatSession:
    """A session of `user` (the default owner unless given), with a random id unless one is given."""
    return ChatSession.objects.create(id=session_id or uuid.uuid4().hex, name=name,
                                      user=user or default_owner(), **fields)


def make_message(*, session: ChatSession, role: str = Message.Role.USER, content: str = "hello",
                 **fields) -> Message:
    """The next message of `session` (or the one numbered `seq`); keeps the session in step.

    Without `parent`, the session stays a straight line: its messages follow one
    another by seq (however they were written) and the newest is the active
    leaf. With `parent` (a Message or None), the message starts or continues a
    branch there, and becomes the active leaf.
    """
    seq = fields.pop("seq", None) or session.last_seq + 1
    branched = "parent" in fields
    parent = fields.pop("parent", None)
    message = Message.objects.create(session=session, seq=seq, role=role, content=content,
                                     parent=parent, depth=parent.depth + 1 if parent else 1, **fields)
    session.last_seq = max(session.last_seq, seq)
    if branched:
        leaf = message
    else:
        line = list(Message.objects.filter(session=session).order_by("seq"))
        for position, (before, current) in enumerate(zip([None, *line], line), start=1):
            current.parent, current.depth = before, position
        Message.objects.bulk_update(line, ["parent", "depth"])
        leaf = line[-1]
        message.refresh_from_db()
    session.active_leaf, session.message_count = leaf, leaf.depth
    session.save(update_fields=["last_seq", "active_leaf", "message_count"])
    return message


def make_user(*, username: str | None = None, password: str | None = None, is_staff: bool = False):
    """A Django user (a random name unless one is given); with `password`, one that can sign in."""
    user = get_user_model().objects.create_user(
        username=username or f"user-{uuid.uuid4().hex[:8]}", password=password, is_staff=is_staff
    )
    return user


def make_device(*, name: str = "test device", client: str = "127.0.0.1", revoked: bool = False,
                user=None) -> tuple[PairedDevice, str]:
    """A paired device of `user` (the default owner unless given) and its clear token
    (which the database never holds)."""
    device, token = device_create(
        user_id=(user or default_owner()).pk, name=name, client=client,
        revoked_at=timezone.now() if revoked else None,
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


def make_approval(*, session: ChatSession | None = None, turn_id: str = "turn-1",
                  tool_call_id: str | None = None, name: str = "shell", args=None,
                  timeout_seconds: float = 120, **fields):
    """A pending tool approval (of a new session of the default owner unless one is given)."""
    from sessions_app.models import ToolApproval

    session = session or make_session()
    return ToolApproval.objects.create(
        session=session, turn_id=turn_id, tool_call_id=tool_call_id or uuid.uuid4().hex[:12],
        name=name, args={"command": "ls"} if args is None else args,
        expires_at=timezone.now() + timedelta(seconds=timeout_seconds), **fields,
    )
