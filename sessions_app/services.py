"""Writes to sessions and their messages. Sync functions; async callers wrap them.

Every text or JSON a client, a provider or a tool supplies is scrubbed here,
on its way into the database (`construct_core.redaction.scrub`): no stored
field holds a registered secret, whoever the writer is. Text is scrubbed
before it is cut to its column, so no cut leaves part of a key behind.
"""

import json
import re
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from construct_core import approvals as rules
from construct_core.errors import ApprovalInvalid, MessageNotFound, SessionBusy
from construct_core.redaction import scrub, scrub_value
from sessions_app.audit import audit_record
from sessions_app.branches import newest_leaf_under
from sessions_app.models import (
    ChatSession, ClientMessageId, MemoryNote, Message, OperatorEvent, QueuedMessage, ToolApproval,
    TurnWaiter,
    UsageRecord,
)

State = ChatSession.State


def _data_scrub(data):
    """A message's `data` with no registered secret in any key or value.

    A tool call's `arguments` is the provider's JSON text, where a key may hide
    behind escapes (`\\u002d` for `-`); it is decoded and checked too.
    """
    original = data
    data = scrub_value(data)
    calls = data.get("tool_calls") if isinstance(data, dict) else None
    if isinstance(calls, list):
        scrubbed = [_arguments_scrub(call) for call in calls]
        if any(new is not old for new, old in zip(scrubbed, calls)):
            data = {**data, "tool_calls": scrubbed}
    blocks = data.get("thinking_blocks") if isinstance(data, dict) else None
    if isinstance(blocks, list) and blocks != original.get("thinking_blocks"):
        # A provider's signed block that scrubbing changed would be refused when sent
        # back: only the blocks scrubbing left whole are kept.
        whole = [clean for clean, raw in zip(blocks, original["thinking_blocks"]) if clean == raw]
        data = {**data, "thinking_blocks": whole}
    return data


def _arguments_scrub(call):
    """The call, with its arguments decoded, scrubbed and encoded again if a secret hid there."""
    if not isinstance(call, dict) or not isinstance(call.get("arguments"), str):
        return call
    try:
        arguments = json.loads(call["arguments"])
    except ValueError:
        return call
    clean = scrub_value(arguments)
    if clean == arguments:
        return call
    return {**call, "arguments": json.dumps(clean, ensure_ascii=False)}


def _session_id_check(session_id: str) -> None:
    # An id cannot be scrubbed (it is the session's name on the wire): refuse it.
    if scrub(session_id) != session_id:
        raise ValueError("a session id must not hold a secret")


# --- Users ----------------------------------------------------------------------

# Who owns what nobody else does: the sessions and devices of a one-person gateway.
DEFAULT_OWNER = "owner"


def default_owner():
    """The default owner (a staff user, made on first need): pairing with no user named pairs it."""
    User = get_user_model()
    try:
        return User.objects.get(**{User.USERNAME_FIELD: DEFAULT_OWNER})
    except User.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            owner = User(**{User.USERNAME_FIELD: DEFAULT_OWNER}, is_staff=True, is_superuser=True)
            # No password: it signs in with a paired device, or after `manage.py changepassword owner`.
            owner.set_unusable_password()
            owner.save()
            return owner
    except IntegrityError:  # another process made it at the same moment
        return User.objects.get(**{User.USERNAME_FIELD: DEFAULT_OWNER})


class SessionOfAnotherUser(Exception):
    """The session id is taken by another user's session."""


def session_open(*, session_id: str, user_id: int, name: str | None = None) -> ChatSession:
    """Fetch or create the user's session; a non-empty name is saved, for a new session too.

    Raises SessionOfAnotherUser when the id is another user's session, and
    ValueError for an id that holds a registered secret.
    """
    _session_id_check(session_id)
    name = scrub((name or "").strip())[:200]
    session, created = ChatSession.objects.get_or_create(
        pk=session_id, defaults={"name": name, "user_id": user_id}
    )
    if session.user_id != user_id:
        raise SessionOfAnotherUser(session_id)
    if name and not created and session.name != name:
        # A name the client chose: a person's, which no title the model proposes replaces.
        ChatSession.objects.filter(pk=session_id).update(name=name, auto_named=False)
        session.name, session.auto_named = name, False
    return session


