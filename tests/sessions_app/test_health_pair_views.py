"""`POST /pair` and `GET /health` over HTTP, as a script or the browser page sees them."""

import hashlib
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from sessions_app.models import PairedDevice, PairingThrottle
from sessions_app.pairing import device_authenticate, pairing_code_issue
from tests.factories import make_device

pytestmark = pytest.mark.django_db


def pair(client, code=None, remote="10.0.0.1", **extra):
    headers = {"REMOTE_ADDR": remote, **extra}
    if code is not None:
        headers["HTTP_X_PAIRING_CODE"] = code
    return client.post("/pair", **headers)


def fail_five(client, remote="10.0.0.1", **extra):
    for _ in range(5):
        assert pair(client, "000000", remote, **extra).status_code == 403


# --- /health -----------------------------------------------------------------


def test_health_before_any_pairing(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "require_pairing": True, "paired": False}


def test_health_counts_only_active_devices(client):
    device, _ = make_device()
    assert client.get("/health").json()["paired"] is True

    PairedDevice.objects.filter(pk=device.pk).update(revoked_at=timezone.now())
    assert client.get("/health").json()["paired"] is False


@override_settings(CONSTRUCT_REQUIRE_PAIRING=False)
def test_health_when_pairing_is_not_required(client):
    assert client.get("/health").json() == {"status": "ok", "require_pairing": False, "paired": False}


def test_health_refuses_post(client):
    response = client.post("/health")

    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed"}


# --- /pair -------------------------------------------------------------------


def test_pair_with_the_right_code(client):
    code = pairing_code_issue()

    response = pair(client, code)

    assert response.status_code == 200
    body = response.json()
    assert body["paired"] is True and body["message"]
    assert body["token"].startswith("zc_")
    assert response["Cache-Control"] == "no-store"
    device = PairedDevice.objects.get()
    assert device.token_hash == hashlib.sha256(body["token"].encode()).hexdigest()
    assert device_authenticate(token=body["token"]) == device
    assert client.get("/health").json()["paired"] is True


def test_code_works_once(client):
    code = pairing_code_issue()
    assert pair(client, code).status_code == 200

    response = pair(client, code)

    assert response.status_code == 403
    assert response.json() == {"error": "Invalid pairing code"}


def test_device_name_from_body_or_header(client):
    client.post("/pair", data={"name": "laptop"}, content_type="application/json",
                HTTP_X_PAIRING_CODE=pairing_code_issue())
    pair(client, pairing_code_issue(), HTTP_X_DEVICE_NAME="phone")

    assert sorted(PairedDevice.objects.values_list("name", flat=True)) == ["laptop", "phone"]


@pytest.mark.parametrize("code", ["000000", "", None, "12345", "abcdef"])
def test_wrong_or_missing_code_is_403(client, code):
    pairing_code_issue()

    response = pair(client, code)

    assert response.status_code == 403
    assert response.json() == {"error": "Invalid pairing code"}
    assert PairedDevice.objects.count() == 0


def test_pair_refuses_get(client):
    response = client.get("/pair")

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "error" in response.json()


# --- lockout -----------------------------------------------------------------


def test_five_bad_codes_lock_out_that_client_only(client):
    code = pairing_code_issue()
    fail_five(client, "10.0.0.1")

    locked = pair(client, "000000", "10.0.0.1")
    right_code_while_locked = pair(client, code, "10.0.0.1")
    other_client = pair(client, code, "10.0.0.2")

    assert locked.status_code == 429
    body = locked.json()
    assert body["error"] and 0 < body["retry_after"] <= 300
    assert locked["Retry-After"] == str(body["retry_after"])
    assert right_code_while_locked.status_code == 429
    assert other_client.status_code == 200


def test_lockout_expires(client):
    code = pairing_code_issue()
    fail_five(client)
    assert pair(client, code).status_code == 429

    PairingThrottle.objects.filter(client="10.0.0.1").update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )

    assert pair(client, code).status_code == 200


def test_forwarded_for_is_ignored_from_an_untrusted_peer(client):
    code = pairing_code_issue()
    # An attacker rotating X-Forwarded-For must not dodge the lockout.
    for n in range(5):
        assert pair(client, "000000", "10.0.0.9", HTTP_X_FORWARDED_FOR=f"1.1.1.{n}").status_code == 403

    response = pair(client, code, "10.0.0.9", HTTP_X_FORWARDED_FOR="2.2.2.2")

    assert response.status_code == 429
    assert PairingThrottle.objects.get().client == "10.0.0.9"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.9"])
def test_forwarded_for_is_believed_from_a_trusted_proxy(client):
    code = pairing_code_issue()
    fail_five(client, "10.0.0.9", HTTP_X_FORWARDED_FOR="1.1.1.1")

    assert pair(client, code, "10.0.0.9", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 429
    assert pair(client, code, "10.0.0.9", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 200
    assert PairedDevice.objects.get().client == "2.2.2.2"


# --- pairing not required ----------------------------------------------------


@override_settings(CONSTRUCT_REQUIRE_PAIRING=False)
def test_pair_when_pairing_is_not_required(client):
    response = pair(client)

    assert response.status_code == 200
    assert response.json() == {"paired": True, "token": None, "message": "Pairing is not required"}
    assert PairedDevice.objects.count() == 0
