"""Reads of sessions and their messages."""

import logging
import re
from datetime import datetime, time
from decimal import Decimal

from django.db.models import Count, DecimalField, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from sessions_app import windows
from sessions_app.attachments import attachments_tokens
from sessions_app.branches import branch_up, newest_leaf_under, up_to_role  # noqa: F401  (a read)
from sessions_app.models import (
    AuditEvent, ChatSession, MemoryNote, Message, OperatorEvent, QueuedMessage, ToolApproval,
    UsageRecord,
)

logger = logging.getLogger(__name__)

# A rough token estimate (about four characters a token) is enough to keep the
# history inside the window; the provider's own count is recorded afterwards.
CHARS_PER_TOKEN = 4
_HISTORY_BATCH = 200
_HISTORY_BATCH_MAX = 3200
_HISTORY_FIELDS = ("parent_id", "role", "content", "data")


def session_get(*, session_id: str, user_id: int | None = None) -> ChatSession | None:
    """The session; with `user_id`, only if it is that user's (another's answers as a missing one)."""
    sessions = ChatSession.objects.filter(pk=session_id)
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    return sessions.first()


def session_auto_named(*, session_id: str) -> bool:
    """Whether the session's name is still the gateway's own (no person named it)."""
    return ChatSession.objects.filter(pk=session_id, auto_named=True).exists()


def session_owner_id(*, session_id: str) -> int | None:
    """Whose session this id is, or None when there is no such session."""
    return ChatSession.objects.filter(pk=session_id).values_list("user_id", flat=True).first()


def estimate_tokens(message: dict) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        size += len(call.get("name", "")) + len(call.get("arguments", ""))
    return size // CHARS_PER_TOKEN + 4 + attachments_tokens(message.get("attachments"))


def message_to_neutral(role: str, content: str, data: dict) -> dict:
    """A stored message in the providers' neutral shape (see chat/agent/providers/base.py)."""
    if role == Message.Role.TOOL:
        message = {
            "role": "tool",
            "tool_call_id": data.get("tool_call_id", ""),
            "name": data.get("name", ""),
            "content": content,
        }
        if data.get("is_error"):
            message["is_error"] = True
        return message
    message = {"role": role, "content": content}
    if role == Message.Role.USER and data.get("attachments"):
        # References only: the turn reads the files (chat/turns/attachments.py).
        message["attachments"] = data["attachments"]
    if role == Message.Role.ASSISTANT:
        if data.get("tool_calls"):
            message["tool_calls"] = data["tool_calls"]
        if data.get("thinking_blocks") and data.get("provider"):
            # The provider's own blocks, for that provider only (its converter checks `provider`).
            message["thinking_blocks"] = data["thinking_blocks"]
            message["provider"] = data["provider"]
        if data.get("stopped") or data.get("error"):
            # Saved when a stop or an error cut it off (chat/turns/run.py, _save_partial).
            message["incomplete"] = True
    return message


def history_for_provider(*, session_id: str, token_budget: int, open_tail: bool = False,
                         leaf_id: int | None = None) -> tuple[list[dict], int]:
    """The newest messages of the active branch that fit in `token_budget`, oldest first,
    and how many of the branch were left out.

    The branch is the path from the first message to the active leaf (or to
    `leaf_id`): a message of another branch (an abandoned answer, the question
    before an edit) is never in it. A tool result is never kept without the
    assistant message that called it. With `open_tail`, the last message's tool
    calls without results are left open (a turn continued from its saved
    history answers them), not filled in.
    """
    if leaf_id is None:
        leaf_id, total = active_leaf(session_id=session_id)
    else:
        total = Message.objects.filter(pk=leaf_id).values_list("depth", flat=True).first() or 0
    kept, _costs = _branch_window(leaf_id, token_budget)
    return _window_sent(kept, session_id=session_id, total=total, token_budget=token_budget,
                        open_tail=open_tail)


def history_for_question(*, session_id: str, question: Message, token_budget: int) -> tuple[list[dict], int]:
    """history_for_provider for a turn whose question was just stored (`question`, the
    active leaf): from the window the session's last turn here kept in memory when it
    ends at the question's parent (sessions_app.windows), else read; either way the
    window is kept for the next turn, which then reads nothing but its own question."""
    budget = token_budget
    cached = windows.window_for(session_id, parent_id=question.parent_id, budget=budget)
    if cached is None:
        kept, costs = _branch_window(question.pk, budget)
    else:
        kept, costs = cached
        if question.role != Message.Role.SYSTEM:
            message = message_to_neutral(question.role, question.content, question.data or {})
            kept.append(message)
            costs.append(estimate_tokens(message))
    kept = windows.window_keep(session_id, leaf_id=question.pk, budget=budget, messages=kept,
                               costs=costs)
    return _window_sent(kept, session_id=session_id, total=question.depth, token_budget=budget)


