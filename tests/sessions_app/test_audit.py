"""The hash-chained audit trail: it verifies when intact and names each kind of tampering."""

import asyncio
import io

import pytest
from django.core.management import call_command

from sessions_app.audit import GENESIS_HASH, audit_hash, audit_record, audit_verify
from sessions_app.models import AuditEvent, AuditHead
from tests.sessions_app.helpers import retry_sqlite_locked, run_in_threads

pytestmark = pytest.mark.django_db


def record_three():
    return [
        audit_record(kind="pairing_failure", client="10.0.0.1", failures=1),
        audit_record(kind="pairing_success", client="10.0.0.1", device_id=7, name="phone"),
        audit_record(kind="socket_connect", client="10.0.0.2", session_id="abc"),
    ]


def run_command():
    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_entries_are_chained_and_verify():
    first, second, third = record_three()

    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert AuditHead.objects.get().last_hash == third.hash
    assert audit_verify() == []


def test_hash_covers_the_stored_content():
    audit_record(kind="pairing_failure", client="10.0.0.1", failures=1, nested={"b": 2, "a": [1]})

    row = AuditEvent.objects.get()
    assert row.hash == audit_hash(
        prev_hash=GENESIS_HASH, created_at=row.created_at, kind=row.kind,
        client=row.client, detail=row.detail,
    )


def test_an_edited_entry_is_detected():
    _, second, _ = record_three()
    AuditEvent.objects.filter(pk=second.pk).update(detail={"device_id": 8, "name": "phone"})

    problems = audit_verify()

    assert problems == [f"entry #{second.pk}: content does not match its hash (edited)"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link():
    _, second, third = record_three()
    forged = audit_hash(prev_hash=second.prev_hash, created_at=second.created_at,
                        kind=second.kind, client="10.9.9.9", detail=second.detail)
    AuditEvent.objects.filter(pk=second.pk).update(client="10.9.9.9", hash=forged)

    problems = audit_verify()

    assert len(problems) == 1 and problems[0].startswith(f"entry #{third.pk}: does not link")


def test_a_deleted_entry_is_detected():
    _, second, third = record_three()
    AuditEvent.objects.filter(pk=second.pk).delete()

    problems = audit_verify()

    assert len(problems) == 1 and problems[0].startswith(f"entry #{third.pk}: does not link")


def test_a_deleted_newest_entry_is_detected_by_the_head():
    _, _, third = record_three()
    AuditEvent.objects.filter(pk=third.pk).delete()

    problems = audit_verify()

    assert problems == [
        "audit head does not match the newest entry (the newest entries were deleted)"
    ]


def test_detail_naming_a_secret_is_refused():
    with pytest.raises(ValueError):
        audit_record(kind="pairing_success", client="x", token="zc_abc")
    with pytest.raises(ValueError):
        audit_record(kind="pairing_failure", client="x", code="123456")
    assert AuditEvent.objects.count() == 0


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        audit_record(kind="made_up")


def test_command_reports_an_intact_trail():
    record_three()

    assert run_command() == (0, "audit trail OK (3 entries)\n")


def test_command_on_an_empty_trail():
    assert run_command() == (0, "audit trail OK (0 entries)\n")


def test_command_fails_on_tampering():
    _, second, _ = record_three()
    AuditEvent.objects.filter(pk=second.pk).update(kind="socket_refused")

    status, output = run_command()

    assert status == 1
    assert output == f"entry #{second.pk}: content does not match its hash (edited)\n"


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_chain():
    def append_five(n):
        for i in range(5):
            retry_sqlite_locked(
                lambda: audit_record(kind="socket_connect", client=f"10.0.2.{n}", i=i)
            )

    results = run_in_threads(append_five, 4)

    assert all(kind == "ok" for kind, _ in results), results
    assert AuditEvent.objects.count() == 20
    assert audit_verify() == []
    # A fork (two entries after the same one) would show as a repeated prev_hash.
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prevs)) == 20


# --- entries from many coroutines at once (a burst of sockets) --------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_entries_is_written_in_batches_and_keeps_one_chain():
    from unittest import mock

    from asgiref.sync import sync_to_async

    from sessions_app import audit

    writes = []
    append = audit._append

    def counting(entries):
        writes.append(len(entries))
        return append(entries)

    with mock.patch.object(audit, "_append", counting):
        await asyncio.gather(*(audit.audit_batch().record(kind="socket_connect", client="10.0.0.9",
                                                          session_id=f"s{n}") for n in range(60)))
        # An entry naming a secret is refused to its own caller; the others are written.
        results = await asyncio.gather(
            audit.audit_batch().record(kind="socket_connect", token="x"),
            audit.audit_batch().record(kind="socket_refused", client="10.0.0.9", reason="r"),
            return_exceptions=True,
        )

    assert isinstance(results[0], ValueError) and results[1] is None
    assert sum(writes) == 61 and len(writes) < 61  # together, not one transaction each
    rows = await sync_to_async(lambda: list(AuditEvent.objects.order_by("id")
                                            .values_list("detail", flat=True)))()
    assert [row.get("session_id") for row in rows[:60]] == [f"s{n}" for n in range(60)]
    assert await sync_to_async(audit_verify)() == []
