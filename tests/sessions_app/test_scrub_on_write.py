"""Each write service scrubs registered secrets from what it stores, whoever calls it.

The rows are read back with the ORM, bypassing every service, so a test fails
if the secret reached the database, not only if it is shown somewhere.
"""

import json

import pytest

from construct_core.redaction import REDACTED, register_secret
from sessions_app import services
from sessions_app.audit import audit_record, audit_verify
from sessions_app.models import (
    AuditEvent, ChatSession, ClientMessageId, MemoryNote, Message, PairedDevice, PairingThrottle,
    UsageRecord,
)
from sessions_app.pairing import device_pair
from tests.factories import make_pairing_code, make_session

pytestmark = pytest.mark.django_db

KEY = "sk-unit-STORED-Qz7Wv3Xk9Jp2"
# The key as a provider may write it inside JSON text: "-" escaped as \u002d.
ESCAPED_KEY = KEY.replace("-", "\\u002d")


@pytest.fixture(autouse=True)
def registered():
    register_secret(KEY)


def stored(model, **filters) -> str:
    """Every stored value of the model's rows, as one JSON text."""
    return json.dumps(list(model.objects.filter(**filters).values()), default=str, ensure_ascii=False)


def test_message_append_scrubs_content_and_nested_data():
    make_session(session_id="s")
    data = {
        "thinking": f"the key is {KEY}, said twice: {KEY}",
        "tool_calls": [
            {"id": "call_1", "name": "memory_store",
             "arguments": json.dumps({"content": KEY, "tags": [KEY, "plain"]})},
            {"id": "call_2", "name": "render_canvas",
             "arguments": '{"canvas_id": "default", "content": "<p>' + ESCAPED_KEY + '</p>"}'},
        ],
        "client_id": f"c-{KEY}",
        KEY: {"nested": [1, True, None, f"x{KEY}y"]},
    }

    message = services.message_append(session_id="s", role="assistant", content=f"Echo: {KEY}",
                                      data=data)

    row = Message.objects.get(pk=message.pk)
    assert row.content == f"Echo: {REDACTED}"
    assert row.data["thinking"] == f"the key is {REDACTED}, said twice: {REDACTED}"
    first, second = row.data["tool_calls"]
    assert json.loads(first["arguments"]) == {"content": REDACTED, "tags": [REDACTED, "plain"]}
    assert json.loads(second["arguments"]) == {"canvas_id": "default", "content": f"<p>{REDACTED}</p>"}
    assert second["id"] == "call_2" and second["name"] == "render_canvas"
    assert row.data["client_id"] == f"c-{REDACTED}"
    assert row.data[REDACTED] == {"nested": [1, True, None, f"x{REDACTED}y"]}
    text = stored(Message)
    assert KEY not in text and ESCAPED_KEY not in text


def test_clean_data_is_stored_exactly_as_given():
    make_session(session_id="s")
    arguments = '{"path":  "a.txt", "content": "caf\\u00e9"}'  # odd spacing and escapes kept
    data = {"tool_calls": [{"id": "c", "name": "file_write", "arguments": arguments}], "n": 3}

    message = services.message_append(session_id="s", role="assistant", content="", data=data)

    assert Message.objects.get(pk=message.pk).data == data


def test_messages_append_scrubs_every_message():
    make_session(session_id="s")
    services.messages_append(session_id="s", messages=[
        {"role": "user", "content": KEY, "data": {"page_context": KEY}},
        {"role": "tool", "content": f"Stored memory note with tags {KEY}", "data": {"name": KEY}},
    ])

    assert list(Message.objects.values_list("content", flat=True)) == [
        REDACTED, f"Stored memory note with tags {REDACTED}"]
    assert KEY not in stored(Message)


def test_note_store_scrubs_content_and_tags():
    make_session(session_id="s")

    services.note_store(user_id=services.default_owner().pk, session_id="s", content=f"remember {KEY}", tags=[KEY, f"k:{KEY}", "plain"])

    note = MemoryNote.objects.get()
    assert note.content == f"remember {REDACTED}"
    assert note.tags == [REDACTED, f"k:{REDACTED}", "plain"]
    assert note.session_id == "s"


