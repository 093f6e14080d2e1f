"""GET /api/approvals/ and POST /api/approvals/{id}/, scoped to the caller's sessions.

Every answer also passes through the schema check in conftest.py.
"""

import pytest
from rest_framework.test import APIClient

from sessions_app.models import AuditEvent, ChatSession, ToolApproval
from tests.api.conftest import SchemaCheckingClient
from tests.factories import make_approval, make_device, make_session, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def mine(device_and_token):
    device, _token = device_and_token
    return make_session(session_id="mine", user=device.user)


def _client_of(user) -> APIClient:
    _device, token = make_device(name="their phone", user=user)
    client = SchemaCheckingClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_list_pending_of_my_sessions(api, mine):
    waiting = make_approval(session=mine, name="shell", args={"command": "ls"})
    make_approval(session=mine, name="file_write", timeout_seconds=-1)  # expired: not answerable
    decided = make_approval(session=mine, name="file_read", state="approved", decision="approve")
    make_approval(session=make_session(user=make_user()))  # another user's

    body = api.get("/api/approvals/?state=pending").json()
    assert body["count"] == 1
    item = body["results"][0]
    assert {k: item[k] for k in ("id", "session_id", "name", "args", "state")} == {
        "id": waiting.pk, "session_id": "mine", "name": "shell", "args": {"command": "ls"},
        "state": "pending"}
    assert item["requested_at"] and item["expires_at"] and item["decided_at"] is None

    every = api.get("/api/approvals/").json()
    assert every["count"] == 3 and decided.pk in {r["id"] for r in every["results"]}
    assert api.get("/api/approvals/?session_id=other").json()["count"] == 0
    assert api.get("/api/approvals/?state=later").status_code == 400


def test_decide_through_rest(api, mine):
    approval = make_approval(session=mine, name="shell")
    response = api.post(f"/api/approvals/{approval.pk}/",
                        {"decision": "always", "args": {"command": "ls -l"}}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["state"], body["decision"], body["by"]) == ("approved", "always", "test device")
    assert body["decided_args"] == {"command": "ls -l"}
    assert ChatSession.objects.get(pk="mine").always_allowed == ["shell"]
    assert AuditEvent.objects.filter(kind="approval_decided").count() == 1

    again = api.post(f"/api/approvals/{approval.pk}/", {"decision": "deny"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "APPROVAL_INVALID" and again.json()["approval_id"] == approval.pk
    assert ToolApproval.objects.get(pk=approval.pk).decision == "always"


def test_bad_answers(api, mine):
    approval = make_approval(session=mine)
    for body in ({"decision": "maybe"}, {}, {"decision": "approve", "args": [1]},
                 {"decision": "timeout"}, {"decision": "approve", "args": {"s": "nul\x00"}}):
        response = api.post(f"/api/approvals/{approval.pk}/", body, format="json")
        assert response.status_code == 400 and "error" in response.json(), body
    for raw in ('{"decision": "approve", "args": {"s": "\\ud800"}}',
                '{"decision": "approve", "args": {"n": NaN}}'):
        response = api.post(f"/api/approvals/{approval.pk}/", data=raw,
                            content_type="application/json")
        assert response.status_code == 400 and "error" in response.json(), raw
    expired = make_approval(session=mine, timeout_seconds=-1)
    response = api.post(f"/api/approvals/{expired.pk}/", {"decision": "approve"}, format="json")
    assert response.status_code == 409 and "expired" in response.json()["error"]
    assert api.post("/api/approvals/ap_nothing/", {"decision": "approve"},
                    format="json").status_code == 404
    assert ToolApproval.objects.get(pk=approval.pk).state == "pending"


def test_another_users_approval_is_not_found(api, mine):
    approval = make_approval(session=mine)
    stranger = _client_of(make_user())
    response = stranger.post(f"/api/approvals/{approval.pk}/", {"decision": "approve"},
                             format="json")
    assert response.status_code == 404
    assert stranger.get("/api/approvals/").json()["count"] == 0
    assert ToolApproval.objects.get(pk=approval.pk).state == "pending"


def test_staff_sees_everyones_with_user_all(mine):
    make_approval(session=mine)
    staff = _client_of(make_user(is_staff=True))
    assert staff.get("/api/approvals/").json()["count"] == 0
    assert staff.get("/api/approvals/?user=all").json()["count"] == 1


def test_needs_a_token(anonymous_client):
    assert anonymous_client.get("/api/approvals/").status_code == 401
    assert anonymous_client.post("/api/approvals/ap_x/", {"decision": "deny"},
                                 format="json").status_code == 401