TITLE_MAX_CHARS = 60

_FENCE_RE = re.compile(r"^\s*(```|~~~).*$", re.MULTILINE)
_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
_LINE_MARK_RE = re.compile(r"^\s*(#{1,6}\s+|>\s*|[-*+]\s+|\d+[.)]\s+)+", re.MULTILINE)
_EMPHASIS_RE = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_MARK_CHARS_RE = re.compile(r"`+|\*\*+")


def title_of(text: str) -> str:
    """A chat's title from its first message: Markdown and extra whitespace taken out, cut at a
    word to one short line (TITLE_MAX_CHARS, with "…" when cut)."""
    text = _FENCE_RE.sub(" ", text or "")
    text = _IMAGE_RE.sub(r"\1", text)
    text = _LINK_RE.sub(r"\1", text)
    text = _TAG_RE.sub(" ", text)
    text = _LINE_MARK_RE.sub("", text)
    for _ in range(2):  # **_nested_** marks
        text = _EMPHASIS_RE.sub(r"\2", text)
    text = " ".join(_MARK_CHARS_RE.sub("", text).split())
    if len(text) <= TITLE_MAX_CHARS:
        return text
    cut = text[:TITLE_MAX_CHARS - 1]
    if " " in cut and not text[TITLE_MAX_CHARS - 1].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-–—") + "…"


def session_peek(*, session_id: str, user_id: int, name: str | None = None) -> ChatSession:
    """The user's session as a socket joins it, without creating it.

    An id nobody used yet answers with an unsaved session (no row): a session
    is stored only once it has a message (session_open, as the first one is
    sent), so a page opened and left leaves nothing behind. Raises like
    session_open.
    """
    _session_id_check(session_id)
    session = ChatSession.objects.filter(pk=session_id).first()
    if session is None:
        return ChatSession(pk=session_id, user_id=user_id, name=scrub((name or "").strip())[:200])
    if session.user_id != user_id:
        raise SessionOfAnotherUser(session_id)
    return session_open(session_id=session_id, user_id=user_id, name=name) if name else session


def session_rename(*, session_id: str, name: str) -> int:
    """A person's name for the session: from now on no title the model proposes replaces it."""
    return ChatSession.objects.filter(pk=session_id).update(name=scrub(name.strip())[:200],
                                                            auto_named=False)


_TITLE_LABEL_RE = re.compile(r"^\s*(title|chat title|subject)\s*[:\-–—]\s*", re.IGNORECASE)
_TITLE_QUOTES = "\"'`“”‘’«»„"


def title_clean(text: str) -> str:
    """A title a model proposed, as a session's name: its first line, without a "Title:"
    label, quotes, Markdown or a closing full stop, cut like `title_of`; "" when nothing is left."""
    line = next((line for line in (text or "").splitlines() if line.strip()), "")
    line = _TITLE_LABEL_RE.sub("", line)
    line = title_of(line.strip().strip(_TITLE_QUOTES).strip())
    line = line.strip(_TITLE_QUOTES + " ").rstrip(".:;,").strip(_TITLE_QUOTES + " ")
    return scrub(line)[:200]


def session_title_set(*, session_id: str, title: str) -> str | None:
    """Name the session with the title its model proposed, unless a person named it meanwhile
    (or it is gone). Returns the name given, or None when nothing changed.

    One conditional update: a rename (`session_rename`) that comes first wins,
    and one that comes later replaces the title.
    """
    name = title_clean(title)
    if not name:
        return None
    named = ChatSession.objects.filter(pk=session_id, auto_named=True).exclude(name=name).update(name=name)
    return name if named else None


def session_model_set(*, session_id: str, model: str) -> int:
    """The session's turns use `model` (an id of the model list) from now on."""
    return ChatSession.objects.filter(pk=session_id).update(model=model)


class _ActiveLeaf:
    """The default parent of appended messages: whatever the session's active leaf is then."""

    def __repr__(self):
        return "ACTIVE_LEAF"


ACTIVE_LEAF = _ActiveLeaf()


