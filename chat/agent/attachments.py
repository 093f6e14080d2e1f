"""What the model gets for a message's attachments: neutral content parts, in front of its text.

No Django: the turn reads the files (chat/turns/attachments.py) and hands each
one here as an `AttachedFile`. As upstream:

- a text file: `[Attached file: NAME (SIZE bytes, MIME)]`, its text, `[End of file: NAME]`,
  cut at 200,000 characters with `[…truncated at 200000 chars]`;
- an image (PNG, JPEG, GIF, WebP): an image part, which each provider writes
  in its own wire format;
- any other file: `[Attached binary file: NAME (SIZE bytes, MIME) — content not inlined]`;
- a file that cannot be read: `[Attached file unavailable: NAME (MIME)]`.

The parts come in the message's order, then the message's own text (which
carries the page-context hint in front, when there is one). Neutral parts
are `{"type": "text", "text"}` and `{"type": "image", "media_type", "data"}`
(base64); see providers/base.py.
"""

import base64
from dataclasses import dataclass

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
TEXT_CHAR_LIMIT = 200_000
# Enough bytes for one character more than the limit, however it is encoded
# (UTF-8 takes at most 4 bytes a character): a cut text is seen to be cut.
TEXT_READ_BYTES = 4 * (TEXT_CHAR_LIMIT + 1)
TRUNCATED = f"[…truncated at {TEXT_CHAR_LIMIT} chars]"


@dataclass(slots=True)
class AttachedFile:
    """One attachment as the turn read it: `data` None when the file could not be read."""

    name: str
    mime: str
    size: int
    data: bytes | None


def is_image(mime: str) -> bool:
    return mime in IMAGE_TYPES


def is_text(mime: str) -> bool:
    return mime.startswith("text/")


def bytes_to_read(mime: str) -> int | None:
    """How much of a file the model's part needs: all of an image (None), the start of a text,
    none of a binary file (whose part only says it exists)."""
    if is_image(mime):
        return None
    if is_text(mime):
        return TEXT_READ_BYTES
    return 0


def attachment_part(file: AttachedFile) -> dict:
    """The one part that stands for a file."""
    name, mime = file.name, file.mime
    if file.data is None:
        return _text(f"[Attached file unavailable: {name} ({mime})]")
    if is_image(mime):
        return {"type": "image", "media_type": mime, "data": base64.b64encode(file.data).decode("ascii")}
    if is_text(mime):
        text = file.data.decode("utf-8", "replace")
        lines = [f"[Attached file: {name} ({file.size} bytes, {mime})]", text[:TEXT_CHAR_LIMIT]]
        if len(text) > TEXT_CHAR_LIMIT:
            lines.append(TRUNCATED)
        lines.append(f"[End of file: {name}]")
        return _text("\n".join(lines))
    return _text(f"[Attached binary file: {name} ({file.size} bytes, {mime}) — content not inlined]")


def content_with_attachments(files: list[AttachedFile], text: str) -> str | list[dict]:
    """A user message's content: the files' parts, then its text.

    Plain text (the parts joined by blank lines) when no file is an image, so
    every OpenAI-compatible server reads it; a list of parts otherwise, with
    neighbouring text parts joined the same way.
    """
    parts: list[dict] = []
    for part in [attachment_part(file) for file in files] + [_text(text)]:
        if part["type"] == "text" and parts and parts[-1]["type"] == "text":
            parts[-1] = _text(parts[-1]["text"] + "\n\n" + part["text"])
        else:
            parts.append(part)
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _text(text: str) -> dict:
    return {"type": "text", "text": text}
