"""The audit trail: an append-only, hash-chained record of security events.

Each entry's hash covers the previous entry's hash and its own content, so an
edited entry no longer matches its hash, a deleted one breaks the link of the
next, and the head row (the newest hash) exposes a deleted tail. This shows
tampering by someone with database access; it cannot prevent it.
"""

import asyncio
import hashlib
import json
import logging
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from construct_core.loops import per_loop
from construct_core.redaction import scrub, scrub_value
from sessions_app.models import AuditEvent, AuditHead

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
HEAD_ID = 1

# Detail keys that would put a secret into a record kept forever.
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {"token", "code", "pairing_code", "password", "secret", "api_key", "authorization"}
)


def _canonical(*, created_at: datetime, kind: str, client: str, detail: dict) -> str:
    # Sorted keys, no spaces and UTC microseconds: the same event always gives
    # the same text, whichever database stored it and read it back.
    stamp = created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(
        [stamp, kind, client, detail], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def audit_hash(*, prev_hash: str, created_at: datetime, kind: str, client: str, detail: dict) -> str:
    """sha256(prev_hash + canonical JSON of the entry), hex."""
    text = prev_hash + _canonical(created_at=created_at, kind=kind, client=client, detail=detail)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _head_for_update() -> AuditHead:
    # get_or_create survives two first appends racing to create the row; the
    # lock that follows is what serialises appends (SQLite: BEGIN IMMEDIATE).
    AuditHead.objects.get_or_create(pk=HEAD_ID, defaults={"last_hash": GENESIS_HASH})
    return AuditHead.objects.select_for_update().get(pk=HEAD_ID)


def _prepared(kind: str, client: str, detail: dict) -> tuple[str, str, dict]:
    """(kind, client, detail) as they are stored; refuses a secret's key or an unknown kind."""
    leaked = _FORBIDDEN_DETAIL_KEYS.intersection(key.lower() for key in detail)
    if leaked:
        raise ValueError(f"audit detail must not contain secrets: {sorted(leaked)}")
    if kind not in AuditEvent.Kind.values:
        raise ValueError(f"unknown audit event kind {kind!r}")
    # Round-trip through JSON so the hash covers exactly what the JSONField stores.
    detail = scrub_value(json.loads(json.dumps(detail)))
    return kind, scrub(client or "")[:64], detail


def audit_record(*, kind: str, client: str = "", **detail) -> AuditEvent:
    """Append one event to the trail and return it.

    `detail` must be JSON-safe and must never hold a token or a pairing code:
    a key that names one is refused outright rather than silently stored. A
    registered secret anywhere in `client` or `detail` is scrubbed before the
    entry is hashed, so the chain covers exactly what is stored.
    """
    return _append([_prepared(kind, client, detail)])[0]


def _append(entries: list[tuple[str, str, dict]]) -> list[AuditEvent]:
    """Append prepared entries, in order, under one lock of the head: one transaction."""
    with transaction.atomic():
        head = _head_for_update()
        prev_hash = head.last_hash
        events = []
        for kind, client, detail in entries:
            created_at = timezone.now()
            digest = audit_hash(
                prev_hash=prev_hash, created_at=created_at, kind=kind, client=client, detail=detail
            )
            events.append(AuditEvent(created_at=created_at, kind=kind, client=client, detail=detail,
                                     prev_hash=prev_hash, hash=digest))
            prev_hash = digest
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)
        AuditHead.objects.filter(pk=HEAD_ID).update(last_hash=prev_hash)
    for event in events:
        logger.debug("audit %s from %s (#%s)", event.kind, event.client, event.pk)
    return events


# Entries written together at most: one transaction, one INSERT.
BATCH_MAX = 500


class AuditBatch:
    """Audit entries from many coroutines of one event loop, written together.

    `await record(...)` returns once its entry is stored, like audit_record, but
    the entries that arrive while one batch is written go in the next: one
    transaction and one lock of the chain's head per batch instead of per entry
    (a burst of sockets connecting at once writes one `socket_connect` each).
    """

    def __init__(self):
        self._pending: list[tuple[tuple[str, str, dict], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def record(self, *, kind: str, client: str = "", **detail) -> None:
        entry = _prepared(kind, client, detail)  # a refused entry raises here, to its caller only
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((entry, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        await asyncio.shield(done)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            try:
                await database_sync_to_async(_append)([entry for entry, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved: a caller gone meanwhile leaves no warning
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


audit_batch = per_loop(AuditBatch)


def _chain_problems() -> tuple[list[tuple[int | None, str]], int]:
    """Every problem of the chain as (entry id or None for the head, description), and how
    many entries were checked."""
    problems: list[tuple[int | None, str]] = []
    # Holding the head lock keeps appends out while we read, so a new entry
    # written mid-check is not mistaken for a head mismatch.
    with transaction.atomic():
        head = AuditHead.objects.select_for_update().filter(pk=HEAD_ID).first()
        expected_prev = GENESIS_HASH
        count = 0
        for event in AuditEvent.objects.order_by("id").iterator(chunk_size=500):
            count += 1
            if event.prev_hash != expected_prev:
                problems.append((event.pk, (
                    f"entry #{event.pk}: does not link to the entry before it "
                    "(an entry was deleted or reordered)"
                )))
            recomputed = audit_hash(
                prev_hash=event.prev_hash,
                created_at=event.created_at,
                kind=event.kind,
                client=event.client,
                detail=event.detail,
            )
            if recomputed != event.hash:
                problems.append((event.pk, f"entry #{event.pk}: content does not match its hash (edited)"))
            expected_prev = event.hash
    if head is None:
        if count:
            problems.append((None, "audit head is missing"))
    elif head.last_hash != expected_prev:
        problems.append(
            (None, "audit head does not match the newest entry (the newest entries were deleted)")
        )
    return problems, count


def audit_verify() -> list[str]:
    """Check the whole chain; return a description of every problem found (empty when intact)."""
    return [problem for _, problem in _chain_problems()[0]]


def audit_check() -> dict:
    """Check the whole chain: {"ok", "checked"} and, when broken, "first_bad" = {"id", "problem"}
    for the first problem found (id null when it is the head, not an entry)."""
    problems, count = _chain_problems()
    result = {"ok": not problems, "checked": count}
    if problems:
        entry_id, problem = problems[0]
        result["first_bad"] = {"id": entry_id, "problem": problem}
    return result


def audit_count() -> int:
    """How many entries the trail holds."""
    return AuditEvent.objects.count()