def messages_append(*, session_id: str, messages: list[dict], turn_id: str = "",
                    parent_id: "int | None | _ActiveLeaf" = ACTIVE_LEAF,
                    locked: ChatSession | None = None) -> list[Message]:
    """Append messages as a chain, numbering them after the session's last one.

    The first follows `parent_id`: by default the active leaf (a plain message
    continues the active branch), None for a new first message, or a message
    of the session (an edit, a regenerated answer; MessageNotFound otherwise).
    Each next one follows the one before, and the last becomes the active
    leaf. Each item is {"role", "content", "data"?}; content and data are
    scrubbed. The session row is locked so two processes appending at once
    cannot take the same number. Three queries for one message, four for more.

    `locked`: the session's row, read and locked by the caller's transaction
    (a turn's lock, turn_db.turn_open): it is not read again, and the append
    joins that transaction (a failure here undoes the caller's writes too,
    unless the caller keeps a savepoint).
    """
    if not messages:
        return []
    with transaction.atomic(savepoint=locked is None):
        session = locked if locked is not None else (
            ChatSession.objects.select_for_update()
            .only("last_seq", "message_count", "active_leaf_id", "name").get(pk=session_id))
        if parent_id is ACTIVE_LEAF:
            parent_id, depth = session.active_leaf_id, session.message_count
            if parent_id is None and session.last_seq:
                # The active leaf was deleted (in the admin): go on from the newest message left.
                newest = Message.objects.filter(session_id=session_id).order_by("-seq").only("depth").first()
                parent_id, depth = (newest.pk, newest.depth) if newest is not None else (None, 0)
        elif parent_id is None:
            depth = 0
        else:
            depth = Message.objects.filter(pk=parent_id, session_id=session_id).values_list(
                "depth", flat=True).first()
            if depth is None:
                raise MessageNotFound(f"No message {parent_id} in this session")
        first = session.last_seq + 1
        rows = Message.objects.bulk_create(
            [
                Message(
                    session_id=session_id,
                    seq=first + i,
                    role=item["role"],
                    content=scrub(item.get("content") or ""),
                    data=_data_scrub(item.get("data") or {}),
                    turn_id=turn_id,
                    parent_id=parent_id if i == 0 else None,
                    depth=depth + 1 + i,
                )
                for i, item in enumerate(messages)
            ]
        )
        if len(rows) > 1:
            # Each next row follows the one numbered before it: one statement for the chain.
            Message.objects.filter(session_id=session_id, seq__gt=first, seq__lt=first + len(rows)).update(
                parent_id=Subquery(Message.objects.filter(
                    session_id=OuterRef("session_id"), seq=OuterRef("seq") - 1).values("pk")[:1])
            )
            for before, row in zip(rows, rows[1:]):
                row.parent_id = before.pk
        named = {}
        if not session.name and first == 1 and rows[0].role == Message.Role.USER:
            # A chat nobody named is named after its first message (renamable like any name),
            # until its model proposes a title (chat/turns/titles.py).
            named.update(name=title_of(rows[0].content)[:200], auto_named=True)
        ChatSession.objects.filter(pk=session_id).update(
            last_seq=first + len(rows) - 1, message_count=rows[-1].depth, active_leaf_id=rows[-1].pk,
            last_activity=timezone.now(), **named,
        )
    return rows


def message_append(*, session_id: str, role: str, content: str, data: dict | None = None,
                   turn_id: str = "", parent_id: "int | None | _ActiveLeaf" = ACTIVE_LEAF,
                   locked: ChatSession | None = None) -> Message:
    return messages_append(
        session_id=session_id,
        messages=[{"role": role, "content": content, "data": data}],
        turn_id=turn_id,
        parent_id=parent_id,
        locked=locked,
    )[0]


def branch_switch(*, session_id: str, message_id: int) -> Message:
    """Make active the newest leaf under message `message_id` (any message of any branch).

    Returns that leaf. MessageNotFound when the message is not the session's;
    SessionBusy while a turn holds the session (its messages go on its branch).
    """
    with transaction.atomic():
        session = ChatSession.objects.select_for_update().only("state").filter(pk=session_id).first()
        leaf = newest_leaf_under(session_id=session_id, message_id=message_id) if session else None
        if leaf is None:
            raise MessageNotFound(f"No message {message_id} in this session")
        if session.state == State.RUNNING:
            raise SessionBusy("A turn is running in this session: switch branches when it ends")
        ChatSession.objects.filter(pk=session_id).update(active_leaf_id=leaf.pk, message_count=leaf.depth)
    return leaf


