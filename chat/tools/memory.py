"""`memory_store` and `memory_recall`: notes kept in the database, found by text search.

Notes outlive the session that stored them: any session may recall them.
"""

import re

from channels.db import database_sync_to_async

from chat.tools.base import Tool, ToolContext, ToolFailed
from construct_core.redaction import scrub

MAX_NOTE_CHARS = 16_000
MAX_TAGS = 20
MAX_TAG_CHARS = 50
RECALL_LIMIT = 10
_CANDIDATES = 200
_WORD = re.compile(r"\w+", re.UNICODE)


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


def note_search(*, query: str, limit: int = RECALL_LIMIT) -> list:
    """Notes whose text or tags contain the query's words, most words matched first, then newest."""
    from django.db.models import Q

    from sessions_app.models import MemoryNote

    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:20]
    if not words:
        return []
    match = Q()
    for word in words:
        match |= Q(content__icontains=word) | Q(tags__icontains=word)
    candidates = list(MemoryNote.objects.filter(match).order_by("-created_at")[:_CANDIDATES])

    def score(note) -> int:
        text = (note.content + " " + " ".join(note.tags)).lower()
        return sum(word in text for word in words)

    # sorted() is stable: among equal scores the newest stays first.
    return sorted(candidates, key=score, reverse=True)[:limit]


async def memory_store(args: dict, ctx: ToolContext) -> str:
    from sessions_app.services import note_store

    content = args.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ToolFailed("content must be a non-empty string")
    if len(content) > MAX_NOTE_CHARS:
        raise ToolFailed(f"content is {len(content)} characters; at most {MAX_NOTE_CHARS}")
    tags = _tags(args.get("tags"))
    note = await database_sync_to_async(note_store)(
        session_id=ctx.session_id, content=content.strip(), tags=tags
    )
    shown = f" with tags {', '.join(tags)}" if tags else ""
    return f"Stored memory note {str(note.id)[:8]}{shown}."


async def memory_recall(args: dict, ctx: ToolContext) -> str:
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolFailed("query must be a non-empty string")
    notes = await database_sync_to_async(note_search)(query=query)
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
