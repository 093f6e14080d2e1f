"""Behind a proxy: CONSTRUCT_PUBLIC_URL and X-Forwarded-Proto from trusted proxies only.

The admin login is a form with CSRF protection: the browser's Origin must be
the origin Django believes it serves (scheme from the connection, or from a
trusted proxy's X-Forwarded-Proto; host and port from Host), or the public URL's.
"""

import re

import pytest
from django.test import Client, RequestFactory

from chat.security import ForwardedProtoMiddleware, origin_allowed
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough password 1"


def _admin_login(client: Client, *, host: str, origin: str, **extra):
    """GET the login form and POST it back as a browser would; return the POST's response."""
    form = client.get("/admin/login/", HTTP_HOST=host, **extra)
    assert form.status_code == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content).group(1).decode()
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "boss", "password": PASSWORD, "csrfmiddlewaretoken": token},
        HTTP_HOST=host, HTTP_ORIGIN=origin, **extra,
    )


@pytest.fixture
def boss():
    return make_user(username="boss", password=PASSWORD, is_staff=True)


def _logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_admin_login_through_a_host_with_a_port(boss, settings):
    settings.ALLOWED_HOSTS = ["gw.example"]
    client = Client(enforce_csrf_checks=True)

    response = _admin_login(client, host="gw.example:8080", origin="http://gw.example:8080")

    assert _logged_in(response), response.status_code


def test_admin_login_behind_tls_from_a_trusted_proxy(boss, settings):
    settings.ALLOWED_HOSTS = ["gw.example"]
    settings.CONSTRUCT_TRUSTED_PROXIES = ["127.0.0.1"]
    client = Client(enforce_csrf_checks=True)

    response = _admin_login(client, host="gw.example", origin="https://gw.example",
                            HTTP_X_FORWARDED_PROTO="https")

    assert _logged_in(response), response.status_code


def test_an_untrusted_peers_forwarded_proto_is_ignored(boss, settings):
    settings.ALLOWED_HOSTS = ["gw.example"]
    settings.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.1"]
    client = Client(enforce_csrf_checks=True)

    # The peer (the test client's 127.0.0.1) is no proxy of ours: the scheme is
    # the connection's, http, so an https Origin is another site's.
    response = _admin_login(client, host="gw.example", origin="https://gw.example",
                            HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 403
    request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="203.0.113.9",
                                   CONSTRUCT_FORWARDED_PROTO="https")
    ForwardedProtoMiddleware(lambda r: None).process_request(request)
    assert request.is_secure() is False


def test_the_forwarded_proto_of_a_trusted_proxy_makes_the_request_secure(settings):
    settings.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    middleware = ForwardedProtoMiddleware(lambda r: None)

    secure = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="10.1.2.3")
    middleware.process_request(secure)
    plain = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="http", REMOTE_ADDR="10.1.2.3")
    middleware.process_request(plain)
    without = RequestFactory().get("/", REMOTE_ADDR="10.1.2.3")
    middleware.process_request(without)

    assert secure.is_secure() is True
    assert plain.is_secure() is False and without.is_secure() is False


def test_admin_login_with_the_public_urls_origin(boss, settings):
    # TLS ends at a proxy that is not ours to trust for the scheme: the public
    # URL's origin is trusted for CSRF all the same.
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    client = Client(enforce_csrf_checks=True)

    response = _admin_login(client, host="chat.example.com", origin="https://chat.example.com")

    assert _logged_in(response), response.status_code
    other = Client(enforce_csrf_checks=True)
    assert _admin_login(other, host="chat.example.com",
                        origin="https://evil.example").status_code == 403


def _scope(origin, host):
    return {"type": "websocket", "scheme": "ws",
            "headers": [(b"origin", origin.encode()), (b"host", host.encode())]}


def test_the_socket_accepts_the_public_urls_origin(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CONSTRUCT_ALLOWED_ORIGINS = []
    settings.CONSTRUCT_PUBLIC_ORIGIN = "https://chat.example.com:8443"

    # nginx passes the backend's own address as Host here; the page's origin is the public one.
    assert origin_allowed(_scope("https://chat.example.com:8443", "127.0.0.1:8001"))
    assert not origin_allowed(_scope("https://chat.example.com", "127.0.0.1:8001"))
    assert not origin_allowed(_scope("http://chat.example.com:8443", "127.0.0.1:8001"))
    settings.CONSTRUCT_PUBLIC_ORIGIN = None
    assert not origin_allowed(_scope("https://chat.example.com:8443", "127.0.0.1:8001"))