def active_leaf_set(*, session_id: str, message_id: int) -> None:
    """Make the branch end at this very message (a turn regenerating the answer to it).

    For the turn that holds the session: no state check.
    """
    depth = Message.objects.filter(pk=message_id, session_id=session_id).values_list(
        "depth", flat=True).first()
    if depth is None:
        raise MessageNotFound(f"No message {message_id} in this session")
    ChatSession.objects.filter(pk=session_id).update(active_leaf_id=message_id, message_count=depth)


def client_id_claim(*, session_id: str, client_id: str) -> bool:
    """Record a client's message id; False when the session has seen it already."""
    try:
        with transaction.atomic():
            ClientMessageId.objects.create(session_id=session_id, client_id=scrub(client_id))
    except IntegrityError:
        return False
    return True


def message_accept(*, session_id: str, user_id: int, client_id: str | None = None,
                   session_new: bool = False, name: str | None = None) -> bool:
    """What accepting a message stores, in one call: the session, on its first message
    (`session_new`: session_open, with `name`), and the client's message id (client_id_claim).
    False when the session has seen that id already; True otherwise. Raises what session_open
    raises, with nothing stored."""
    if session_new:
        session_open(session_id=session_id, user_id=user_id, name=name)
    if client_id is None:
        return True
    return client_id_claim(session_id=session_id, client_id=client_id)


def client_id_release(*, session_id: str, client_id: str) -> None:
    """Forget a client id whose message was refused, so the client may send it again."""
    ClientMessageId.objects.filter(session_id=session_id, client_id=scrub(client_id)).delete()


# --- The session lock --------------------------------------------------------
#
# The lock is the session row itself: state "running" with a turn id and a
# lease. It works across processes because every change goes through the
# database, and a process that dies leaves a lease that runs out.


def turn_try_start(*, session_id: str, user_id: int, turn_id: str, owner: str,
                   lease_seconds: float, waiter_id: int | None = None) -> tuple[bool, dict | None]:
    """Take the session for a new turn if nobody holds it.

    Waiting messages go in order: a waiter may start only when no older waiter
    is still waiting, and none while messages a draining process handed on
    wait (QueuedMessage: they were accepted first). Returns (started,
    taken_over) where taken_over describes a turn whose process died (its
    lease ran out) and which this call ended.
    """
    started, taken_over, _session = turn_try_take(
        session_id=session_id, user_id=user_id, turn_id=turn_id, owner=owner,
        lease_seconds=lease_seconds, waiter_id=waiter_id)
    return started, taken_over


def turn_try_take(*, session_id: str, user_id: int, turn_id: str, owner: str, lease_seconds: float,
                  waiter_id: int | None = None) -> tuple[bool, dict | None, ChatSession | None]:
    """`turn_try_start`, with the session's row as the turn took it (None when not started):
    what the turn reads of it next (its model, its last message's number) needs no second
    read. Called in a transaction, it joins it (no savepoint): the row stays locked until
    that transaction ends (turn_db.turn_open stores the question in it)."""
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        session = ChatSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None:
            # Deleted (through the API or admin) while a socket stayed open on it:
            # the next message starts the conversation afresh under the same id.
            session = ChatSession.objects.create(pk=session_id, user_id=user_id)
        if _held(session, now):
            return False, None, None
        older = TurnWaiter.objects.filter(session_id=session_id, expires_at__gt=now)
        if waiter_id is not None:
            older = older.filter(id__lt=waiter_id)
        if older.exists() or QueuedMessage.objects.filter(session_id=session_id).exists():
            return False, None, None
        taken_over = _session_take(session, turn_id, owner, lease_seconds, now)
    return True, taken_over, session


def _held(session: ChatSession, now) -> bool:
    """Whether a live turn holds the session (a lease that runs, or one parked on an approval).

    A dead process's turn that waits for an approval is not taken over: the
    answer continues it (approval_decide, turn_adopt).
    """
    lease_alive = session.lease_expires_at is not None and session.lease_expires_at > now
    return session.state == State.RUNNING and (lease_alive or _parked(session.pk, session.turn_id))


