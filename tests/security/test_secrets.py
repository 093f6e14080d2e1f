"""Secrets (the provider key, tokens, pairing codes) reach no frame, log line, error or admin page."""

import json
import logging

import pytest
from channels.db import database_sync_to_async
from django.contrib import admin
from django.urls import reverse

from construct_core.redaction import REDACTED, register_secret, scrub, scrub_value
from sessions_app.models import Message
from tests.chat.conftest import FAKE_KEY, frames_until, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_scrub_replaces_registered_secrets_only():
    register_secret("s3cr3t-value-for-scrub")
    assert scrub("a s3cr3t-value-for-scrub b") == f"a {REDACTED} b"
    assert scrub("nothing here, sk-look-alike-12345678") == "nothing here, sk-look-alike-12345678"
    fields = {"content": "plain"}
    assert scrub_value(fields) is fields  # the streaming fast path copies nothing
    assert scrub_value({"args": {"cmd": ["echo", "s3cr3t-value-for-scrub"]}, "n": 3}) == {
        "args": {"cmd": ["echo", REDACTED]}, "n": 3}


@database_sync_to_async
def saved_text(session_id):
    return json.dumps(list(Message.objects.filter(session_id=session_id).values("content", "data")))


async def test_a_provider_echoing_the_key_in_its_reply(gateway, token, caplog):
    caplog.set_level(logging.DEBUG)
    comm, _ = await open_socket(token, query="session_id=echo")
    await send(comm, type="message", content="[[echo_key]]")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert frames[-1]["full_response"] == f"Echo: {REDACTED}"
    assert REDACTED in "".join(f.get("content", "") for f in frames if f["type"] == "chunk")
    assert FAKE_KEY not in json.dumps(frames)
    assert FAKE_KEY not in await saved_text("echo")
    assert caplog.records and FAKE_KEY not in caplog.text  # something was logged, and no key
    await comm.disconnect()


async def test_a_provider_echoing_the_key_in_its_error(gateway, token, caplog):
    caplog.set_level(logging.DEBUG)
    comm, _ = await open_socket(token, query="session_id=fail")
    await send(comm, type="message", content="[[fail=401]]")
    frames = await frames_until(comm)
    assert frames[-1]["code"] == "AUTH_ERROR"
    assert FAKE_KEY not in json.dumps(frames)
    assert FAKE_KEY not in await saved_text("fail")
    assert caplog.records and FAKE_KEY not in caplog.text  # something was logged, and no key
    await comm.disconnect()


async def test_anthropic_echoing_the_key(gateway, token, mock_llm, caplog):
    gateway.CONSTRUCT_PROVIDER = "anthropic"
    gateway.CONSTRUCT_BASE_URL = mock_llm.anthropic_url
    caplog.set_level(logging.DEBUG)
    comm, _ = await open_socket(token, query="session_id=anthropic")
    for content, last in (("[[echo_key]]", "done"), ("[[fail=401]]", "error")):
        await send(comm, type="message", content=content)
        frames = await frames_until(comm)
        assert frames[-1]["type"] == last
        assert FAKE_KEY not in json.dumps(frames)
    assert FAKE_KEY not in await saved_text("anthropic")
    assert caplog.records and FAKE_KEY not in caplog.text  # something was logged, and no key
    await comm.disconnect()


async def test_the_token_is_in_no_frame_and_no_log_line(gateway, token, caplog):
    caplog.set_level(logging.DEBUG)
    comm, _ = await open_socket(token, query="session_id=tok")
    await send(comm, type="message", content="[[echo_prompt]] hello")
    frames = await frames_until(comm)
    await comm.disconnect()
    assert token not in json.dumps(frames)
    assert token not in caplog.text


# --- The admin ----------------------------------------------------------------------


def admin_pages(client):
    """Every admin changelist and change page there is, as text."""
    pages = [client.get(reverse("admin:index")).content.decode()]
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        pages.append(client.get(changelist).content.decode())
        for obj in model.objects.all()[:20]:
            change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
            response = client.get(change)
            assert response.status_code in (200, 302, 403), change
            pages.append(response.content.decode())
    return pages


def test_no_secret_on_any_admin_page(client, django_user_model):
    from sessions_app.pairing import device_pair, pairing_code_issue
    from tests.factories import make_message, make_session

    code = pairing_code_issue()
    token = device_pair(code=code, client="10.0.0.1", name="phone")
    unused_code = pairing_code_issue()
    session = make_session(session_id="admin-check", name="Check")
    make_message(session=session, content="hello")
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw-not-secret")
    client.force_login(staff)

    pages = admin_pages(client)

    text = "\n".join(pages)
    for secret in (token, code, unused_code, FAKE_KEY):
        assert secret not in text


