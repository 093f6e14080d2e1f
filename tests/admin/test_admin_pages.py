"""Django admin, driven with the test Client as a logged-in staff superuser."""

import asyncio
import re
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client
from django.utils import timezone

from sessions_app import events
from sessions_app.models import AuditEvent, ChatSession, MemoryNote, PairedDevice, UsageRecord
from sessions_app.pairing import device_pair
from tests.factories import make_device, make_message, make_pairing_code, make_session

pytestmark = pytest.mark.django_db


def _page(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, url
    return response.content.decode()


def _action(client, url, action, pks):
    return client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})


def _conversation(session_id="conv", name="Weekend trip"):
    session = make_session(session_id=session_id, name=name)
    # Inserted out of order: the page must follow seq.
    make_message(session=session, seq=3, role="tool", content="THIRD tool output",
                 data={"tool_call_id": "c1", "name": "shell"})
    make_message(session=session, seq=1, role="user", content="FIRST question")
    make_message(session=session, seq=2, role="assistant", content="SECOND answer",
                 data={"tool_calls": [{"id": "c1", "name": "shell", "arguments": '{"command": "ls"}'}]})
    make_message(session=session, seq=4, role="assistant", content="FOURTH summary")
    return session


# --- sessions ------------------------------------------------------------------------


def test_admin_needs_a_staff_login():
    response = Client().get("/admin/sessions_app/chatsession/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_session_changelist_columns(admin_client):
    session = _conversation()
    ChatSession.objects.filter(pk=session.pk).update(state=ChatSession.State.ERROR)
    for cost in ("0.5", "0.25"):
        UsageRecord.objects.create(session=session, model="m", cost_usd=Decimal(cost))
    make_session(session_id="unnamed-id", message_count=1)

    html = _page(admin_client, "/admin/sessions_app/chatsession/")

    assert "Weekend trip" in html and "unnamed-id" in html
    row = next(r for r in html.split("<tr") if "Weekend trip" in r)
    assert "error" in row  # state
    assert ">4<" in row  # message count
    assert "0.7500" in row  # cost column: summed usage
    for header in ("State", "Message count", "Last activity", "Cost (USD)"):
        assert header in html


def test_the_session_list_leaves_out_sessions_without_messages_whose_pages_still_open(admin_client):
    _conversation(session_id="talked", name="A real chat")
    make_session(session_id="never-sent", name="Upload never sent")  # no message
    make_session(session_id="starting", name="First turn starting", state=ChatSession.State.RUNNING)

    listed = _page(admin_client, "/admin/sessions_app/chatsession/")
    searched = _page(admin_client, "/admin/sessions_app/chatsession/", q="never-sent")

    assert "A real chat" in listed and "First turn starting" in listed
    assert "Upload never sent" not in listed and "never-sent" not in listed
    assert "2 sessions" in listed  # the count leaves it out too
    assert "Upload never sent" not in searched and "0 sessions" in searched
    assert "Upload never sent" in _page(admin_client, "/admin/sessions_app/chatsession/never-sent/change/")


def test_session_change_page_shows_the_conversation_in_order(admin_client):
    _conversation()

    html = _page(admin_client, "/admin/sessions_app/chatsession/conv/change/")

    positions = [html.index(text) for text in
                 ("FIRST question", "SECOND answer", "THIRD tool output", "FOURTH summary")]
    assert positions == sorted(positions)
    assert "call shell" in html and "result of" in html
    # Read-only: no message fields to edit, and no way to add one.
    assert 'name="messages-0-content"' not in html and "<textarea" not in html
    assert 'name="messages-MAX_NUM_FORMS" value="0"' in html


def test_message_content_is_escaped(admin_client):
    session = make_session(session_id="xss")
    make_message(session=session, content='<script>alert(1)</script><img src=x onerror="alert(2)">')

    html = _page(admin_client, "/admin/sessions_app/chatsession/xss/change/")

    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_search_by_message_content(admin_client):
    _conversation(session_id="has-it", name="alpha")
    other = make_session(session_id="lacks-it", name="beta")
    make_message(session=other, content="nothing relevant")

    html = _page(admin_client, "/admin/sessions_app/chatsession/", q="tool output")

    assert "has-it" in html and "lacks-it" not in html
    assert "1 result" in html


def test_filter_by_state(admin_client):
    make_session(session_id="idle-one")
    make_session(session_id="running-one", state=ChatSession.State.RUNNING)

    html = _page(admin_client, "/admin/sessions_app/chatsession/", state__exact="running")

    assert "running-one" in html and "idle-one" not in html


def test_rename_from_the_change_page_keeps_the_turn_state(admin_client):
    session = make_session(session_id="s", name="old")
    ChatSession.objects.filter(pk="s").update(state=ChatSession.State.RUNNING, turn_id="t1")

    response = admin_client.post("/admin/sessions_app/chatsession/s/change/", {
        "name": "new name",
        "messages-TOTAL_FORMS": "0", "messages-INITIAL_FORMS": "0",
        "messages-MIN_NUM_FORMS": "0", "messages-MAX_NUM_FORMS": "1000",
    })

    assert response.status_code == 302
    session.refresh_from_db()
    assert (session.name, session.state, session.turn_id) == ("new name", "running", "t1")


def test_reset_action_frees_stuck_sessions(admin_client):
    stuck = make_session(session_id="stuck", state=ChatSession.State.RUNNING, turn_id="t1",
                         turn_owner="dead-process", lease_expires_at=timezone.now())
    broken = make_session(session_id="broken", state=ChatSession.State.ERROR, turn_id="t2", message_count=2)
    untouched = make_session(session_id="untouched", state=ChatSession.State.ERROR, turn_id="t3")

    response = _action(admin_client, "/admin/sessions_app/chatsession/", "reset_to_idle",
                       [stuck.pk, broken.pk])

    assert response.status_code == 302
    for session in (stuck, broken):
        session.refresh_from_db()
        assert (session.state, session.turn_id, session.lease_expires_at, session.turn_owner) == (
            "idle", None, None, "")
    untouched.refresh_from_db()
    assert untouched.state == "error"
    assert "2 session(s) reset to idle" in _page(admin_client, "/admin/sessions_app/chatsession/")


def test_export_action_downloads_markdown(admin_client):
    _conversation(session_id="one", name="First talk")
    two = make_session(session_id="two", name="Second talk")
    make_message(session=two, content="hello from two")
    make_session(session_id="three", name="Not selected")

    response = _action(admin_client, "/admin/sessions_app/chatsession/", "export_markdown",
                       ["one", "two"])

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="construct-sessions-\d{8}-\d{6}\.md"',
                        response["Content-Disposition"])
    text = response.content.decode()
    assert "# First talk" in text and "# Second talk" in text and "Not selected" not in text
    assert text.index("FIRST question") < text.index("FOURTH summary")
    assert "hello from two" in text


