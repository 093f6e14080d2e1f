"""What the gateway keeps: sessions and their messages, paired devices, the audit trail, usage."""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class ChatSession(models.Model):
    """One conversation. Its id is the one the socket and the REST API use."""

    class State(models.TextChoices):
        IDLE = "idle"
        RUNNING = "running"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    id = models.CharField(primary_key=True, max_length=128)
    # Whose conversation this is: the user of the device that started it.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="chat_sessions")
    name = models.CharField(max_length=200, blank=True, default="")
    # The name is the gateway's (from the first message, or the title the model proposed), not
    # a person's: the model's title may replace it, and a rename ends that for good.
    auto_named = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IDLE)
    turn_id = models.CharField(max_length=64, null=True, blank=True)
    turn_started_at = models.DateTimeField(null=True, blank=True)
    # The process running the turn renews this lease; a lease that has run out
    # means that process died, and any process may take the session over.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    turn_owner = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity = models.DateTimeField(auto_now_add=True, db_index=True)
    # Messages on the active branch (the path from the first message to `active_leaf`).
    message_count = models.PositiveIntegerField(default=0)
    # A conversation is a tree (an edit or a regenerated answer starts a branch):
    # the active branch ends here, and a new message follows this one.
    active_leaf = models.ForeignKey("Message", on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    # The highest seq given out, over every branch: messages are numbered as they are written.
    last_seq = models.PositiveIntegerField(default=0)
    # Tools a person answered "always" for: they run without asking for the rest of the session.
    always_allowed = models.JSONField(default=list, blank=True)
    # The model its turns use (an id of CONSTRUCT_MODELS), chosen by a message's "model";
    # empty: the first in the list. One no longer listed counts as empty.
    model = models.CharField(max_length=200, null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-last_activity"]
        verbose_name = "session"

    def __str__(self):
        return self.name or self.id


class Message(models.Model):
    """A message of a session. Tool calls, results and thinking live in `data`.

    Messages form a tree: each follows its `parent` (None for the first), and
    siblings are versions of one step (an edited question, a regenerated
    answer). `seq` numbers them as they were written, over every branch.
    """

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"
        SYSTEM = "system"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    turn_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # The message this one follows; deleting it deletes the branches that grow from it.
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="children")
    # Its place on its branch: 1 for a first message, its parent's depth + 1 otherwise.
    depth = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="message_session_seq_unique")
        ]

    def __str__(self):
        return f"{self.role} #{self.seq}"


class OperatorEvent(models.Model):
    """An operator event as the chat sockets heard it, kept so a page opened later shows it.

    `user` None: a staff operator's channel event, for everyone; otherwise the
    event of that user's turn (its start, end, error, approvals) or a channel
    event that user posted. Only the last few per user are kept.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="+")
    # Not a foreign key: the event stays true after its session is deleted.
    session_id = models.CharField(max_length=128, blank=True, default="")
    event = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        verbose_name = "operator event"
        indexes = [models.Index(fields=["user", "id"], name="operator_event_user_id")]


class ClientMessageId(models.Model):
    """A `client_id` a session has accepted; a resend with the same one is not run again."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="client_ids")
    client_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "client_id"], name="client_message_id_unique"
            )
        ]


class TurnWaiter(models.Model):
    """A message waiting for its session's running turn. Rows outlive no wait: they expire."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="waiters")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)


class QueuedMessage(models.Model):
    """A message accepted by a process that drains: it waits here for any process to run it.

    Rows run in order (by acceptance), each once: a process claims the oldest together
    with the session's lock (services.queued_claim) and deletes it as the turn
    saves the user message (services.queued_message_append). A claim whose
    process died before that (its turn no longer holds the session) is claimed again.
    """

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="queued")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    client_id = models.CharField(max_length=128, null=True, blank=True)
    content = models.TextField(blank=True, default="")
    # The message's options: page_context, attachments, model, reasoning, ask ({"kind", "message_id"}).
    options = models.JSONField(default=dict, blank=True)
    # The turn that claimed it, while that turn has not saved the message yet.
    turn_id = models.CharField(max_length=64, blank=True, default="")
    # When the message was accepted (a message that waited for the lock keeps its place).
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class PairedDevice(models.Model):
    """A client that paired (or signed in). Only the SHA-256 of its token is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="devices")
    name = models.CharField(max_length=200, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True)
    token_hint = models.CharField(max_length=16, blank=True, default="")
    client = models.CharField(max_length=64, blank=True, default="")
    paired_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-paired_at"]

    def __str__(self):
        return self.name or f"device {self.pk} ({self.token_hint}…)"

    @property
    def display_name(self) -> str:
        """How the device is named to people (in `by` of an approval or a stop)."""
        return self.name or f"device {self.pk}"