def _session_take(session: ChatSession, turn_id: str, owner: str, lease_seconds: float,
                  now) -> dict | None:
    """Make `turn_id` the session's running turn (the row is locked); the dead turn it ends, if any."""
    taken_over = None
    if session.state == State.RUNNING:
        taken_over = {"turn_id": session.turn_id, "owner": session.turn_owner}
    session.state = State.RUNNING
    session.turn_id = turn_id
    session.turn_started_at = now
    session.turn_owner = owner
    session.lease_expires_at = now + timedelta(seconds=lease_seconds)
    session.last_activity = now
    session.save(update_fields=[
        "state", "turn_id", "turn_started_at", "turn_owner", "lease_expires_at", "last_activity"
    ])
    return taken_over


def turns_renew(*, turns: list[tuple[str, str]], lease_seconds: float) -> set[str]:
    """Extend the leases of several running turns (session id, turn id) in one statement.

    One process renews all of its turns at once, not one query per turn.
    Returns the ids of the turns that no longer hold their session.
    """
    if not turns:
        return set()
    session_ids = [session_id for session_id, _ in turns]
    turn_ids = {turn_id for _, turn_id in turns}
    held = ChatSession.objects.filter(pk__in=session_ids, turn_id__in=turn_ids, state=State.RUNNING)
    if held.update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)) == len(turns):
        return set()
    return turn_ids - set(held.values_list("turn_id", flat=True))


def turn_finish(*, session_id: str, turn_id: str, state: str) -> bool:
    """Release the session after a turn: idle, error (keeps the turn id) or interrupted."""
    keep_turn = state in (State.ERROR, State.INTERRUPTED)
    return bool(
        ChatSession.objects.filter(pk=session_id, turn_id=turn_id).update(
            state=state,
            turn_id=turn_id if keep_turn else None,
            lease_expires_at=None,
            turn_owner="",
            last_activity=timezone.now(),
        )
    )


def turn_interrupt(*, session_id: str, turn_id: str) -> bool:
    """Mark a turn interrupted if it still holds the session with a lease that ran out.

    Its process died. Exactly one caller gets True, however many processes
    notice at once, and only it keeps what the turn streamed.
    """
    now = timezone.now()
    if _parked(session_id, turn_id):
        return False  # it waits for an approval: the answer continues it (turn_adopt)
    return bool(
        ChatSession.objects.filter(pk=session_id, turn_id=turn_id, state=State.RUNNING)
        .filter(Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True))
        .update(state=State.INTERRUPTED, lease_expires_at=None, turn_owner="", last_activity=now)
    )


def _parked(session_id: str, turn_id: str | None) -> bool:
    """Whether the turn has an approval it has not acted on yet (pending, or decided meanwhile)."""
    return bool(turn_id) and ToolApproval.objects.filter(
        session_id=session_id, turn_id=turn_id, applied_at__isnull=True
    ).exists()


def turn_adopt(*, session_id: str, turn_id: str, owner: str, lease_seconds: float) -> bool:
    """Take over a turn whose process died while it waited for an approval, to continue it.

    The turn keeps its id; only its owner and lease change. Exactly one caller
    gets True, however many processes try at once, and only while the turn
    still holds the session with a lease that ran out.
    """
    now = timezone.now()
    return bool(
        ChatSession.objects.filter(pk=session_id, turn_id=turn_id, state=State.RUNNING)
        .filter(Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True))
        .update(turn_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                last_activity=now)
    )


def session_reset(*, session_id: str) -> int:
    """Force a session back to idle (an operator's way out of a stuck turn)."""
    return ChatSession.objects.filter(pk=session_id).update(
        state=State.IDLE, turn_id=None, lease_expires_at=None, turn_owner=""
    )


def session_delete(*, session_id: str) -> bool:
    """Delete a session with its messages; False when there is no such session.

    Raises SessionBusy while a live turn holds the session: that turn would go
    on writing to a session that is gone. A turn whose lease ran out (its
    process died) does not protect the session.
    """
    with transaction.atomic():
        session = ChatSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None:
            return False
        lease = session.lease_expires_at
        if session.state == State.RUNNING and lease is not None and lease > timezone.now():
            raise SessionBusy(f"Session {session_id} is running a turn: stop it, then delete it")
        session.delete()
    return True