# --- Log lines ----------------------------------------------------------------------


def test_the_console_handler_redacts_runserver_lines():
    """`manage.py runserver` logs each socket's path with its query through logging."""
    import io

    from construct_core.redaction import RedactingFilter

    stream = io.StringIO()
    # The console handler settings.LOGGING installs (django.setup() applied it).
    handler = next(h for h in logging.getLogger().handlers
                   if any(isinstance(f, RedactingFilter) for f in h.filters))
    old, handler.stream = handler.stream, stream
    try:
        token = "zc_" + "Q" * 43
        logging.getLogger("django.channels.server").info(
            "WebSocket HANDSHAKING %s [%s]", f"/ws/chat?session_id=s&token={token}", "127.0.0.1:5000")
        register_secret("sk-runserver-test-key-123456")
        logging.getLogger("chat.turns").warning("provider said %s", "bad key sk-runserver-test-key-123456")
    finally:
        handler.stream = old
    out = stream.getvalue()
    assert "token=[REDACTED]" in out and token not in out
    assert "sk-runserver-test-key-123456" not in out


def test_daphne_access_log_lines_are_redacted():
    import datetime
    import io

    from daphne.access import AccessLogGenerator

    from construct_site.daphne_compat import patch_daphne_access_log

    patch_daphne_access_log()
    patch_daphne_access_log()  # idempotent
    stream = io.StringIO()
    log = AccessLogGenerator(stream)
    token = "zc_" + "W" * 43
    log("http", "complete", {"client": "127.0.0.1:1", "method": "GET", "status": 200, "size": 2,
                             "path": f"/health?token={token}", "time_taken": 0.1})
    log("websocket", "connected", {"client": "127.0.0.1:1", "path": f"/ws/chat?token={token}"})
    out = stream.getvalue()
    assert out.count("token=[REDACTED]") == 2 and token not in out
    assert datetime.date.today().strftime("%Y") in out



def test_autobahn_formats_no_debug_arguments_per_frame(monkeypatch):
    """Autobahn builds its debug lines' arguments on every frame, even with debug off: after
    the patch that costs no introspection and no colouring (autobahn.util.hl is never called)."""
    import autobahn.util
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol as websocket_protocol

    from construct_site.daphne_tuning import patch_autobahn_debug_args

    coloured = []
    monkeypatch.setattr(autobahn.util, "hl", lambda text, **_: coloured.append(text) or text)
    patch_autobahn_debug_args()
    patch_autobahn_debug_args()  # idempotent
    method = websocket_protocol.WebSocketProtocol.sendData
    for module in (websocket_protocol, twisted_websocket):
        assert module.hltype(method) is method
        assert module.hlval(12) == 12 and module.hlval("peer", color="red") == "peer"
    assert coloured == []

# --- The audit trail of the socket ----------------------------------------------------


async def test_socket_events_are_chained_and_tampering_shows(gateway, token):
    from sessions_app.audit import audit_verify
    from sessions_app.models import AuditEvent, PairedDevice
    from sessions_app.pairing import device_revoke
    from tests.chat.conftest import communicator

    comm, _ = await open_socket(token)
    await comm.disconnect()
    refused = communicator(token="zc_wrong-wrong-wrong-wrong", query="session_id=s1")
    assert (await refused.connect(timeout=10))[0] is False
    foreign = communicator(token=token, query="session_id=s1", headers=[("origin", "https://x.example")])
    assert (await foreign.connect(timeout=10))[0] is False

    @database_sync_to_async
    def revoke_and_read():
        device_revoke(device_id=PairedDevice.objects.get().pk, client="10.0.0.9")
        return list(AuditEvent.objects.values_list("kind", flat=True)), audit_verify()

    kinds, problems = await revoke_and_read()
    assert kinds == ["socket_connect", "socket_refused", "socket_refused", "device_revoked"]
    assert problems == []

    @database_sync_to_async
    def tamper():
        refused_entry = AuditEvent.objects.filter(kind="socket_refused").first()
        AuditEvent.objects.filter(pk=refused_entry.pk).update(client="somebody-else")
        return refused_entry.pk, audit_verify()

    pk, problems = await tamper()
    assert problems == [f"entry #{pk}: content does not match its hash (edited)"]
