"""Reads of sessions and their messages."""

import logging

from sessions_app.models import ChatSession, Message

logger = logging.getLogger(__name__)

# A rough token estimate (about four characters a token) is enough to keep the
# history inside the window; the provider's own count is recorded afterwards.
CHARS_PER_TOKEN = 4
_HISTORY_BATCH = 200
_HISTORY_FIELDS = ("seq", "role", "content", "data")


def session_get(*, session_id: str) -> ChatSession | None:
    return ChatSession.objects.filter(pk=session_id).first()


def estimate_tokens(message: dict) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        size += len(call.get("name", "")) + len(call.get("arguments", ""))
    return size // CHARS_PER_TOKEN + 4


def message_to_neutral(role: str, content: str, data: dict) -> dict:
    """A stored message in the providers' neutral shape (see chat/providers/base.py)."""
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


def history_for_provider(*, session_id: str, token_budget: int) -> tuple[list[dict], int]:
    """The newest messages that fit in `token_budget`, oldest first, and how many were left out.

    Reads newest first in small batches, so a session of 10,000 messages costs
    what its window costs, not what its whole history costs. A tool result is
    never kept without the assistant message that called it.
    """
    kept: list[dict] = []
    used = 0
    total = ChatSession.objects.filter(pk=session_id).values_list("message_count", flat=True).first() or 0
    rows = Message.objects.filter(session_id=session_id).order_by("-seq").values_list(*_HISTORY_FIELDS)
    offset = 0
    full = False
    while not full:
        batch = list(rows[offset : offset + _HISTORY_BATCH])
        if not batch:
            break
        offset += len(batch)
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
    kept.reverse()
    # The window opens on a user message: never on tool results whose call was
    # cut off, nor on an assistant message (Anthropic refuses both).
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    dropped = max(total - len(kept), 0)
    if dropped:
        logger.info("history of session %s: sent %d messages, left out %d to fit %d tokens",
                    session_id, len(kept), dropped, token_budget)
    return kept, dropped


def session_messages(*, session_id: str) -> list[Message]:
    return list(Message.objects.filter(session_id=session_id).order_by("seq"))
