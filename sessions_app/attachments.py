"""Attachments: files uploaded into a session, kept on disk, carried by its messages.

Writes and reads of `Attachment` rows and of their files. A file lives at
CONSTRUCT_MEDIA_ROOT/<session folder>/<random id>: the user's file name is
sanitised and kept for display only, never used as a path. Its MIME type is
found from its content, never from its name.

A message keeps references to its attachments in its `data` (id, name, mime,
size: see `attachment_document`), so history, resume, export and the page show
them, and the turn rebuilds what the model sees from them (chat/turns/attachments.py).
Deleting a session deletes its folder; deleting an attachment deletes its file
(both once the deletion is committed; see `connect_signals`).
"""

import codecs
import hashlib
import logging
import secrets
import shutil
import unicodedata
from pathlib import Path

import filetype
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.http import FileResponse

from construct_core.redaction import scrub
from sessions_app import services
from sessions_app.models import Attachment, ChatSession

logger = logging.getLogger(__name__)

# The images a model is shown as images; any other image type is a binary file to it.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
TEXT_TYPE = "text/plain"
BINARY_TYPE = "application/octet-stream"
NAME_MAX_CHARS = Attachment._meta.get_field("name").max_length
DEFAULT_NAME = "attachment"

# Token estimates for the history budget (sessions_app.selectors.history_for_provider):
# an image costs a fixed amount whatever its size (providers scale images down);
# a text file what its text does, up to the cut the model gets.
IMAGE_TOKENS = 1600
TEXT_CHAR_LIMIT = 200_000  # the cut chat/agent/attachments.py makes (sessions_app cannot import it)
CHARS_PER_TOKEN = 4
MARKER_TOKENS = 30

_CHUNK = 64 * 1024


# --- names and types -----------------------------------------------------------