def waiter_add(*, session_id: str, depth: int, timeout: float) -> int | None:
    """Join the session's queue; None when `depth` messages wait already."""
    now = timezone.now()
    with transaction.atomic():
        ChatSession.objects.select_for_update().only("pk").get(pk=session_id)
        TurnWaiter.objects.filter(session_id=session_id, expires_at__lte=now).delete()
        if TurnWaiter.objects.filter(session_id=session_id).count() >= depth:
            return None
        # The row expires a little after the wait can end, so a dead process's
        # waiters never hold a place for long.
        waiter = TurnWaiter.objects.create(
            session_id=session_id, expires_at=now + timedelta(seconds=timeout + 5)
        )
    return waiter.id


def waiter_remove(*, waiter_id: int) -> None:
    TurnWaiter.objects.filter(id=waiter_id).delete()


# --- Messages handed on by a draining process ------------------------------------


def queued_add(*, session_id: str, user_id: int, client_id: str | None, content: str,
               options: dict, depth: int, accepted_at=None) -> int | None:
    """Keep an accepted message for any process to run (QueuedMessage); None when `depth`
    messages of the session wait already."""
    with transaction.atomic():
        ChatSession.objects.select_for_update().only("pk").get(pk=session_id)
        if QueuedMessage.objects.filter(session_id=session_id).count() >= depth:
            return None
        row = QueuedMessage.objects.create(
            session_id=session_id, user_id=user_id,
            client_id=scrub(client_id) if client_id is not None else None,
            content=scrub(content), options=_data_scrub(options),
            created_at=accepted_at or timezone.now(),
        )
    return row.pk


def queued_claim(*, session_id: str, turn_id: str, owner: str,
                 lease_seconds: float) -> tuple[QueuedMessage | None, dict | None] | None:
    """Take the session for its oldest handed-on message, run as `turn_id`: (the message, the
    dead turn this ended or None); None when none waits; (None, None) when some wait but a
    live turn holds the session (or another process claimed it a moment ago).

    The session's row is locked and the message's claim is a conditional
    update, in one transaction: however many processes try at once, one gets
    it. A message claimed by a turn that no longer holds the session (its
    process died before saving it) is claimed again.
    """
    if not QueuedMessage.objects.filter(session_id=session_id).exists():
        return None  # the usual case, in one cheap query
    now = timezone.now()
    with transaction.atomic():
        session = ChatSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None:
            return None
        if _held(session, now):
            return None, None
        row = QueuedMessage.objects.filter(session_id=session_id).order_by("created_at", "id").first()
        if row is None:
            return None
        if not QueuedMessage.objects.filter(pk=row.pk, turn_id=row.turn_id).update(turn_id=turn_id):
            return None, None
        row.turn_id = turn_id
        taken_over = _session_take(session, turn_id, owner, lease_seconds, now)
    return row, taken_over


def queued_message_append(*, queued_id: int, session_id: str, turn_id: str,
                          **fields) -> Message:
    """Save a handed-on message as the user message of the turn that claimed it, and forget
    it, at once (message_append's `fields`). Raises SessionBusy when that turn lost it."""
    with transaction.atomic():
        if not QueuedMessage.objects.filter(pk=queued_id, turn_id=turn_id).delete()[0]:
            raise SessionBusy("The queued message was taken over by another process")
        return message_append(session_id=session_id, turn_id=turn_id, **fields)


def queued_done(*, queued_id: int, turn_id: str) -> None:
    """Forget a handed-on message its turn ran without saving it (a regenerate), or refused."""
    QueuedMessage.objects.filter(pk=queued_id, turn_id=turn_id).delete()


# --- Usage -------------------------------------------------------------------


def model_price(model: str) -> dict | None:
    """The configured price of a model: its exact name, else the part after the last '/'."""
    prices = settings.CONSTRUCT_PRICES
    return prices.get(model) or prices.get(model.rsplit("/", 1)[-1])


def usage_record(*, session_id: str | None, user_id: int | None, turn_id: str, model: str,
                 input_tokens: int, output_tokens: int) -> UsageRecord:
    price = model_price(model) or {}
    cost = (
        Decimal(str(price.get("input", 0))) * input_tokens
        + Decimal(str(price.get("output", 0))) * output_tokens
    ) / Decimal(1_000_000)
    return UsageRecord.objects.create(
        session_id=session_id,
        user_id=user_id,
        turn_id=turn_id,
        model=scrub(model)[:200],
        input_tokens=max(int(input_tokens), 0),
        output_tokens=max(int(output_tokens), 0),
        cost_usd=cost,
    )


