"""Reads of sessions and their messages."""

import logging
import re
from datetime import datetime, time
from decimal import Decimal

from django.db.models import Count, DecimalField, Exists, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from sessions_app.models import ChatSession, MemoryNote, Message, ToolApproval, UsageRecord

logger = logging.getLogger(__name__)

# A rough token estimate (about four characters a token) is enough to keep the
# history inside the window; the provider's own count is recorded afterwards.
CHARS_PER_TOKEN = 4
_HISTORY_BATCH = 200
_HISTORY_BATCH_MAX = 3200
_HISTORY_FIELDS = ("seq", "role", "content", "data")


def session_get(*, session_id: str, user_id: int | None = None) -> ChatSession | None:
    """The session; with `user_id`, only if it is that user's (another's answers as a missing one)."""
    sessions = ChatSession.objects.filter(pk=session_id)
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    return sessions.first()


def session_owner_id(*, session_id: str) -> int | None:
    """Whose session this id is, or None when there is no such session."""
    return ChatSession.objects.filter(pk=session_id).values_list("user_id", flat=True).first()


def estimate_tokens(message: dict) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        size += len(call.get("name", "")) + len(call.get("arguments", ""))
    return size // CHARS_PER_TOKEN + 4


def message_to_neutral(role: str, content: str, data: dict) -> dict:
    """A stored message in the providers' neutral shape (see chat/agent/providers/base.py)."""
    if role == Message.Role.TOOL:
        return {
            "role": "tool",
            "tool_call_id": data.get("tool_call_id", ""),
            "name": data.get("name", ""),
            "content": content,
        }
    message = {"role": role, "content": content}
    if role == Message.Role.ASSISTANT and data.get("tool_calls"):
        message["tool_calls"] = data["tool_calls"]
    return message


def history_for_provider(*, session_id: str, token_budget: int,
                         open_tail: bool = False) -> tuple[list[dict], int]:
    """The newest messages that fit in `token_budget`, oldest first, and how many were left out.

    Reads newest first in small batches, so a session of 10,000 messages costs
    what its window costs, not what its whole history costs. A tool result is
    never kept without the assistant message that called it. With `open_tail`,
    the last message's tool calls without results are left open (a turn
    continued from its saved history answers them), not filled in.
    """
    kept: list[dict] = []
    used = 0
    total = ChatSession.objects.filter(pk=session_id).values_list("message_count", flat=True).first() or 0
    rows = Message.objects.filter(session_id=session_id).order_by("-seq").values_list(*_HISTORY_FIELDS)
    # Keyset pages (seq below the last one read): each is one range of the
    # (session, seq) index, where OFFSET would scan again all it skips. After
    # the first page, a page is sized to what the budget left should hold.
    size = _HISTORY_BATCH
    before = None
    full = False
    while not full:
        page = rows if before is None else rows.filter(seq__lt=before)
        batch = list(page[:size])
        if not batch:
            break
        before = batch[-1][0]
        for _seq, role, content, data in batch:
            if role == Message.Role.SYSTEM:
                continue
            message = message_to_neutral(role, content, data or {})
            cost = estimate_tokens(message)
            if kept and used + cost > token_budget:
                full = True
                break
            kept.append(message)
            used += cost
        per_message = used / max(len(kept), 1)
        size = max(50, min(int((token_budget - used) / per_message * 1.2) + 10, _HISTORY_BATCH_MAX))
    kept.reverse()
    # The window opens on a user message: never on tool results whose call was
    # cut off, nor on an assistant message (Anthropic refuses both).
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
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
                           "content": UNANSWERED_TOOL_CALL})
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
    return list(Message.objects.filter(session_id=session_id).order_by("seq"))


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


def session_list(*, user_id: int | None, state: str | None = None,
                 search: str | None = None) -> QuerySet[ChatSession]:
    """A user's sessions (every user's with `user_id` None), newest first, with `cost_usd`.

    `search` matches the name or any message's text.
    """
    sessions = ChatSession.objects.annotate(cost_usd=session_cost_expression())
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    if state:
        sessions = sessions.filter(state=state)
    if search:
        # IN (subquery) rather than a join: each session appears once, without DISTINCT.
        matching = Message.objects.filter(content__icontains=search).values("session_id")
        sessions = sessions.filter(Q(name__icontains=search) | Q(pk__in=matching))
    return sessions.order_by("-last_activity", "-created_at", "-pk")


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
