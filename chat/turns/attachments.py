"""Attachments in a turn: the references in the history become what the model sees.

(What a message keeps of the ids it names is sessions_app.attachments.question_data.)

The files are read here, off the event loop; what each one becomes is the
agent's business (chat/agent/attachments.py), which never touches Django.
"""

import asyncio
import logging
from pathlib import Path

from channels.db import database_sync_to_async

from chat.agent.attachments import AttachedFile, bytes_to_read, content_with_attachments
from sessions_app import attachments as stored

logger = logging.getLogger(__name__)


async def history_with_attachments(history: list[dict], session_id: str) -> list[dict]:
    """The history with each user message's attachment references read into content parts.

    A message's files come in front of its text, which already carries the
    page-context hint in front of the user's words. A file that is gone, or
    that is no longer an attachment of the session, is marked unavailable.
    """
    if not any("attachments" in message for message in history):
        return history
    wanted = [ref["id"] for message in history for ref in _refs(message)]
    paths = await database_sync_to_async(stored.attachment_files)(session_id=session_id, ids=wanted)
    built = []
    for message in history:
        if "attachments" not in message:
            built.append(message)
            continue
        refs = _refs(message)
        message = {key: value for key, value in message.items() if key != "attachments"}
        files = await asyncio.to_thread(_read_all, refs, paths)
        message["content"] = content_with_attachments(files, message.get("content") or "")
        built.append(message)
    return built


def _refs(message: dict) -> list[dict]:
    """The well-formed references of a message (the stored data is ours, but be sure)."""
    refs = message.get("attachments")
    return [
        ref for ref in (refs if isinstance(refs, list) else ())
        if isinstance(ref, dict) and isinstance(ref.get("id"), str)
        and isinstance(ref.get("name"), str) and isinstance(ref.get("mime"), str)
        and isinstance(ref.get("size"), int)
    ]


def _read_all(refs: list[dict], paths: dict[str, Path]) -> list[AttachedFile]:
    return [_read(ref, paths.get(ref["id"])) for ref in refs]


def _read(ref: dict, path: Path | None) -> AttachedFile:
    mime = ref["mime"]
    data = None
    if path is not None:
        limit = bytes_to_read(mime)
        try:
            with open(path, "rb") as handle:
                data = handle.read() if limit is None else handle.read(limit)
        except OSError as exc:
            logger.warning("attachment %s could not be read: %s", ref["id"], exc)
    return AttachedFile(name=ref["name"], mime=mime, size=ref["size"], data=data)