def window_extend(*, session_id: str, row: Message) -> None:
    """A message a turn stored: the session's kept window (if it ends at its parent) ends
    at it now."""
    message = None
    if row.role != Message.Role.SYSTEM:
        message = message_to_neutral(row.role, row.content, row.data or {})
    windows.window_extend(session_id, message_id=row.pk, parent_id=row.parent_id, message=message,
                          cost=estimate_tokens(message) if message is not None else 0)


def _branch_window(leaf_id: int | None, token_budget: int) -> tuple[list[dict], list[int]]:
    """The newest messages of the branch ending at `leaf_id` that fit in `token_budget`
    (the newest always), oldest first, with their token estimates.

    It is read newest first in small batches, so a session of 10,000 messages
    costs what its window costs, not what its whole history (or its number of
    branches) costs.
    """
    kept: list[dict] = []
    costs: list[int] = []
    used = 0
    # Keyset pages up the branch (from the parent of the oldest message read):
    # each is a walk of at most `size` steps by primary key, where OFFSET would
    # walk again all it skips. After the first page, a page is sized to what
    # the budget left should hold.
    size = _HISTORY_BATCH
    start = leaf_id
    full = False
    while not full and start is not None:
        batch = list(
            Message.objects.filter(pk__in=branch_up(start, size)).order_by("-depth")
            .values_list(*_HISTORY_FIELDS)[:size]
        )
        if not batch:
            break
        start = batch[-1][0]
        for _parent, role, content, data in batch:
            if role == Message.Role.SYSTEM:
                continue
            message = message_to_neutral(role, content, data or {})
            cost = estimate_tokens(message)
            if kept and used + cost > token_budget:
                full = True
                break
            kept.append(message)
            costs.append(cost)
            used += cost
        per_message = used / max(len(kept), 1)
        size = max(50, min(int((token_budget - used) / per_message * 1.2) + 10, _HISTORY_BATCH_MAX))
    kept.reverse()
    costs.reverse()
    return kept, costs


def _window_sent(kept: list[dict], *, session_id: str, total: int, token_budget: int,
                 open_tail: bool = False) -> tuple[list[dict], int]:
    """A window as the provider is sent it, and how many messages of the branch it leaves out."""
    # Each message a copy: what a turn does to its history never reaches a kept window.
    kept = [dict(message) for message in kept]
    # The window opens on a user message: never on tool results whose call was
    # cut off, nor on an assistant message (Anthropic refuses both).
    first = 0
    while first < len(kept) and kept[first]["role"] != "user":
        first += 1
    kept = kept[first:]
    dropped = max(total - len(kept), 0)
    if dropped:
        logger.info("history of session %s: sent %d messages, left out %d to fit %d tokens",
                    session_id, len(kept), dropped, token_budget)
    return pair_tool_results(kept, open_tail=open_tail), dropped


UNANSWERED_TOOL_CALL = "[no result: the turn ended before this tool finished]"


def pair_tool_results(messages: list[dict], open_tail: bool = False) -> list[dict]:
    """Every tool call followed by its result, and no result without its call.

    A turn stopped (or crashed) in the middle of a tool leaves a call without a
    result, and both providers refuse such a history: the missing result is
    filled in (except, with `open_tail`, for the last message's calls). A
    result whose call is not right before it is left out.
    """
    paired: list[dict] = []
    unanswered: dict[str, str] = {}

    def fill_in():
        for call_id, name in unanswered.items():
            paired.append({"role": "tool", "tool_call_id": call_id, "name": name,
                           "content": UNANSWERED_TOOL_CALL, "is_error": True})
        unanswered.clear()

    for message in messages:
        if message["role"] == "tool":
            if unanswered.pop(message["tool_call_id"], None) is not None:
                paired.append(message)
            continue
        fill_in()
        paired.append(message)
        for call in message.get("tool_calls") or ():
            unanswered[call.get("id", "")] = call.get("name", "")
    if not open_tail:
        fill_in()
    return paired


def session_messages(*, session_id: str) -> list[Message]:
    """Every message of every branch, in the order they were written."""
    return list(Message.objects.filter(session_id=session_id).order_by("seq"))


