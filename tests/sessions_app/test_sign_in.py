"""Signing in with a Django user's password (POST /login), who is signed in, signing out,
and pairing a device for a named user.
"""

import io
import json

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command

from sessions_app.models import AuditEvent, PairedDevice
from sessions_app.pairing import device_authenticate, device_pair, pairing_code_issue
from sessions_app.services import DEFAULT_OWNER, default_owner
from tests.chat.conftest import communicator, gateway, mock_llm  # noqa: F401  (fixtures)
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def login(client, username="alice", password="right-password", remote="10.0.0.1"):
    return client.post("/login", json.dumps({"username": username, "password": password}),
                       content_type="application/json", REMOTE_ADDR=remote)


@pytest.fixture
def alice():
    return make_user(username="alice", password="right-password")


def test_the_right_password_gives_a_token_of_that_user(client, alice):
    response = login(client)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["paired"] is True and body["username"] == "alice" and body["token"].startswith("zc_")
    device = device_authenticate(token=body["token"])
    assert device.user == alice
    assert AuditEvent.objects.filter(kind="login_success").count() == 1
    me = client.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {body['token']}").json()
    assert me == {"username": "alice", "is_staff": False, "require_pairing": True,
                  "device": {"id": device.pk, "name": "signed in"}}


@pytest.mark.django_db(transaction=True)
async def test_the_token_opens_the_socket(gateway):
    await database_sync_to_async(make_user)(username="alice", password="right-password")
    from django.test import AsyncClient

    response = await AsyncClient().post("/login", {"username": "alice", "password": "right-password"},
                                        content_type="application/json")
    comm = communicator(token=response.json()["token"], query="session_id=alice-1")
    connected, _ = await comm.connect(timeout=10)
    assert connected
    assert (await comm.receive_json_from(timeout=10))["type"] == "session_start"
    await comm.disconnect()


@pytest.mark.parametrize("username, password", [("alice", "wrong"), ("nobody", "right-password"),
                                                ("alice", "")])
def test_a_wrong_password_or_user_is_401(client, alice, username, password):
    response = login(client, username, password)
    assert response.status_code == 401
    assert response.json() == {"error": "Wrong username or password"}
    assert PairedDevice.objects.count() == 0


def test_an_inactive_user_cannot_sign_in(client, alice):
    alice.is_active = False
    alice.save()
    assert login(client).status_code == 401


@pytest.mark.parametrize("body", ['{"username": "alice"}', "[]", "not json", '{"username": 1, "password": 2}'])
def test_a_malformed_body_is_400(client, alice, body):
    response = client.post("/login", body, content_type="application/json")
    assert response.status_code == 400 and "username" in response.json()["error"]


def test_repeated_failures_lock_out_that_client_only(client, alice):
    for _ in range(5):
        assert login(client, password="wrong").status_code == 401
    locked = login(client)  # the right password, from the locked-out client
    assert locked.status_code == 429
    assert 0 < locked.json()["retry_after"] <= 300 and locked["Retry-After"]
    assert login(client, remote="10.0.0.2").status_code == 200
    # Failed codes and failed passwords count together: the same client is locked for codes too.
    assert client.post("/pair", HTTP_X_PAIRING_CODE=pairing_code_issue(),
                       REMOTE_ADDR="10.0.0.1").status_code == 429
    assert AuditEvent.objects.filter(kind="login_failure").count() == 5


def test_sign_out_revokes_the_token(client, alice):
    token = login(client).json()["token"]
    response = client.post("/api/sign-out/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and response.json() == {"signed_out": True}
    assert device_authenticate(token=token) is None
    assert client.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_pairing_with_no_user_named_gives_a_device_of_the_default_owner():
    token = device_pair(code=pairing_code_issue(), client="10.0.0.1")
    device = device_authenticate(token=token)
    assert device.user.username == DEFAULT_OWNER and device.user.is_staff
    assert device.user == default_owner()


def test_a_code_issued_for_a_user_pairs_a_device_of_that_user(alice):
    token = device_pair(code=pairing_code_issue(user_id=alice.pk), client="10.0.0.1")
    assert device_authenticate(token=token).user == alice


def test_the_pairing_code_command_takes_a_user(alice):
    out = io.StringIO()
    call_command("pairing_code", "--user", "alice", stdout=out)
    assert "for user alice" in out.getvalue()
    token = device_pair(code=out.getvalue().strip().splitlines()[-1], client="10.0.0.3")
    assert device_authenticate(token=token).user == alice
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("pairing_code", "--user", "nobody", stdout=io.StringIO())