# --- Operator events -------------------------------------------------------------

# Kept per user (and for everyone): a page shows the last 100 its user may see, and the
# last 100 of broadcast and own events together are always among these.
OPERATOR_EVENTS_KEPT = 100
# An event larger than this (as JSON) is kept as its type alone: the page shows a line, not a dump.
OPERATOR_EVENT_MAX_CHARS = 16_384


def operator_event_record(*, event, user_id: int | None, session_id: str = "") -> OperatorEvent:
    """Keep an operator event (scrubbed) for `user_id`, or for everyone (None); the oldest past
    OPERATOR_EVENTS_KEPT of that user's (or everyone's) go."""
    return operator_events_record(events=[(event, user_id, session_id)])[0]


def operator_events_record(*, events: list[tuple]) -> list[OperatorEvent]:
    """Keep several operator events, each (event, user_id, session_id), in order, in one
    transaction, trimming each user's (and everyone's) to the last OPERATOR_EVENTS_KEPT once."""
    rows = []
    for event, user_id, session_id in events:
        event = scrub_value(event if isinstance(event, dict) else {"value": event})
        if not rules.json_storable(event) or len(json.dumps(event, ensure_ascii=False)) > OPERATOR_EVENT_MAX_CHARS:
            kind = event.get("type")
            event = {"type": _clean_text(kind, 100) if isinstance(kind, str) else "event", "truncated": True}
        if not isinstance(session_id, str):
            session_id = ""
        rows.append(OperatorEvent(user_id=user_id, session_id=_clean_text(session_id, 128), event=event))
    owners = {row.user_id for row in rows}
    with transaction.atomic():
        OperatorEvent.objects.bulk_create(rows)
        if len(owners) <= _TRIM_ONE_BY_ONE:
            for user_id in owners:
                mine = OperatorEvent.objects.filter(user_id=user_id) if user_id is not None else \
                    OperatorEvent.objects.filter(user__isnull=True)
                oldest_kept = mine.order_by("-id").values_list("id", flat=True)[
                    OPERATOR_EVENTS_KEPT - 1:OPERATOR_EVENTS_KEPT]
                mine.filter(id__lt=Subquery(oldest_kept)).delete()
        else:
            OperatorEvent.objects.filter(id__in=_past_kept(owners)).delete()
    return rows


# Up to this many owners in a batch, one trimming statement each; past it, one for them all
# (measured in bench/RESULTS.md: SQLite and PostgreSQL, 1 to 100 owners).
_TRIM_ONE_BY_ONE = 2


def _past_kept(owners: set) -> QuerySet:
    """The ids of the operator events of `owners` (user ids, None for everyone's) past the
    last OPERATOR_EVENTS_KEPT of each: each owner's numbered newest first."""
    scope = Q(user_id__in=[user_id for user_id in owners if user_id is not None])
    if None in owners:
        scope |= Q(user__isnull=True)
    return OperatorEvent.objects.filter(scope).annotate(
        place=Window(RowNumber(), partition_by=[F("user_id")], order_by=F("id").desc())
    ).filter(place__gt=OPERATOR_EVENTS_KEPT).values("id")


# --- Memory notes ----------------------------------------------------------------


def note_store(*, user_id: int, session_id: str | None, content: str, tags: list[str]) -> MemoryNote:
    """Keep a user's note (content and tags scrubbed); it outlives its session, and needs none."""
    session = session_id if session_id and ChatSession.objects.filter(pk=session_id).exists() else None
    return MemoryNote.objects.create(user_id=user_id, session_id=session, content=scrub(content),
                                     tags=scrub_value(tags))


# --- Tool approvals ------------------------------------------------------------------

_STATE_OF_DECISION = {
    rules.APPROVE: ToolApproval.State.APPROVED,
    rules.ALWAYS: ToolApproval.State.APPROVED,
    rules.DENY: ToolApproval.State.DENIED,
    rules.TIMEOUT: ToolApproval.State.TIMEOUT,
}


