"""Pairing services: codes, tokens, the per-client lockout, revocation."""

import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from sessions_app.models import AuditEvent, PairedDevice, PairingCode, PairingThrottle
from sessions_app.pairing import (
    LOCKOUT,
    MAX_FAILURES,
    InvalidPairingCode,
    PairingLocked,
    device_authenticate,
    device_pair,
    device_revoke,
    pairing_code_issue,
)
from tests.factories import make_device, make_pairing_code
from tests.sessions_app.helpers import run_in_threads

pytestmark = pytest.mark.django_db


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def fail_times(n, client="10.0.0.1"):
    for _ in range(n):
        with pytest.raises(InvalidPairingCode):
            device_pair(code="000000", client=client)


# --- codes -------------------------------------------------------------------


def test_issued_code_is_six_digits_and_stored_only_as_its_hash():
    code = pairing_code_issue()

    assert len(code) == 6 and code.isdigit()
    row = PairingCode.objects.get()
    assert row.code_hash == sha256(code)
    assert code not in row.code_hash
    assert row.used_at is None
    assert timedelta(minutes=59) < row.expires_at - timezone.now() <= timedelta(hours=1)


def test_issued_codes_differ():
    codes = {pairing_code_issue() for _ in range(20)}

    assert len(codes) > 15


def test_several_codes_are_valid_at_once():
    first = pairing_code_issue()
    second = pairing_code_issue()

    assert device_pair(code=second, client="a")
    assert device_pair(code=first, client="b")


def test_expired_code_is_refused():
    make_pairing_code(code="654321", ttl_seconds=-1)

    with pytest.raises(InvalidPairingCode):
        device_pair(code="654321", client="a")


# --- pairing and tokens ------------------------------------------------------


def test_pair_returns_a_token_and_stores_only_its_hash():
    code = pairing_code_issue()

    token = device_pair(code=code, client="10.0.0.1", name="laptop")

    assert token.startswith("zc_") and len(token) > 40
    device = PairedDevice.objects.get()
    assert device.token_hash == sha256(token)
    assert device.token_hint == token[:6]
    assert device.name == "laptop" and device.client == "10.0.0.1"
    stored = json.dumps(list(PairedDevice.objects.values()), default=str)
    assert token not in stored and token[6:] not in stored


def test_token_authenticates_its_device():
    token = device_pair(code=pairing_code_issue(), client="a")

    device = device_authenticate(token=token)

    assert device == PairedDevice.objects.get()
    assert device_authenticate(token=token + "x") is None
    assert device_authenticate(token="") is None
    assert device_authenticate(token=None) is None


def test_code_is_one_time():
    code = pairing_code_issue()
    device_pair(code=code, client="a")

    with pytest.raises(InvalidPairingCode):
        device_pair(code=code, client="a")
    assert PairedDevice.objects.count() == 1
    assert PairingCode.objects.get().used_at is not None


def test_revoked_token_is_refused():
    device, token = make_device()
    assert device_authenticate(token=token) == device

    assert device_revoke(device_id=device.pk) is True
    assert device_revoke(device_id=device.pk) is False

    assert device_authenticate(token=token) is None
    assert AuditEvent.objects.filter(kind="device_revoked", detail__device_id=device.pk).count() == 1


def test_last_seen_is_written_at_most_once_a_minute():
    device, token = make_device()

    device_authenticate(token=token)
    first = PairedDevice.objects.get().last_seen
    device_authenticate(token=token)
    assert PairedDevice.objects.get().last_seen == first

    PairedDevice.objects.filter(pk=device.pk).update(last_seen=first - timedelta(minutes=2))
    device_authenticate(token=token)
    assert PairedDevice.objects.get().last_seen > first - timedelta(seconds=1)


# --- lockout -----------------------------------------------------------------


def test_five_failures_lock_that_client_out_even_for_the_right_code():
    code = pairing_code_issue()
    fail_times(MAX_FAILURES, client="10.0.0.1")

    with pytest.raises(PairingLocked) as locked:
        device_pair(code=code, client="10.0.0.1")

    assert 0 < locked.value.retry_after <= LOCKOUT.total_seconds()
    assert PairedDevice.objects.count() == 0
    # The code was not spent by the refused attempt.
    assert PairingCode.objects.get().used_at is None


def test_lockout_is_per_client():
    code = pairing_code_issue()
    fail_times(MAX_FAILURES, client="10.0.0.1")

    assert device_pair(code=code, client="10.0.0.2")


def test_four_failures_do_not_lock():
    code = pairing_code_issue()
    fail_times(MAX_FAILURES - 1)

    assert device_pair(code=code, client="10.0.0.1")


def test_lockout_expires():
    code = pairing_code_issue()
    fail_times(MAX_FAILURES)
    PairingThrottle.objects.filter(client="10.0.0.1").update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )

    assert device_pair(code=code, client="10.0.0.1")
    assert not PairingThrottle.objects.filter(client="10.0.0.1").exists()


def test_success_resets_the_failure_count():
    fail_times(MAX_FAILURES - 1)
    device_pair(code=pairing_code_issue(), client="10.0.0.1")
    fail_times(MAX_FAILURES - 1)

    assert device_pair(code=pairing_code_issue(), client="10.0.0.1")


def test_failures_outside_the_window_are_forgotten():
    fail_times(MAX_FAILURES - 1)
    PairingThrottle.objects.update(window_started_at=timezone.now() - timedelta(hours=1))
    fail_times(1)

    assert PairingThrottle.objects.get().failures == 1
    assert device_pair(code=pairing_code_issue(), client="10.0.0.1")


def test_pairing_is_audited_without_secrets():
    code = pairing_code_issue()
    fail_times(MAX_FAILURES, client="10.0.0.1")
    token = device_pair(code=code, client="10.0.0.2")

    kinds = list(AuditEvent.objects.values_list("kind", "client"))
    assert kinds.count(("pairing_failure", "10.0.0.1")) == MAX_FAILURES
    assert kinds.count(("pairing_lockout", "10.0.0.1")) == 1
    assert kinds[-1] == ("pairing_success", "10.0.0.2")
    # Hashes are hex and may contain any six digits by chance: look at content only.
    content = json.dumps(list(AuditEvent.objects.values_list("client", "detail")))
    assert code not in content and token not in content and "000000" not in content
    assert token[:12] not in content


# --- the command -------------------------------------------------------------


def test_pairing_code_command_prints_a_code_that_pairs():
    out = io.StringIO()

    call_command("pairing_code", stdout=out)

    lines = out.getvalue().rstrip("\n").split("\n")
    code = lines[-1]
    assert len(code) == 6 and code.isdigit()
    assert device_pair(code=code, client="a")


# --- concurrency -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_pairs_with_one_code_have_one_winner():
    code = pairing_code_issue()
    contenders = 6

    results = run_in_threads(lambda n: device_pair(code=code, client=f"10.0.1.{n}"), contenders)

    winners = [value for kind, value in results if kind == "ok"]
    losers = [value for kind, value in results if kind == "raised"]
    assert len(winners) == 1, results
    assert all(isinstance(exc, InvalidPairingCode) for exc in losers), results
    assert PairedDevice.objects.get().token_hash == sha256(winners[0])