# --- Branches ----------------------------------------------------------------------
#
# A session's messages form a tree (Message.parent); sessions_app/branches.py
# walks it.


def active_leaf(*, session_id: str) -> tuple[int | None, int]:
    """(the id of the active branch's last message, the branch's length); (None, 0) when empty."""
    row = ChatSession.objects.filter(pk=session_id).values_list(
        "active_leaf_id", "message_count", "last_seq").first()
    if row is None:
        return None, 0
    leaf_id, count, last_seq = row
    if leaf_id is None and last_seq:
        # The active leaf was deleted (in the admin): the newest message left ends the branch.
        newest = Message.objects.filter(session_id=session_id).order_by("-seq").values_list(
            "pk", "depth").first()
        return newest if newest is not None else (None, 0)
    return leaf_id, count


def message_get(*, session_id: str, message_id: int) -> Message | None:
    """A message of this session (another session's answers as a missing one)."""
    return Message.objects.filter(pk=message_id, session_id=session_id).first()


def last_user_message(*, session_id: str, leaf_id: int | None = None) -> Message | None:
    """The newest user message of the active branch (or of the branch ending at `leaf_id`)."""
    if leaf_id is None:
        leaf_id, _count = active_leaf(session_id=session_id)
        if leaf_id is None:
            return None
    return (Message.objects.filter(pk__in=up_to_role(leaf_id, Message.Role.USER), role=Message.Role.USER)
            .order_by("-depth").first())


def branch_messages(*, session_id: str, leaf_id: int | None = None) -> list[Message]:
    """The active branch (or the branch ending at `leaf_id`), first message first.

    Each message carries `sibling_ids`: the ids of the messages that follow the
    same parent (itself included), oldest first. Three queries, whatever the
    number of branches.
    """
    if leaf_id is None:
        leaf_id, count = active_leaf(session_id=session_id)
    else:
        count = Message.objects.filter(pk=leaf_id, session_id=session_id).values_list(
            "depth", flat=True).first() or 0
    if leaf_id is None or not count:
        return []
    chain = list(Message.objects.filter(pk__in=branch_up(leaf_id, count)).order_by("depth"))
    # The children of the branch's messages, and the first messages: every sibling of its own.
    siblings = (Message.objects.filter(session_id=session_id)
                .filter(Q(parent_id__in=branch_up(leaf_id, count)) | Q(parent__isnull=True))
                .order_by("seq").values_list("parent_id", "pk"))
    _attach_siblings(chain, siblings)
    return chain


def all_messages(*, session_id: str) -> list[Message]:
    """Every message of every branch in the order they were written, each with `sibling_ids`."""
    messages = session_messages(session_id=session_id)
    _attach_siblings(messages, [(m.parent_id, m.pk) for m in messages])
    return messages


def _attach_siblings(messages: list[Message], pairs) -> None:
    by_parent: dict[int | None, list[int]] = {}
    for parent_id, pk in pairs:
        by_parent.setdefault(parent_id, []).append(pk)
    for message in messages:
        message.sibling_ids = by_parent.get(message.parent_id, [message.pk])


# --- Lists and costs (REST API and admin) --------------------------------------

_MONEY = DecimalField(max_digits=14, decimal_places=8)


def session_cost_expression() -> Subquery:
    """A session's summed usage cost, as an annotation.

    A subquery, not a join: joined with a message search a Sum would count
    each usage row once per matching message.
    """
    per_session = (
        UsageRecord.objects.filter(session=OuterRef("pk"))
        .order_by()
        .values("session")
        .annotate(total=Sum("cost_usd"))
        .values("total")
    )
    return Coalesce(Subquery(per_session, output_field=_MONEY), Value(Decimal(0)), output_field=_MONEY)


def chat_message_count_expression() -> Subquery:
    """A session's questions and answers: user messages and assistant messages with text (not
    tool results, nor an assistant row that only calls tools), in every branch."""
    per_session = (Message.objects.filter(session_id=OuterRef("pk"))
                   .filter(Q(role=Message.Role.USER) | (Q(role=Message.Role.ASSISTANT) & ~Q(content="")))
                   .order_by().values("session_id").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(per_session, output_field=IntegerField()), Value(0))