def name_clean(raw) -> str:
    """A file name fit to show and to put in a Content-Disposition header, never a path.

    The last path component only; no control, format (bidirectional overrides)
    or unassigned characters; runs of white space made one space; no secret;
    at most NAME_MAX_CHARS characters, keeping a short extension.
    """
    name = str(raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(" " if ch.isspace() else ch for ch in name
                   if ch.isspace() or unicodedata.category(ch)[0] != "C")
    name = scrub(" ".join(name.split()))
    if name in ("", ".", ".."):
        return DEFAULT_NAME
    if len(name) > NAME_MAX_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = stem[: NAME_MAX_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:NAME_MAX_CHARS]
    return name


def mime_detect(path: Path) -> str:
    """The MIME type of a file from its content: its signature (the `filetype` library), else
    text/plain for valid UTF-8 without NUL, else application/octet-stream."""
    kind = filetype.guess(str(path))
    if kind is not None:
        return kind.mime
    return TEXT_TYPE if _is_text(path) else BINARY_TYPE


def _is_text(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                if b"\x00" in chunk:
                    return False
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# --- where files live ------------------------------------------------------------


def media_root() -> Path:
    return Path(settings.CONSTRUCT_MEDIA_ROOT)


def session_folder_name(session_id: str) -> str:
    """A session's folder: a hash of its id, so ids that differ only in case (or that a file
    system would treat alike) never share a folder."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:40]


def session_folder(session_id: str) -> Path:
    return media_root() / session_folder_name(session_id)


def attachment_path(attachment: Attachment) -> Path:
    return media_root() / attachment.path


# --- writes ---------------------------------------------------------------------


def attachment_store(*, session_id: str, user_id: int, source: Path, name: str) -> Attachment:
    """Keep an uploaded file (`source`, moved away) as an attachment of the user's session.

    Creates the session if it does not exist yet. Raises
    services.SessionOfAnotherUser when the id is another user's session.
    """
    services.session_open(session_id=session_id, user_id=user_id)
    attachment_id = secrets.token_hex(16)
    folder = session_folder(session_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / attachment_id
    mime = mime_detect(source)
    size = source.stat().st_size
    shutil.move(str(source), str(target))
    try:
        return Attachment.objects.create(
            id=attachment_id, session_id=session_id, name=name_clean(name), mime=mime, size=size,
            path=f"{folder.name}/{attachment_id}",
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def attachment_delete(*, attachment: Attachment) -> None:
    """Delete an attachment; its file goes once the deletion is committed."""
    attachment.delete()


# --- reads ----------------------------------------------------------------------


def attachment_list(*, session_id: str) -> list[Attachment]:
    return list(Attachment.objects.filter(session_id=session_id).order_by("created_at", "id"))


def attachment_get(*, session_id: str, attachment_id: str) -> Attachment | None:
    return Attachment.objects.filter(session_id=session_id, pk=attachment_id).first()


def attachment_document(attachment: Attachment) -> dict:
    """What a message keeps of an attachment, and what the API answers about one."""
    return {"id": attachment.id, "name": attachment.name, "mime": attachment.mime,
            "size": attachment.size}


def attachment_download(attachment: Attachment) -> FileResponse | None:
    """The file as a download the gateway's origin never renders (None when the file is gone):
    always `Content-Disposition: attachment`, `application/octet-stream`, `nosniff`, and a
    sandbox policy should anything open it in place after all."""
    try:
        handle = open(attachment_path(attachment), "rb")
    except OSError:
        return None
    response = FileResponse(handle, as_attachment=True, filename=attachment.name,
                            content_type=BINARY_TYPE)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


def question_data(*, session_id: str, page_context: str | None, client_id: str | None,
                  attachment_ids=()) -> dict:
    """What a user message keeps beside its text: the page context and client id it came
    with, and the references of the attachments it names (attachment_refs)."""
    data = {key: value for key, value in (("page_context", page_context), ("client_id", client_id))
            if value}
    refs = attachment_refs(session_id=session_id, ids=list(attachment_ids)) if attachment_ids else []
    if refs:
        data["attachments"] = refs
    return data


def attachment_refs(*, session_id: str, ids: list[str]) -> list[dict]:
    """The references a message keeps for the attachment ids a client sent, in its order.

    As upstream, nothing here refuses the message: an id that is not one of
    this session's attachments, or whose file is gone, is skipped with a
    warning in the log, and so is anything past the per-message count or size.
    """
    wanted = list(dict.fromkeys(ids))
    most = settings.CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE
    if len(wanted) > most:
        logger.warning("session %s: %d attachments on one message, the %d past %d skipped",
                       session_id, len(wanted), len(wanted) - most, most)
        wanted = wanted[:most]
    rows = {row.id: row for row in Attachment.objects.filter(session_id=session_id, pk__in=wanted)}
    refs: list[dict] = []
    total = 0
    for attachment_id in wanted:
        row = rows.get(attachment_id)
        if row is None:
            logger.warning("session %s: attachment %r skipped: not an attachment of this session",
                           session_id, attachment_id[:64])
            continue
        if not attachment_path(row).is_file():
            logger.warning("session %s: attachment %s skipped: its file is gone", session_id, row.id)
            continue
        if total + row.size > settings.CONSTRUCT_MAX_MESSAGE_ATTACHMENT_BYTES:
            logger.warning("session %s: attachment %s skipped: the message's attachments would pass "
                           "%d bytes", session_id, row.id, settings.CONSTRUCT_MAX_MESSAGE_ATTACHMENT_BYTES)
            continue
        total += row.size
        refs.append(attachment_document(row))
    return refs


def attachment_files(*, session_id: str, ids: list[str]) -> dict[str, Path]:
    """The files of those of `ids` that are still attachments of the session, by id."""
    rows = Attachment.objects.filter(session_id=session_id, pk__in=list(ids))
    return {row.id: attachment_path(row) for row in rows}


def attachments_tokens(refs) -> int:
    """The history budget's estimate of what a message's attachments cost the model."""
    tokens = 0
    for ref in refs if isinstance(refs, list) else ():
        if not isinstance(ref, dict):
            continue
        mime = str(ref.get("mime") or "")
        if mime in IMAGE_TYPES:
            tokens += IMAGE_TOKENS
        elif mime.startswith("text/"):
            size = ref.get("size") if isinstance(ref.get("size"), int) else TEXT_CHAR_LIMIT
            tokens += min(max(size, 0), TEXT_CHAR_LIMIT) // CHARS_PER_TOKEN + MARKER_TOKENS
        else:
            tokens += MARKER_TOKENS
    return tokens


# --- files follow their rows ------------------------------------------------------


def _remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove an attachment's file %s: %s", path, exc)


def _remove_folder(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove a session's attachment folder %s: %s", folder, exc)


def _attachment_deleted(sender, instance: Attachment, **kwargs) -> None:
    path = attachment_path(instance)
    transaction.on_commit(lambda: _remove_file(path), using=kwargs.get("using"))


def _session_deleted(sender, instance: ChatSession, **kwargs) -> None:
    folder = session_folder(instance.pk)
    transaction.on_commit(lambda: _remove_folder(folder), using=kwargs.get("using"))


def connect_signals() -> None:
    """Files follow their rows however the rows go: the REST API, the admin, a user deleted with
    everything they own. Each file goes after the commit, so a rolled-back deletion keeps it."""
    post_delete.connect(_attachment_deleted, sender=Attachment,
                        dispatch_uid="sessions_app.attachment_file")
    post_delete.connect(_session_deleted, sender=ChatSession,
                        dispatch_uid="sessions_app.session_attachment_folder")
