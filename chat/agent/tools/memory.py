"""`memory_store` and `memory_recall`: notes that outlive the session that stored them.

Where notes are kept is the caller's business: the tool context carries a
`MemoryStore` (the turn engine gives one backed by the database), so this
module imports neither Django nor Channels.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from chat.agent.tools.base import Tool, ToolContext, ToolFailed
from construct_core.redaction import scrub

MAX_NOTE_CHARS = 16_000
MAX_TAGS = 20
MAX_TAG_CHARS = 50
RECALL_LIMIT = 10


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    content: str
    tags: list[str]
    created_at: datetime


class MemoryStore(Protocol):
    async def store(self, *, session_id: str, content: str, tags: list[str]) -> Note:
        """Keep a note; it outlives its session."""

    async def search(self, *, query: str, limit: int) -> list[Note]:
        """Notes whose text or tags contain the query's words, best first."""


def _store(ctx: ToolContext) -> MemoryStore:
    if ctx.memory is None:
        raise ToolFailed("memory is not available here")
    return ctx.memory


def _tags(raw) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(tag, str) for tag in raw):
        raise ToolFailed("tags must be a list of strings")
    # Scrubbed before the cut, so a cut never leaves part of a key in a tag.
    tags = list(dict.fromkeys(scrub(tag.strip())[:MAX_TAG_CHARS] for tag in raw if tag.strip()))
    if len(tags) > MAX_TAGS:
        raise ToolFailed(f"at most {MAX_TAGS} tags")
    return tags


async def memory_store(args: dict, ctx: ToolContext) -> str:
    content = args.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ToolFailed("content must be a non-empty string")
    if len(content) > MAX_NOTE_CHARS:
        raise ToolFailed(f"content is {len(content)} characters; at most {MAX_NOTE_CHARS}")
    tags = _tags(args.get("tags"))
    note = await _store(ctx).store(session_id=ctx.session_id, content=content.strip(), tags=tags)
    shown = f" with tags {', '.join(tags)}" if tags else ""
    return f"Stored memory note {str(note.id)[:8]}{shown}."


async def memory_recall(args: dict, ctx: ToolContext) -> str:
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolFailed("query must be a non-empty string")
    notes = await _store(ctx).search(query=query, limit=RECALL_LIMIT)
    if not notes:
        return f"No memory notes match {query!r}."
    lines = [f"{len(notes)} memory note(s) match {query!r}:"]
    for note in notes:
        tags = f" [{', '.join(note.tags)}]" if note.tags else ""
        lines.append(f"- {note.created_at:%Y-%m-%d}{tags}: {note.content}")
    return "\n".join(lines)


def memory_tools() -> list[Tool]:
    return [
        Tool(
            "memory_store",
            "Keep a note for later conversations (facts, preferences, decisions).",
            {"type": "object",
             "properties": {"content": {"type": "string", "description": "the note"},
                            "tags": {"type": "array", "items": {"type": "string"},
                                     "description": "optional keywords"}},
             "required": ["content"]},
            memory_store,
        ),
        Tool(
            "memory_recall",
            "Find notes kept with memory_store whose text or tags contain the query's words.",
            {"type": "object",
             "properties": {"query": {"type": "string", "description": "words to look for"}},
             "required": ["query"]},
            memory_recall,
        ),
    ]