def _clean_text(text: str, limit: int) -> str:
    """What a model gave as an id or a name, scrubbed, as any text column keeps it."""
    text = scrub(str(text)).replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def approval_create(*, session_id: str, turn_id: str, tool_call_id: str, name: str, args,
                    seq: int, timeout_seconds: float) -> ToolApproval:
    """A pending approval of one tool call (its arguments scrubbed), expiring in `timeout_seconds`.

    The call comes from the model: its arguments are kept as they are when a
    JSON column can hold them, else as JSON text.
    """
    return ToolApproval.objects.create(
        session_id=session_id, turn_id=turn_id, tool_call_id=_clean_text(tool_call_id, 200),
        name=_clean_text(name, 200), args=rules.args_for_storage(scrub_value(args)), seq=seq,
        expires_at=timezone.now() + timedelta(seconds=timeout_seconds),
    )


def approval_decide(*, approval_id: str, decision: str, by: str, args: dict | None = None,
                    user_id: int | None = None) -> ToolApproval:
    """Decide a pending approval: approve, deny, always (approve, and allow the tool for the rest
    of the session) or timeout. Returns the decided row.

    One conditional update: whoever comes first (two sockets, REST, admin, the
    timeout, on any process) wins, and every other caller gets ApprovalInvalid,
    as does an unknown id, another user's (with `user_id`, the caller's scope;
    None for an operator) or one past its expiry (except for the timeout).
    `args`, when given, replaces the call's arguments. Every decision is
    audited: who, which tool, sha256 of the arguments, the outcome.
    """
    if decision not in _STATE_OF_DECISION:
        raise ApprovalInvalid("decision must be approve, deny or always", approval_id=approval_id)
    if args is not None and not (isinstance(args, dict) and rules.json_storable(args)):
        raise ApprovalInvalid("args must be a JSON object without NaN, Infinity, NUL or lone "
                              "surrogates", approval_id=approval_id)
    now = timezone.now()
    rows = ToolApproval.objects.filter(pk=approval_id)
    if user_id is not None:
        rows = rows.filter(session__user_id=user_id)
    by = scrub(by or "")[:200]
    if args is not None:
        args = scrub_value(args)
    with transaction.atomic():
        pending = rows.filter(state=ToolApproval.State.PENDING)
        if decision == rules.TIMEOUT:
            pending = pending.filter(expires_at__lte=now)
        else:
            pending = pending.filter(expires_at__gt=now)
        won = pending.update(
            state=_STATE_OF_DECISION[decision], decision=decision, by=by,
            decided_args=args if decision in (rules.APPROVE, rules.ALWAYS) else None,
            decided_at=now,
        )
        row = rows.first()
        if not won:
            if row is None:
                raise ApprovalInvalid("Unknown approval", approval_id=approval_id)
            if row.state != ToolApproval.State.PENDING:
                raise ApprovalInvalid(f"Approval already decided: {row.decision} by {row.by}",
                                      approval_id=approval_id)
            raise ApprovalInvalid("Approval not yet expired" if decision == rules.TIMEOUT
                                  else "Approval expired", approval_id=approval_id)
        if decision == rules.ALWAYS:
            session = ChatSession.objects.select_for_update().only("always_allowed").get(
                pk=row.session_id
            )
            if row.name not in session.always_allowed:
                ChatSession.objects.filter(pk=row.session_id).update(
                    always_allowed=[*session.always_allowed, row.name]
                )
        ran_with = row.decided_args if row.decided_args is not None else row.args
        audit_record(
            kind="approval_decided", approval_id=row.pk, session_id=row.session_id, tool=row.name,
            args_sha256=rules.args_digest(ran_with), edited=row.decided_args is not None,
            decision=decision, by=by,
        )
    return row


def approval_applied(*, approval_id: str) -> None:
    """The turn acted on the decision (ran or refused the call): it is not continued again."""
    ToolApproval.objects.filter(pk=approval_id, applied_at__isnull=True).update(
        applied_at=timezone.now()
    )


def approval_policy_denied(*, session_id: str, name: str, args) -> None:
    """Audit a call the `deny` policy refused (no row: nobody was asked)."""
    audit_record(kind="approval_decided", session_id=session_id, tool=scrub(name)[:200],
                 args_sha256=rules.args_digest(scrub_value(args)), edited=False,
                 decision=rules.DENY, by="policy")