def session_list(*, user_id: int | None, state: str | None = None,
                 search: str | None = None, with_empty: bool = True) -> QuerySet[ChatSession]:
    """A user's sessions (every user's with `user_id` None), newest first, with `cost_usd`.

    `search` matches the name or any message's text. Without `with_empty`, a
    session with no message (an upload never sent, a first message refused) is
    left out unless a turn runs in it.
    """
    sessions = ChatSession.objects.annotate(cost_usd=session_cost_expression(),
                                            chat_message_count=chat_message_count_expression())
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    if not with_empty:
        sessions = sessions_with_messages(sessions)
    if state:
        sessions = sessions.filter(state=state)
    if search:
        # IN (subquery) rather than a join: each session appears once, without DISTINCT.
        matching = Message.objects.filter(content__icontains=search).values("session_id")
        sessions = sessions.filter(Q(name__icontains=search) | Q(pk__in=matching))
    return sessions.order_by("-last_activity", "-created_at", "-pk")


def sessions_with_messages(sessions: QuerySet[ChatSession]) -> QuerySet[ChatSession]:
    """Those of `sessions` that hold a conversation: a message, or a first turn that holds the
    session before its message is saved. Left out: an upload never sent, a first message refused."""
    return sessions.filter(Q(message_count__gt=0) | Q(state=ChatSession.State.RUNNING))


def sessions_running(*, user_id: int | None) -> QuerySet[ChatSession]:
    """A user's sessions (every user's with `user_id` None) whose row says a turn is running,
    the longest-running first.

    The row is the lock (services.turn_try_start): state "running" with the turn's
    id, whichever process runs it.
    """
    sessions = session_list(user_id=user_id, state=ChatSession.State.RUNNING)
    return sessions.order_by("turn_started_at", "pk")


def audit_list(*, kind: str | None = None) -> QuerySet[AuditEvent]:
    """The audit trail, newest first; with `kind`, only that kind of event."""
    events = AuditEvent.objects.all()
    if kind:
        events = events.filter(kind=kind)
    return events.order_by("-id")


def _usage_totals(records) -> dict:
    totals = records.aggregate(
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
        request_count=Count("id"),
        cost_usd=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=_MONEY),
    )
    return _usage_row(totals)


def _usage_row(row: dict) -> dict:
    return {
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
        "total_tokens": int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0),
        "request_count": int(row["request_count"] or 0),
        "cost_usd": float(row["cost_usd"] or 0),
    }


def usage_summary(*, user_id: int | None, by_session_limit: int = 100) -> dict:
    """Tokens, requests and cost of a user (of everyone with `user_id` None): in all, today,
    per model and per session (costliest first).

    GET /api/cost/ answers it with the budgets beside it: budget.cost_summary.
    """
    records = UsageRecord.objects.order_by()
    if user_id is not None:
        records = records.filter(user_id=user_id)
    summary = _usage_totals(records)
    # Midnight of the gateway's time zone (CONSTRUCT_TIME_ZONE), as the budgets count days.
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    summary["today"] = _usage_totals(records.filter(created_at__gte=midnight))
    grouped = dict(
        input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"),
        request_count=Count("id"), cost_usd=Sum("cost_usd"),
    )
    summary["by_model"] = {
        row["model"]: _usage_row(row)
        for row in records.values("model").annotate(**grouped).order_by("model")
    }
    per_session = (
        records.filter(session__isnull=False).values("session_id").annotate(**grouped)
        .order_by("-cost_usd", "session_id")[:by_session_limit]
    )
    summary["by_session"] = {row["session_id"]: _usage_row(row) for row in per_session}
    return summary


# --- Memory notes -----------------------------------------------------------------

_NOTE_CANDIDATES = 200
_WORD = re.compile(r"\w+", re.UNICODE)


def note_search(*, user_id: int, query: str, limit: int = 10) -> list[MemoryNote]:
    """A user's notes whose text or tags contain the query's words, most words matched first, then newest."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:20]
    if not words:
        return []
    match = Q()
    for word in words:
        match |= Q(content__icontains=word) | Q(tags__icontains=word)
    candidates = list(
        MemoryNote.objects.filter(match, user_id=user_id).order_by("-created_at")[:_NOTE_CANDIDATES]
    )

    def score(note) -> int:
        text = (note.content + " " + " ".join(note.tags)).lower()
        return sum(word in text for word in words)

    # sorted() is stable: among equal scores the newest stays first.
    return sorted(candidates, key=score, reverse=True)[:limit]


# --- Tool approvals ---------------------------------------------------------------


def approval_get(*, approval_id: str, user_id: int | None = None) -> ToolApproval | None:
    """One approval; with `user_id`, only if it is of that user's session."""
    rows = ToolApproval.objects.filter(pk=approval_id)
    if user_id is not None:
        rows = rows.filter(session__user_id=user_id)
    return rows.first()