# --- devices, audit, usage, memory --------------------------------------------------


def test_revoke_action_refuses_the_token_and_is_audited(admin_client):
    device, token = make_device(name="laptop")
    other, other_token = make_device(name="phone")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/api/sessions/").status_code == 200

    response = _action(admin_client, "/admin/sessions_app/paireddevice/", "revoke", [device.pk])

    assert response.status_code == 302
    device.refresh_from_db()
    assert device.revoked_at is not None
    refused = api.get("/api/sessions/")
    assert refused.status_code == 401 and "pair" in refused.json()["error"]
    assert Client(HTTP_AUTHORIZATION=f"Bearer {other_token}").get("/api/sessions/").status_code == 200
    audit = AuditEvent.objects.filter(kind=AuditEvent.Kind.DEVICE_REVOKED).get()
    assert audit.detail == {"device_id": device.pk}
    assert audit.client == "127.0.0.1"


def test_revoke_action_tells_the_open_sockets(admin_client, django_capture_on_commit_callbacks):
    device, _ = make_device()
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.SOCKETS_GROUP, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            _action(admin_client, "/admin/sessions_app/paireddevice/", "revoke", [device.pk])

        message = async_to_sync(asyncio.wait_for)(layer.receive(channel), 5)
    finally:
        async_to_sync(layer.group_discard)(events.SOCKETS_GROUP, channel)
    assert message == {"type": "device.revoked", "device_id": device.pk}


