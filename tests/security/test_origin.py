"""Cross-site WebSocket hijacking: the chat socket checks Origin before it accepts."""

import pytest
from channels.db import database_sync_to_async

from chat.security import origin_allowed
from sessions_app.audit import audit_verify
from sessions_app.models import AuditEvent
from tests.chat.conftest import communicator


def scope(origin=None, host="127.0.0.1:8000", scheme="ws"):
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize("origin, host, allowed", [
    (None, "127.0.0.1:8000", True),  # a script: no Origin
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),  # the gateway's own page
    ("http://localhost:8000", "localhost:8000", True),
    ("http://LOCALHOST:8000", "localhost:8000", True),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("http://localhost:5173", "127.0.0.1:8000", True),  # a host in ALLOWED_HOSTS, any port
    ("https://evil.example", "127.0.0.1:8000", False),
    ("http://127.0.0.1.evil.example", "127.0.0.1:8000", False),
    ("http://evil.example:8000", "evil.example:8000", False),  # DNS rebinding: Host not allowed
    ("null", "127.0.0.1:8000", False),  # sandboxed frame, file://
    ("", "127.0.0.1:8000", False),
    ("not a url", "127.0.0.1:8000", False),
    ("http://user@localhost", "localhost", False),
    ("ftp://localhost", "localhost", False),
])
def test_origin_rules(settings, origin, host, allowed):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    settings.CONSTRUCT_ALLOWED_ORIGINS = []
    assert origin_allowed(scope(origin, host)) is allowed


def test_allowed_origins_are_exact(settings):
    settings.ALLOWED_HOSTS = ["gateway.internal"]
    settings.CONSTRUCT_ALLOWED_ORIGINS = ["https://app.example.com", "http://localhost:3000/"]
    assert origin_allowed(scope("https://app.example.com"))
    assert origin_allowed(scope("https://app.example.com:443"))  # the default port, spelled out
    assert origin_allowed(scope("http://localhost:3000"))
    assert not origin_allowed(scope("http://app.example.com"))  # scheme differs
    assert not origin_allowed(scope("https://app.example.com:8443"))
    assert not origin_allowed(scope("https://evil.app.example.com"))
    assert not origin_allowed(scope("http://localhost:3001"))


def test_star_turns_the_check_off(settings):
    settings.CONSTRUCT_ALLOWED_ORIGINS = ["*"]
    assert origin_allowed(scope("https://anything.example"))
    assert origin_allowed(scope("null"))


def test_star_in_allowed_hosts_does_not_allow_every_origin(settings):
    settings.ALLOWED_HOSTS = ["*"]
    settings.CONSTRUCT_ALLOWED_ORIGINS = []
    assert not origin_allowed(scope("https://evil.example", host="gateway.example:8000"))
    # ... but a page served by this very host still may.
    assert origin_allowed(scope("http://gateway.example:8000", host="gateway.example:8000"))
    assert origin_allowed(scope("https://gateway.example", host="gateway.example", scheme="wss"))


def test_subdomain_pattern_in_allowed_hosts(settings):
    settings.ALLOWED_HOSTS = [".example.com"]
    settings.CONSTRUCT_ALLOWED_ORIGINS = []
    assert origin_allowed(scope("https://chat.example.com", host="10.0.0.5:8000"))
    assert not origin_allowed(scope("https://example.org", host="10.0.0.5:8000"))


# --- On the socket --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_foreign_origin_is_refused_before_accept_and_audited(gateway, token):
    gateway.CONSTRUCT_ALLOWED_ORIGINS = []
    comm = communicator(token=token, query="session_id=s1",
                        headers=[("origin", "https://evil.example"), ("host", "127.0.0.1:8000")])
    connected, _ = await comm.connect(timeout=10)
    assert connected is False

    @database_sync_to_async
    def trail():
        return list(AuditEvent.objects.values_list("kind", "detail")), audit_verify()

    entries, problems = await trail()
    assert entries == [("socket_refused", {"reason": "origin not allowed",
                                           "origin": "https://evil.example"})]
    assert problems == []

    same_site = communicator(token=token, query="session_id=s1",
                             headers=[("origin", "http://127.0.0.1:8000"), ("host", "127.0.0.1:8000")])
    assert (await same_site.connect(timeout=10))[0]
    await same_site.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_origin_is_checked_with_pairing_off_too(gateway):
    """With pairing off the Origin check is the only thing between a web page and the agent."""
    gateway.CONSTRUCT_REQUIRE_PAIRING = False
    comm = communicator(query="session_id=s1", headers=[("origin", "https://evil.example")])
    assert (await comm.connect(timeout=10))[0] is False
    gateway.CONSTRUCT_ALLOWED_ORIGINS = ["https://evil.example"]
    comm = communicator(query="session_id=s1", headers=[("origin", "https://evil.example")])
    assert (await comm.connect(timeout=10))[0]
    await comm.disconnect()
