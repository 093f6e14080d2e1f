"""GET /api/channel-events/: the operator events a page opened later shows, kept by the server.

Every answer also passes through the schema check in conftest.py.
"""

import json

import pytest
from asgiref.sync import async_to_sync

from construct_core.redaction import register_secret
from sessions_app import events, services
from sessions_app.models import OperatorEvent
from tests.api.conftest import SchemaCheckingClient
from tests.factories import make_device, make_user

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-unit-OPERATOR-EVENT-Hx4Rt8Lm"


def _client_of(user) -> SchemaCheckingClient:
    _device, token = make_device(name="their laptop", user=user)
    client = SchemaCheckingClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _turn_event(kind, *, user, session_id, turn_id="t1", **fields):
    """A turn's event as the turn engine publishes it."""
    async def publish():
        await events.publish_operator_event(
            {"type": kind, "session_id": session_id, "turn_id": turn_id, **fields}, user_id=user.pk)
        await events.operator_events_kept()  # kept by a task of their own, in batches

    async_to_sync(publish)()


def _listed(client, query=""):
    response = client.get("/api/channel-events/" + query)
    assert response.status_code == 200
    return response.json()["events"]


@pytest.fixture
def operator():
    return make_user(username="ops", is_staff=True)


def test_a_user_gets_broadcast_events_and_their_own_turns_never_another_users(alice, bob, operator):
    _turn_event("agent_start", user=alice, session_id="alice-chat", model="m")
    _turn_event("agent_start", user=bob, session_id="bob-chat", model="m")
    assert _client_of(operator).post("/api/channel-events/", {"type": "deploy", "note": "v2"},
                                     format="json").status_code == 202
    _turn_event("agent_end", user=alice, session_id="alice-chat", duration_ms=5)
    _turn_event("error", user=bob, session_id="bob-chat", code="PROVIDER_ERROR", message="down")
    # A non-staff user's own channel event reaches their sockets only, so it is kept for them only.
    assert _client_of(bob).post("/api/channel-events/", {"type": "note", "from": "bob"},
                                format="json").status_code == 202

    seen_by_alice = _listed(_client_of(alice))
    seen_by_bob = _listed(_client_of(bob))

    assert [(e["event"]["type"], e["session_id"]) for e in seen_by_alice] == [
        ("agent_start", "alice-chat"), ("deploy", ""), ("agent_end", "alice-chat")]
    assert [(e["event"]["type"], e["session_id"]) for e in seen_by_bob] == [
        ("agent_start", "bob-chat"), ("deploy", ""), ("error", "bob-chat"), ("note", "")]
    assert "bob" not in json.dumps(seen_by_alice)
    # Asking for everyone's is a staff user's privilege; anyone else still gets their own.
    assert _listed(_client_of(alice), "?user=all") == seen_by_alice
    assert len(_listed(_client_of(operator), "?user=all")) == 6
    assert [e["event"]["type"] for e in _listed(_client_of(operator))] == ["deploy"]


def test_the_last_hundred_oldest_first_and_no_more_are_kept(alice):
    for n in range(130):
        services.operator_event_record(event={"type": "agent_end", "n": n, "session_id": "c"},
                                       user_id=alice.pk, session_id="c")
    for n in range(3):
        services.operator_event_record(event={"type": "deploy", "n": n}, user_id=None)

    listed = _listed(_client_of(alice))

    assert len(listed) == 100
    # The newest 100 of both, oldest first: 97 of alice's turns, then the 3 broadcast ones.
    assert [e["event"].get("n") for e in listed] == [*range(33, 130), 0, 1, 2]
    assert [e["id"] for e in listed] == sorted(e["id"] for e in listed)
    assert listed[-1]["event"]["type"] == "deploy"
    # Trimmed as they come: a user's table never grows past the last 100.
    assert OperatorEvent.objects.filter(user=alice).count() == services.OPERATOR_EVENTS_KEPT == 100
    assert OperatorEvent.objects.filter(user__isnull=True).count() == 3


@pytest.mark.parametrize("owners", [1, 2, 3, 12])
def test_batches_of_several_owners_keep_each_owners_last_hundred(owners):
    # A batch of one or two owners is trimmed one owner at a time, a larger one in one
    # statement for them all (services._TRIM_ONE_BY_ONE): the same events are kept.
    users = [make_user().pk for _ in range(owners - 1)] + [None]
    for round_ in range(13):
        services.operator_events_record(events=[
            ({"type": "agent_end", "n": round_ * 10 + k}, user_id, "s")
            for user_id in users for k in range(10)])
    for user_id in users:
        kept = OperatorEvent.objects.filter(user_id=user_id).order_by("id")
        assert [e.event["n"] for e in kept] == list(range(30, 130)), user_id
    assert OperatorEvent.objects.count() == 100 * owners


def test_no_registered_secret_is_kept_or_served(alice, operator):
    register_secret(KEY)
    body = {"type": "deploy", "note": f"key {KEY}", KEY: {"nested": [KEY]}}
    assert _client_of(operator).post("/api/channel-events/", body, format="json").status_code == 202
    _turn_event("error", user=alice, session_id="s", code="AUTH_ERROR", message=f"refused {KEY}")

    listed = _listed(_client_of(alice))

    assert [e["event"]["type"] for e in listed] == ["deploy", "error"]
    assert KEY not in json.dumps(listed)
    assert KEY not in json.dumps(list(OperatorEvent.objects.values()), default=str)


def test_an_oversized_event_is_kept_as_its_type(alice):
    services.operator_event_record(event={"type": "dump", "blob": "x" * 50_000}, user_id=alice.pk)

    assert _listed(_client_of(alice))[0]["event"] == {"type": "dump", "truncated": True}


def test_needs_a_token():
    response = SchemaCheckingClient().get("/api/channel-events/")

    assert response.status_code == 401
    assert "error" in response.json()
