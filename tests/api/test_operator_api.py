"""The upstream gateway's operator endpoints: running sessions, a session's state, the audit trail.

Every answer also passes through the schema check in conftest.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from sessions_app.audit import audit_record
from sessions_app.models import AuditEvent, ChatSession
from tests.api.conftest import SchemaCheckingClient
from tests.factories import make_device, make_session, make_user

pytestmark = pytest.mark.django_db


def _client_of(user) -> SchemaCheckingClient:
    _device, token = make_device(name="their phone", user=user)
    client = SchemaCheckingClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _running(user, session_id, *, turn_id, minutes_ago=1):
    """A session whose row says a turn runs, as services.turn_try_start leaves it."""
    started = timezone.now() - timedelta(minutes=minutes_ago)
    return make_session(
        session_id=session_id, user=user, state=ChatSession.State.RUNNING, turn_id=turn_id,
        turn_started_at=started, turn_owner="host:1:abc",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )


# --- GET /api/sessions/running/ ------------------------------------------------


def test_running_lists_only_the_callers_running_sessions(alice, bob):
    _running(alice, "a-long", turn_id="t-long", minutes_ago=5)
    _running(alice, "a-short", turn_id="t-short", minutes_ago=1)
    make_session(session_id="a-idle", user=alice)
    make_session(session_id="a-interrupted", user=alice, state=ChatSession.State.INTERRUPTED)
    _running(bob, "b-running", turn_id="t-bob")

    body = _client_of(alice).get("/api/sessions/running/").json()

    assert body["count"] == 2
    assert [item["id"] for item in body["results"]] == ["a-long", "a-short"]
    first = body["results"][0]
    assert first["state"] == "running" and first["turn_id"] == "t-long"
    assert first["turn_started_at"] is not None

    theirs = _client_of(bob).get("/api/sessions/running/").json()
    assert [item["id"] for item in theirs["results"]] == ["b-running"]


def test_running_is_empty_when_nothing_runs(alice):
    make_session(session_id="idle", user=alice)
    body = _client_of(alice).get("/api/sessions/running/").json()
    assert body["count"] == 0 and body["results"] == []


def test_staff_sees_everyones_running_with_user_all(alice, bob):
    _running(alice, "a-running", turn_id="t-a")
    _running(bob, "b-running", turn_id="t-b")
    staff = _client_of(make_user(is_staff=True))

    assert staff.get("/api/sessions/running/").json()["count"] == 0
    everyone = staff.get("/api/sessions/running/?user=all").json()
    assert {item["id"] for item in everyone["results"]} == {"a-running", "b-running"}
    # A non-staff caller's ?user=all is still their own.
    assert _client_of(alice).get("/api/sessions/running/?user=all").json()["count"] == 1


def test_a_session_named_running_is_still_reachable_by_its_other_paths(alice):
    make_session(session_id="running", user=alice, name="odd")
    client = _client_of(alice)
    assert client.get("/api/sessions/running/state/").json()["state"] == "idle"
    assert client.get("/api/sessions/running/messages/").status_code == 200
    # Only its GET is the list: it is renamed and deleted at its own path as any session is.
    plain = APIClient()
    plain.credentials(HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"])
    renamed = plain.patch("/api/sessions/running/", {"name": "renamed"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    assert plain.delete("/api/sessions/running/").status_code == 204
    assert not ChatSession.objects.filter(pk="running").exists()


# --- GET /api/sessions/{id}/state/ ----------------------------------------------


def test_state_of_a_running_session_has_its_turn(alice):
    session = _running(alice, "s1", turn_id="turn-42")

    body = _client_of(alice).get("/api/sessions/s1/state/").json()

    assert body["session_id"] == "s1" and body["state"] == "running"
    assert body["turn_id"] == "turn-42"
    started = timezone.datetime.fromisoformat(body["turn_started_at"])
    assert abs((started - session.turn_started_at).total_seconds()) < 1


@pytest.mark.parametrize("state", ["idle", "error", "interrupted"])
def test_state_of_a_session_at_rest_has_no_turn(alice, state):
    # A finished turn leaves its id on the row; the state says nothing runs.
    make_session(session_id="s1", user=alice, state=state, turn_id="old-turn")

    body = _client_of(alice).get("/api/sessions/s1/state/").json()

    assert body == {"session_id": "s1", "state": state}


def test_state_of_another_users_session_is_a_json_404_like_a_missing_one(alice, bob):
    _running(bob, "theirs", turn_id="t-b")
    client = _client_of(alice)

    other = client.get("/api/sessions/theirs/state/")
    missing = client.get("/api/sessions/nothing-here/state/")

    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()
    assert other.json()["error"] == "Session not found"


def test_staff_reads_anyones_state_with_user_all(bob):
    _running(bob, "theirs", turn_id="t-b")
    staff = _client_of(make_user(is_staff=True))
    assert staff.get("/api/sessions/theirs/state/").status_code == 404
    assert staff.get("/api/sessions/theirs/state/?user=all").json()["turn_id"] == "t-b"


@pytest.mark.parametrize("path", ["/api/sessions/running/", "/api/sessions/s1/state/",
                                  "/api/audit/", "/api/audit/verify/"])
def test_operator_endpoints_need_a_token(anonymous_client, path):
    response = anonymous_client.get(path)
    assert response.status_code == 401
    assert "POST /pair" in response.json()["error"]


# --- GET /api/audit/ and /api/audit/verify/ ---------------------------------------


def _record_three():
    return [
        audit_record(kind="pairing_failure", client="10.0.0.1", failures=1),
        audit_record(kind="pairing_success", client="10.0.0.1", device_id=7, name="phone"),
        audit_record(kind="socket_connect", client="10.0.0.2", session_id="abc"),
    ]


@pytest.mark.parametrize("path", ["/api/audit/", "/api/audit/verify/"])
def test_audit_is_refused_to_a_non_staff_token(alice, path):
    _record_three()
    response = _client_of(alice).get(path)
    assert response.status_code == 403
    assert "Staff only" in response.json()["error"]


def test_audit_list_newest_first_paginated(alice):
    first, second, third = _record_three()
    staff = _client_of(make_user(is_staff=True))

    body = staff.get("/api/audit/?page_size=2").json()

    assert body["count"] == 3
    assert [item["id"] for item in body["results"]] == [third.pk, second.pk]
    newest = body["results"][0]
    assert newest["kind"] == "socket_connect" and newest["client"] == "10.0.0.2"
    assert newest["detail"] == {"session_id": "abc"}
    assert newest["hash"] == third.hash and newest["prev_hash"] == second.hash
    page_two = staff.get("/api/audit/?page_size=2&page=2").json()
    assert [item["id"] for item in page_two["results"]] == [first.pk]


def test_audit_list_filters_by_kind():
    _record_three()
    staff = _client_of(make_user(is_staff=True))
    # Making the staff device records nothing; the filter sees only the one pairing failure.
    body = staff.get("/api/audit/?kind=pairing_failure").json()
    assert [item["kind"] for item in body["results"]] == ["pairing_failure"]
    assert staff.get("/api/audit/?kind=nonsense").status_code == 400


def test_audit_verify_of_an_intact_trail():
    _record_three()
    staff = _client_of(make_user(is_staff=True))
    assert staff.get("/api/audit/verify/").json() == {"ok": True, "checked": 3}


def test_audit_verify_of_an_empty_trail():
    staff = _client_of(make_user(is_staff=True))
    assert staff.get("/api/audit/verify/").json() == {"ok": True, "checked": 0}


def test_audit_verify_names_the_first_edited_entry():
    _, second, third = _record_three()
    AuditEvent.objects.filter(pk=third.pk).update(client="10.9.9.9")
    AuditEvent.objects.filter(pk=second.pk).update(detail={"device_id": 8, "name": "phone"})
    staff = _client_of(make_user(is_staff=True))

    body = staff.get("/api/audit/verify/").json()

    assert body["ok"] is False and body["checked"] == 3
    assert body["first_bad"] == {
        "id": second.pk, "problem": f"entry #{second.pk}: content does not match its hash (edited)",
    }


def test_audit_verify_sees_a_deleted_tail():
    _, _, third = _record_three()
    AuditEvent.objects.filter(pk=third.pk).delete()
    staff = _client_of(make_user(is_staff=True))

    body = staff.get("/api/audit/verify/").json()

    assert body["ok"] is False and body["checked"] == 2
    assert body["first_bad"]["id"] is None
    assert "head does not match" in body["first_bad"]["problem"]