def approval_for_call(*, session_id: str, turn_id: str, tool_call_id: str) -> ToolApproval | None:
    """The approval a turn asked for one of its tool calls, if it asked."""
    return (ToolApproval.objects.filter(session_id=session_id, turn_id=turn_id,
                                        tool_call_id=tool_call_id)
            .order_by("-requested_at").first())


def approval_list(*, user_id: int | None, state: str | None = None,
                  session_id: str | None = None) -> QuerySet[ToolApproval]:
    """A user's approvals (every user's with `user_id` None), newest first.

    `pending` lists only those that may still be answered (not past their expiry).
    """
    rows = ToolApproval.objects.all()
    if user_id is not None:
        rows = rows.filter(session__user_id=user_id)
    if session_id:
        rows = rows.filter(session_id=session_id)
    if state:
        rows = rows.filter(state=state)
        if state == ToolApproval.State.PENDING:
            rows = rows.filter(expires_at__gt=timezone.now())
    return rows.order_by("-requested_at", "-pk")


def approvals_expired(*, limit: int = 100) -> list[str]:
    """Ids of pending approvals past their expiry: the timeout decides them."""
    return list(
        ToolApproval.objects.filter(state=ToolApproval.State.PENDING, expires_at__lte=timezone.now())
        .order_by("expires_at").values_list("pk", flat=True)[:limit]
    )


def turns_parked(*, limit: int = 100) -> list[tuple[str, str]]:
    """(session id, turn id) of turns whose process died while they waited for an approval.

    Their session is still running the turn, its lease ran out, and one of its
    approvals was not acted on yet: any process may continue it (services.turn_adopt).
    """
    waiting = ToolApproval.objects.filter(
        session_id=OuterRef("pk"), turn_id=OuterRef("turn_id"), applied_at__isnull=True
    )
    now = timezone.now()
    return list(
        ChatSession.objects.filter(state=ChatSession.State.RUNNING)
        .filter(Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True))
        .filter(Exists(waiting))
        .values_list("pk", "turn_id")[:limit]
    )


def approvals_waiting_any() -> bool:
    """Whether some approval is pending, or some dead process's turn waits on one."""
    return ToolApproval.objects.filter(state=ToolApproval.State.PENDING).exists() or bool(
        turns_parked(limit=1)
    )


def queued_sessions(*, limit: int = 100) -> list[str]:
    """The sessions with messages a draining process handed on, oldest first."""
    ids: list[str] = []
    for session_id in QueuedMessage.objects.order_by("created_at", "id").values_list(
            "session_id", flat=True)[:limit * 8]:
        if session_id not in ids:
            ids.append(session_id)
    return ids[:limit]


def queued_count(*, session_id: str | None = None) -> int:
    """How many handed-on messages wait (for one session, or for all)."""
    rows = QueuedMessage.objects.all()
    if session_id is not None:
        rows = rows.filter(session_id=session_id)
    return rows.count()


def session_model(*, session_id: str) -> str | None:
    """The model id the session chose (None: it chose none, so the default)."""
    return ChatSession.objects.filter(pk=session_id).values_list("model", flat=True).first()


def session_always_allowed(*, session_id: str) -> list[str]:
    """The tools a person allowed "always" in this session."""
    return ChatSession.objects.filter(pk=session_id).values_list("always_allowed", flat=True).first() or []


def turn_approvals_seq(*, session_id: str, turn_id: str) -> int:
    """The highest seq of a turn's approval requests (a continued turn numbers on from it)."""
    seqs = ToolApproval.objects.filter(session_id=session_id, turn_id=turn_id).values_list("seq", flat=True)
    return max(seqs, default=0)


def approvals_pending_of_turn(*, session_id: str, turn_id: str) -> list[str]:
    """Ids of a turn's approvals that still wait for an answer."""
    return list(ToolApproval.objects.filter(
        session_id=session_id, turn_id=turn_id, state=ToolApproval.State.PENDING
    ).values_list("pk", flat=True))


def operator_events(*, user_id: int | None, limit: int = 100) -> list[OperatorEvent]:
    """The last `limit` operator events a user may see, oldest first: those for everyone and
    their own (their turns', the ones they posted); every user's for `user_id` None (staff)."""
    events = OperatorEvent.objects.all()
    if user_id is not None:
        events = events.filter(Q(user__isnull=True) | Q(user_id=user_id))
    newest = list(events.order_by("-id")[:limit])
    newest.reverse()
    return newest
