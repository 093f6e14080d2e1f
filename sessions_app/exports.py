"""A session as a file: Markdown for people, JSON (the messages document) for programs."""

import json
import re
from datetime import UTC

from django.utils import timezone

from sessions_app.catalogue import model_of_session
from sessions_app.models import ChatSession, Message
from sessions_app.selectors import all_messages, branch_messages

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_BACKTICK_RUN = re.compile(r"`+")


def export_filename(session: ChatSession, extension: str) -> str:
    """A name safe on every file system and in a Content-Disposition header."""
    stem = _UNSAFE_FILENAME_CHARS.sub("_", session.pk).strip("._") or "session"
    return f"construct-{stem[:80]}.{extension}"


def messages_document(session: ChatSession, branch: str = "active") -> dict:
    """What GET /api/sessions/{id}/messages/ answers (the active branch, or with `branch`
    "all" every message of every branch), and the JSON export holds (every message).

    Its schema is sessions_app.api.serializers.MessagesOutputSerializer.
    """
    if branch == "all":
        messages = all_messages(session_id=session.pk)
    else:
        messages = branch_messages(session_id=session.pk)
    return {"session_id": session.pk, "messages": [message_document(m) for m in messages]}


def message_document(message: Message) -> dict:
    """One message as the messages document has it (MessageOutputSerializer's shape).

    `sibling_ids` comes from the selector that read it (branch_messages, all_messages).
    """
    return {
        "id": message.pk,
        "parent_id": message.parent_id,
        "sibling_ids": message.sibling_ids,
        "seq": message.seq,
        "role": str(message.role),
        "content": message.content,
        "created_at": _iso_datetime(message.created_at),
        "turn_id": message.turn_id,
        "data": message.data,
    }


def _iso_datetime(value) -> str | None:
    """ISO 8601 in the current time zone, UTC written `Z`: as the REST API writes every time."""
    if value is None:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def session_json(session: ChatSession) -> str:
    """Every message of every branch, each with its parent_id: the tree, whole."""
    return json.dumps(messages_document(session, branch="all"), ensure_ascii=False, indent=2) + "\n"


# --- Markdown ----------------------------------------------------------------


def _fence(text: str, language: str = "") -> str:
    """A fenced block that no run of backticks inside `text` can close early."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _stamp(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _arguments(raw) -> str:
    """Tool arguments pretty-printed when they are JSON, else as they came."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw
    return json.dumps(raw, ensure_ascii=False, indent=2)


def _message_markdown(message: Message) -> str:
    data = message.data or {}
    if message.role == Message.Role.TOOL:
        name = data.get("name") or "tool"
        title = f"### Tool result: `{name}`" + (" (error)" if data.get("is_error") else "")
        return f"{title}\n\n{_fence(message.content)}"
    title = f"## {message.role.capitalize()} · {_stamp(message.created_at)}"
    parts = [title]
    if message.role == Message.Role.ASSISTANT and data.get("model"):
        parts.append(f"*Model:* `{_inline(str(data['model']))}`"
                     + (f" (reasoning {_inline(str(data['reasoning']))})" if data.get("reasoning") else ""))
    if data.get("thinking"):
        parts.append(_quote("**Thinking**\n\n" + data["thinking"]))
    if message.content:
        parts.append(message.content)
    for ref in data.get("attachments") or ():
        if isinstance(ref, dict):
            name = str(ref.get("name", "")).replace("`", "'")
            parts.append(f"*Attached:* `{name}` ({ref.get('size')} bytes, {ref.get('mime')})")
    if data.get("stopped"):
        parts.append("*(stopped: the reply was cut short here)*")
    for call in data.get("tool_calls") or ():
        parts.append(f"**Tool call** `{call.get('name', '?')}`\n\n"
                     + _fence(_arguments(call.get("arguments", "")), "json"))
    usage = data.get("usage")
    if isinstance(usage, dict):
        parts.append(f"*Usage:* {usage.get('input_tokens', 0)} tokens in, {usage.get('output_tokens', 0)} "
                     f"out, ${float(usage.get('cost_usd') or 0):.6f}")
    return "\n\n".join(parts)


def _inline(text: str) -> str:
    """Text that cannot close the inline code span it goes in."""
    return text.replace("`", "'")


def session_markdown(session: ChatSession) -> str:
    """The conversation as a Markdown document: a header, then each message of the active
    branch in order (other branches are in the JSON export)."""
    header = [
        f"# {session.name or session.pk}",
        "",
        f"- Session: `{session.pk}`",
        f"- Created: {_stamp(session.created_at)}",
        f"- Last activity: {_stamp(session.last_activity)}",
        f"- Messages: {session.message_count}",
        f"- Model: `{_inline(model_of_session(session.model).id)}`",
    ]
    blocks = ["\n".join(header)]
    blocks.extend(_message_markdown(m) for m in branch_messages(session_id=session.pk))
    return "\n\n".join(blocks) + "\n"


def sessions_markdown(sessions) -> str:
    """Several sessions in one document, separated by rules (the admin's export action)."""
    return "\n---\n\n".join(session_markdown(session) for session in sessions)