def test_revoking_twice_is_counted_once(admin_client):
    device, _ = make_device()
    _action(admin_client, "/admin/sessions_app/paireddevice/", "revoke", [device.pk])

    _action(admin_client, "/admin/sessions_app/paireddevice/", "revoke", [device.pk])

    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.DEVICE_REVOKED).count() == 1
    assert "0 device(s) revoked" in _page(admin_client, "/admin/sessions_app/paireddevice/")


def test_no_admin_page_shows_a_token_or_its_hash(admin_client):
    make_pairing_code(code="654321")
    token = device_pair(code="654321", client="10.0.0.9", name="tablet")
    device = PairedDevice.objects.get(name="tablet")
    _conversation()
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.PAIRING_SUCCESS)
    _action(admin_client, "/admin/sessions_app/paireddevice/", "revoke", [device.pk])

    pages = [
        "/admin/", "/admin/sessions_app/",
        "/admin/sessions_app/paireddevice/", f"/admin/sessions_app/paireddevice/{device.pk}/change/",
        f"/admin/sessions_app/paireddevice/{device.pk}/history/",
        "/admin/sessions_app/auditevent/", f"/admin/sessions_app/auditevent/{event.pk}/change/",
        "/admin/sessions_app/chatsession/", "/admin/sessions_app/chatsession/conv/change/",
        "/admin/sessions_app/usagerecord/", "/admin/sessions_app/memorynote/",
        "/admin/auth/user/", f"/admin/auth/user/{device.user_id}/change/",
    ]
    for url in pages:
        html = _page(admin_client, url)
        assert device.token_hash not in html, url
        assert token not in html and token[len(device.token_hint):] not in html, url
        assert "654321" not in html, url
    device_page = _page(admin_client, f"/admin/sessions_app/paireddevice/{device.pk}/change/")
    assert device.token_hint in device_page and "tablet" in device_page


def test_devices_cannot_be_added_edited_or_deleted_here(admin_client):
    device, _ = make_device(name="laptop")

    assert admin_client.get("/admin/sessions_app/paireddevice/add/").status_code == 403
    assert admin_client.get(f"/admin/sessions_app/paireddevice/{device.pk}/delete/").status_code == 403
    admin_client.post(f"/admin/sessions_app/paireddevice/{device.pk}/change/", {"name": "renamed"})
    device.refresh_from_db()
    assert device.name == "laptop"


def test_audit_trail_is_read_only(admin_client):
    make_pairing_code(code="111111")
    device_pair(code="111111", client="10.0.0.1")
    event = AuditEvent.objects.get()

    listing = _page(admin_client, "/admin/sessions_app/auditevent/")
    change = admin_client.post(f"/admin/sessions_app/auditevent/{event.pk}/change/",
                               {"kind": "device_revoked", "client": "forged"})

    assert "pairing_success" in listing and "10.0.0.1" in listing
    assert admin_client.get("/admin/sessions_app/auditevent/add/").status_code == 403
    assert admin_client.get(f"/admin/sessions_app/auditevent/{event.pk}/delete/").status_code == 403
    assert change.status_code == 403
    event.refresh_from_db()
    assert (event.kind, event.client) == ("pairing_success", "10.0.0.1")
    assert 'value="delete_selected"' not in listing


def test_usage_records_and_memory_notes_are_listed(admin_client):
    session = make_session(session_id="s", name="costly")
    UsageRecord.objects.create(session=session, model="gpt-test", input_tokens=1234,
                               output_tokens=56, cost_usd=Decimal("0.0123"))
    MemoryNote.objects.create(session=session, user=session.user, content="the user prefers metric units",
                              tags=["prefs"])

    usage = _page(admin_client, "/admin/sessions_app/usagerecord/")
    notes = _page(admin_client, "/admin/sessions_app/memorynote/")

    assert "gpt-test" in usage and "1234" in usage and "0.0123" in usage and "costly" in usage
    assert admin_client.get("/admin/sessions_app/usagerecord/add/").status_code == 403
    assert "the user prefers metric units" in notes and "prefs" in notes
