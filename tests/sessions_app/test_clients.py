"""The client address: X-Forwarded-For is believed only from trusted proxies."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from sessions_app.clients import client_address, client_from_request, client_from_scope


def test_without_trusted_proxies_the_peer_is_the_client():
    assert client_address(remote_addr="203.0.113.5", forwarded_for="1.2.3.4") == "203.0.113.5"
    assert client_address(remote_addr="203.0.113.5", forwarded_for=None) == "203.0.113.5"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.1"])
def test_untrusted_peer_cannot_choose_its_address():
    assert client_address(remote_addr="10.0.0.2", forwarded_for="1.2.3.4") == "10.0.0.2"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.1"])
def test_trusted_proxy_is_believed():
    assert client_address(remote_addr="10.0.0.1", forwarded_for="1.2.3.4") == "1.2.3.4"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_right_most_untrusted_hop_wins_over_a_forged_left_part():
    # The client forged "6.6.6.6"; our proxies (10.x) appended the real 1.2.3.4.
    forwarded = "6.6.6.6, 1.2.3.4, 10.1.1.1"

    assert client_address(remote_addr="10.0.0.1", forwarded_for=forwarded) == "1.2.3.4"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_all_hops_trusted_gives_the_first():
    assert client_address(remote_addr="10.0.0.1", forwarded_for="10.2.2.2, 10.3.3.3") == "10.2.2.2"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["::1", "fd00::/8"])
def test_ipv6_proxies_and_mapped_addresses():
    assert client_address(remote_addr="::1", forwarded_for="2001:db8::7") == "2001:db8::7"
    assert client_address(remote_addr="fd00::5", forwarded_for="[2001:db8::8]:4711") == "2001:db8::8"
    assert client_address(remote_addr="::ffff:192.0.2.9", forwarded_for="1.2.3.4") == "192.0.2.9"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["127.0.0.1"])
def test_ports_are_dropped_and_garbage_is_kept_short():
    assert client_address(remote_addr="127.0.0.1", forwarded_for="1.2.3.4:5555") == "1.2.3.4"
    assert client_address(remote_addr="127.0.0.1", forwarded_for="x" * 500) == "x" * 64


def test_missing_peer_is_unknown():
    assert client_address(remote_addr=None, forwarded_for="1.2.3.4") == "unknown"
    assert client_address(remote_addr="", forwarded_for=None) == "unknown"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["not-an-ip"])
def test_a_bad_trusted_proxy_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="CONSTRUCT_TRUSTED_PROXIES"):
        client_address(remote_addr="10.0.0.1", forwarded_for="1.2.3.4")


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.1"])
def test_client_from_request():
    factory = RequestFactory()
    proxied = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4")
    direct = factory.get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="1.2.3.4")

    assert client_from_request(proxied) == "1.2.3.4"
    assert client_from_request(direct) == "10.0.0.9"


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_client_from_scope_joins_repeated_headers():
    scope = {
        "type": "websocket",
        "client": ["10.0.0.1", 50000],
        "headers": [
            (b"host", b"example.org"),
            (b"x-forwarded-for", b"6.6.6.6, 1.2.3.4"),
            (b"X-Forwarded-For", b"10.5.5.5"),
        ],
    }

    assert client_from_scope(scope) == "1.2.3.4"
    assert client_from_scope({"type": "websocket", "client": ["10.0.0.1", 1], "headers": []}) == "10.0.0.1"
    assert client_from_scope({"type": "websocket", "headers": []}) == "unknown"
