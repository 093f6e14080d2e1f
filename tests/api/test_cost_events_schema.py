"""GET /api/cost/, POST /api/channel-events/, the OpenAPI schema and the docs page."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client
from django.utils import timezone
from openapi_spec_validator import validate

from sessions_app import events
from sessions_app.services import default_owner
from sessions_app.models import UsageRecord
from tests.factories import make_session

pytestmark = pytest.mark.django_db


# --- cost ------------------------------------------------------------------------


def _usage(session, model, input_tokens, output_tokens, cost, days_ago=0):
    record = UsageRecord.objects.create(
        session=session, user=session.user if session else default_owner(), model=model,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=Decimal(cost),
    )
    if days_ago:
        UsageRecord.objects.filter(pk=record.pk).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )
    return record


def test_cost_adds_up_usage_records(api, settings):
    settings.CONSTRUCT_DAILY_BUDGET_USD = 5.0
    a, b = make_session(session_id="a"), make_session(session_id="b")
    _usage(a, "gpt", 100, 50, "0.001")
    _usage(a, "gpt", 200, 100, "0.002")
    _usage(b, "claude", 1000, 10, "0.05")
    _usage(None, "gpt", 1, 1, "0")
    _usage(a, "gpt", 7, 3, "1.0", days_ago=2)

    body = api.get("/api/cost/").json()

    assert body["input_tokens"] == 1308 and body["output_tokens"] == 164
    assert body["total_tokens"] == 1472
    assert body["request_count"] == 5
    assert body["cost_usd"] == pytest.approx(1.053)
    assert body["today"]["request_count"] == 4
    assert body["today"]["cost_usd"] == pytest.approx(0.053)
    assert body["today"]["total_tokens"] == 1462
    assert set(body["by_model"]) == {"gpt", "claude"}
    assert body["by_model"]["gpt"]["cost_usd"] == pytest.approx(1.003)
    assert body["by_model"]["gpt"]["request_count"] == 4
    assert body["by_model"]["claude"]["total_tokens"] == 1010
    assert set(body["by_session"]) == {"a", "b"}
    assert body["by_session"]["a"]["cost_usd"] == pytest.approx(1.003)
    assert body["by_session"]["b"]["request_count"] == 1
    assert body["daily_budget_usd"] == 5.0


def test_cost_with_no_usage_is_all_zero(api, settings):
    settings.CONSTRUCT_DAILY_BUDGET_USD = None

    body = api.get("/api/cost/").json()

    assert (body["total_tokens"], body["request_count"], body["cost_usd"]) == (0, 0, 0)
    assert body["by_model"] == {} and body["by_session"] == {}
    assert body["daily_budget_usd"] is None


# --- channel events --------------------------------------------------------------


def _listen():
    """A channel in the sockets' group, as a connected chat socket has."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.SOCKETS_GROUP, channel)
    return layer, channel


def _receive(layer, channel, timeout=5):
    import asyncio

    async def receive():
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(receive)()


def test_channel_event_reaches_the_sockets_group(api):
    layer, channel = _listen()
    try:
        event = {"type": "agent.completed", "agent": "coder", "nested": {"n": [1, 2]}}

        response = api.post("/api/channel-events/", event, format="json")

        assert response.status_code == 202
        assert response.json() == {"delivered": True}
        assert _receive(layer, channel) == {"type": "channel.event", "event": event}
    finally:
        async_to_sync(layer.group_discard)(events.SOCKETS_GROUP, channel)


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "{}", "null", '{"a": ', "not json"])
def test_channel_event_must_be_a_non_empty_json_object(api, body):
    response = api.post("/api/channel-events/", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]


def test_channel_event_without_a_body_is_a_400(api):
    assert api.post("/api/channel-events/").status_code == 400


def test_channel_event_over_one_mebibyte_is_a_json_413(api):
    body = json.dumps({"type": "big", "blob": "x" * (1024 * 1024)})

    response = api.post("/api/channel-events/", body, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["error"]


def test_channel_event_as_a_form_is_a_415(api):
    response = api.post("/api/channel-events/", "a=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert "error" in response.json()


# --- schema and docs ---------------------------------------------------------------

CONTRACT_OPERATIONS = {
    ("/api/sessions/", "get"),
    ("/api/sessions/{session_id}/", "get"),
    ("/api/sessions/{session_id}/", "patch"),
    ("/api/sessions/{session_id}/", "delete"),
    ("/api/sessions/{session_id}/messages/", "get"),
    ("/api/sessions/{session_id}/active/", "put"),
    ("/api/sessions/{session_id}/export/", "get"),
    ("/api/sessions/{session_id}/attachments/", "get"),
    ("/api/sessions/{session_id}/attachments/", "post"),
    ("/api/sessions/{session_id}/attachments/{attachment_id}/", "get"),
    ("/api/sessions/{session_id}/attachments/{attachment_id}/", "delete"),
    ("/api/models/", "get"),
    ("/api/cost/", "get"),
    ("/api/channel-events/", "post"),
    ("/api/sessions/running/", "get"),
    ("/api/sessions/{session_id}/state/", "get"),
    ("/api/audit/", "get"),
    ("/api/audit/verify/", "get"),
    # Beyond the contract's list: who is signed in, and signing out (the page's needs).
    ("/api/me/", "get"),
    ("/api/sign-out/", "post"),
    ("/api/approvals/", "get"),
    ("/api/approvals/{approval_id}/", "post"),
    # The operator events a page opened later shows.
    ("/api/channel-events/", "get"),
}


def _served_schema(**headers):
    response = Client().get("/api/schema/?format=json", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_schema_is_valid_openapi_3_and_needs_no_token():
    schema = _served_schema()

    validate(schema)  # raises on an invalid document
    assert schema["openapi"].startswith("3.")
    # A stale token in the browser must not lock anyone out of the docs.
    assert _served_schema(HTTP_AUTHORIZATION="Bearer zc_stale") == schema


def test_schema_yaml_by_default():
    response = Client().get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert response.content.startswith(b"openapi: 3.")


def test_schema_covers_the_contract_and_documents_errors():
    schema = _served_schema()
    operations = {
        (path, method): operation
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }

    assert set(operations) == CONTRACT_OPERATIONS
    error = {"$ref": "#/components/schemas/Error"}
    for (path, method), operation in operations.items():
        assert operation["security"] == [{"bearerAuth": []}], (path, method)
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == error
        if "{session_id}" in path:
            assert operation["responses"]["404"]["content"]["application/json"]["schema"] == error
        if method in ("patch", "post"):
            assert {"400", "413", "415"} <= set(operation["responses"]), (path, method)
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]


def test_schema_pattern_matches_the_socket_session_ids():
    from sessions_app.ids import SESSION_ID_RE

    schema = _served_schema()
    parameter = next(
        p for p in schema["paths"]["/api/sessions/{session_id}/"]["get"]["parameters"]
        if p["name"] == "session_id"
    )
    assert parameter["schema"]["pattern"] == SESSION_ID_RE.pattern


def test_docs_page_serves_swagger_ui_from_our_own_static_files():
    client = Client()

    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/schema/" in html
    assert "swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        src = html.split(asset)[0].rsplit('"', 1)[1] + asset
        assert src.startswith("/static/")
        asset_response = client.get(src)
        asset_response.close()
        assert asset_response.status_code == 200, src