def test_usage_record_scrubs_the_model_name_before_cutting_it():
    model = "m" * 190 + KEY  # the key straddles the 200-character column

    services.usage_record(session_id=None, user_id=None, turn_id="t", model=model, input_tokens=1, output_tokens=2)

    row = UsageRecord.objects.get()
    assert row.model == ("m" * 190 + REDACTED)[:200]
    assert KEY[:8] not in stored(UsageRecord)


def test_audit_record_scrubs_client_and_detail_and_still_verifies():
    audit_record(kind="socket_refused", client=f"proxy-{KEY}", reason="origin not allowed",
                 origin=f"https://{KEY}.example", nested={"list": [KEY]})

    event = AuditEvent.objects.get()
    assert event.client == f"proxy-{REDACTED}"
    assert event.detail["origin"] == f"https://{REDACTED}.example"
    assert event.detail["nested"] == {"list": [REDACTED]}
    assert KEY not in stored(AuditEvent)
    assert audit_verify() == []


def test_session_names_are_scrubbed_before_they_are_cut():
    services.session_open(session_id="s", user_id=services.default_owner().pk, name="n" * 195 + KEY)
    assert ChatSession.objects.get(pk="s").name == ("n" * 195 + REDACTED)[:200]

    services.session_open(session_id="s", user_id=services.default_owner().pk, name=f"renamed {KEY}")
    assert ChatSession.objects.get(pk="s").name == f"renamed {REDACTED}"

    services.session_rename(session_id="s", name=f"again {KEY}")
    assert ChatSession.objects.get(pk="s").name == f"again {REDACTED}"
    assert KEY[:8] not in stored(ChatSession)


def test_a_session_id_holding_a_secret_is_refused():
    with pytest.raises(ValueError):
        services.session_open(session_id=f"s-{KEY}", user_id=services.default_owner().pk)
    assert not ChatSession.objects.exists()


def test_client_ids_are_scrubbed_and_still_deduplicate():
    make_session(session_id="s")

    assert services.client_id_claim(session_id="s", client_id=f"id-{KEY}") is True
    assert services.client_id_claim(session_id="s", client_id=f"id-{KEY}") is False
    assert KEY not in stored(ClientMessageId)

    services.client_id_release(session_id="s", client_id=f"id-{KEY}")
    assert not ClientMessageId.objects.exists()


def test_pairing_scrubs_the_device_name_and_client():
    make_pairing_code(code="123456")

    device_pair(code="123456", client=f"c-{KEY}", name="phone " + "p" * 190 + KEY)

    device = PairedDevice.objects.get()
    assert device.name == ("phone " + "p" * 190 + REDACTED)[:200]
    assert device.client == f"c-{REDACTED}"
    for model in (PairedDevice, AuditEvent, PairingThrottle):
        assert KEY[:8] not in stored(model), model.__name__


def test_a_forwarded_client_is_scrubbed_before_it_is_cut(settings):
    from sessions_app.clients import MAX_CLIENT_CHARS, client_address

    settings.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    hop = "h" * (MAX_CLIENT_CHARS - 10) + KEY  # not an address: kept as text, and cut

    client = client_address(remote_addr="10.0.0.1", forwarded_for=hop)

    assert client == ("h" * (MAX_CLIENT_CHARS - 10) + REDACTED)[:MAX_CLIENT_CHARS]


def test_a_thinking_block_that_held_a_key_is_not_kept_and_the_others_are_unchanged():
    make_session(session_id="s")
    clean = {"type": "thinking", "thinking": "plain reasoning", "signature": "sig-1"}
    leaking = {"type": "thinking", "thinking": f"the key {KEY}", "signature": "sig-2"}
    redacted = {"type": "redacted_thinking", "data": "opaque-data"}
    data = {"thinking": f"plain reasoning the key {KEY}", "thinking_blocks": [clean, leaking, redacted],
            "provider": "anthropic"}

    message = services.message_append(session_id="s", role="assistant", content="ok", data=data)

    row = Message.objects.get(pk=message.pk)
    # Scrubbed, its signature would no longer match: it could never be sent back.
    assert row.data["thinking_blocks"] == [clean, redacted]
    assert row.data["thinking"] == f"plain reasoning the key {REDACTED}"
    assert KEY not in stored(Message)