class PairingCode(models.Model):
    """A one-time pairing code; only its hash is kept."""

    code_hash = models.CharField(max_length=64)
    # The user whose device the code pairs; none: the default owner.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True,
                             blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)


class PairingThrottle(models.Model):
    """Failed pairing attempts of one client, and its lockout."""

    client = models.CharField(primary_key=True, max_length=64)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)


class AuditEvent(models.Model):
    """An append-only, hash-chained record of a security event."""

    class Kind(models.TextChoices):
        PAIRING_SUCCESS = "pairing_success"
        PAIRING_FAILURE = "pairing_failure"
        PAIRING_LOCKOUT = "pairing_lockout"
        SOCKET_CONNECT = "socket_connect"
        SOCKET_REFUSED = "socket_refused"
        DEVICE_REVOKED = "device_revoked"
        LOGIN_SUCCESS = "login_success"
        LOGIN_FAILURE = "login_failure"
        APPROVAL_DECIDED = "approval_decided"

    created_at = models.DateTimeField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    client = models.CharField(max_length=64, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "audit event"


class AuditHead(models.Model):
    """The hash of the newest audit event; locking this one row serialises appends."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_hash = models.CharField(max_length=64)


class UsageRecord(models.Model):
    """Tokens and cost of one provider call."""

    session = models.ForeignKey(
        ChatSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    # Whose spend it is: kept when the session is deleted, so quotas stay true.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                             blank=True, related_name="usage")
    turn_id = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]


class MemoryNote(models.Model):
    """A note the agent stored with `memory_store`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A user's notes are theirs: another user's sessions never recall them.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memory_notes")
    session = models.ForeignKey(
        ChatSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="notes"
    )
    content = models.TextField()
    tags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]


class UserQuota(models.Model):
    """A user's own spending limits; an empty field takes the gateway's default for it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="quota")
    daily_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True,
        help_text="USD per day; empty: CONSTRUCT_USER_DAILY_BUDGET_USD",
    )
    monthly_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True,
        help_text="USD per calendar month; empty: CONSTRUCT_USER_MONTHLY_BUDGET_USD",
    )
    daily_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="input and output tokens per day; empty: CONSTRUCT_USER_DAILY_TOKENS",
    )

    class Meta:
        verbose_name = "quota"

    def __str__(self):
        return f"quota of {self.user}"


def _approval_id() -> str:
    return "ap_" + secrets.token_urlsafe(18)


class ToolApproval(models.Model):
    """A tool call that waits (or waited) for a person's answer.

    Written after the assistant message with the call is saved and before
    `approval_request` goes out, so any process can act on the answer: the one
    running the turn, or, if it died, the one that continues the turn.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        TIMEOUT = "timeout"

    class Decision(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"
        ALWAYS = "always"
        TIMEOUT = "timeout"

    id = models.CharField(primary_key=True, max_length=64, default=_approval_id, editable=False)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="approvals")
    turn_id = models.CharField(max_length=64)
    tool_call_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    args = models.JSONField(default=dict, blank=True)
    # The seq of the turn's approval_request event (a turn continued elsewhere numbers on from it).
    seq = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True, default="")
    # Who decided: a device's name, "operator" (admin) or "timeout".
    by = models.CharField(max_length=200, blank=True, default="")
    # The arguments the person put in place of the model's, if they edited them.
    decided_args = models.JSONField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    # When the turn acted on the decision (ran or refused the call). Until then
    # a turn whose process died is continued rather than ended as interrupted.
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        verbose_name = "tool approval"
        indexes = [
            models.Index(fields=["state", "expires_at"], name="approval_state_expires"),
            models.Index(fields=["session", "turn_id"], name="approval_session_turn"),
        ]

    def __str__(self):
        return f"{self.name} ({self.state})"
class Attachment(models.Model):
    """A file uploaded into a session, for its messages to carry to the model.

    The file lives at CONSTRUCT_MEDIA_ROOT/`path`, under a random name: the
    user's file name is kept (sanitised) for display only, never as a path.
    """

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="attachments")
    name = models.CharField(max_length=255)
    # Found from the content, never from the name.
    mime = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    # Relative to CONSTRUCT_MEDIA_ROOT: <session folder>/<random name>.
    path = models.CharField(max_length=255, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "created_at", "id"]

    def __str__(self):
        return self.name
