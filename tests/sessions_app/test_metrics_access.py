"""Who may read GET /metrics: loopback, CONSTRUCT_METRICS_ALLOWED, staff tokens; others get 401 JSON."""

import json
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from sessions_app.metrics import metrics, metrics_allowed
from tests.factories import make_device, make_user
from tests.support.daphne import REPO_ROOT, server_env

pytestmark = pytest.mark.django_db


def request(remote="203.0.113.5", token=None, **headers):
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return RequestFactory().get("/metrics", REMOTE_ADDR=remote, **headers)


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_may(remote):
    assert metrics_allowed(request(remote))


def test_another_address_may_not():
    assert not metrics_allowed(request("203.0.113.5"))
    assert not metrics_allowed(request("10.1.2.3"))


@override_settings(CONSTRUCT_METRICS_ALLOWED=["203.0.113.0/24", "2001:db8::7"])
def test_listed_addresses_and_networks_may():
    assert metrics_allowed(request("203.0.113.77"))
    assert metrics_allowed(request("2001:db8::7"))
    assert not metrics_allowed(request("203.0.114.1"))
    assert not metrics_allowed(request("2001:db8::8"))


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["127.0.0.1"])
def test_the_client_behind_a_trusted_proxy_counts_not_the_proxy():
    assert not metrics_allowed(request("127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5"))
    # A client cannot forge its way in: the proxy appends the address it saw.
    assert not metrics_allowed(request("127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.5"))
    # A client of the proxy on this very host is local.
    assert metrics_allowed(request("127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1"))


@override_settings(CONSTRUCT_TRUSTED_PROXIES=["127.0.0.1"], CONSTRUCT_METRICS_ALLOWED=["203.0.113.0/24"])
def test_a_listed_client_behind_a_trusted_proxy_may():
    assert metrics_allowed(request("127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5"))


def test_a_proxy_that_is_not_trusted_is_not_its_clients():
    # nginx on this host, CONSTRUCT_TRUSTED_PROXIES forgotten: its loopback address
    # would otherwise let the whole internet in.
    assert not metrics_allowed(request("127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5"))


def test_a_staff_token_may_from_anywhere():
    _device, token = make_device(user=make_user(is_staff=True))
    assert metrics_allowed(request("203.0.113.5", token=token))


def test_other_tokens_may_not():
    _device, token = make_device(user=make_user(is_staff=False))
    assert not metrics_allowed(request("203.0.113.5", token=token))
    _device, revoked = make_device(user=make_user(is_staff=True), revoked=True)
    assert not metrics_allowed(request("203.0.113.5", token=revoked))
    assert not metrics_allowed(request("203.0.113.5", token="zc_not-a-token"))
    assert not metrics_allowed(request("203.0.113.5", HTTP_AUTHORIZATION="Basic abc"))


@override_settings(CONSTRUCT_REQUIRE_PAIRING=False)
def test_with_pairing_off_everyone_is_the_local_owner_as_on_the_rest_api():
    assert metrics_allowed(request("203.0.113.5"))


def test_the_refusal_is_401_json_with_a_code():
    response = metrics(request("203.0.113.5"))
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    body = json.loads(response.content)
    assert body["code"] == "AUTH_ERROR" and "staff" in body["error"]


def test_the_answer_is_prometheus_text():
    response = metrics(request("127.0.0.1"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"construct_turns_total" in response.content


@override_settings(CONSTRUCT_METRICS_ALLOWED=["nonsense"])
def test_a_bad_entry_names_the_variable_when_used():
    with pytest.raises(ImproperlyConfigured, match="CONSTRUCT_METRICS_ALLOWED"):
        metrics_allowed(request("203.0.113.5"))


@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-an-ip", "10.0.0.1, example.org"])
def test_a_bad_value_stops_start_up_naming_the_variable(value):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=REPO_ROOT,
        env=server_env({"CONSTRUCT_METRICS_ALLOWED": value}), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "CONSTRUCT_METRICS_ALLOWED" in result.stderr


def test_queued_messages_count_the_messages_a_draining_process_handed_on():
    from sessions_app import services

    def queued():
        body = metrics(request("127.0.0.1")).content.decode()
        return [line for line in body.splitlines() if line.startswith("construct_queued_messages ")]

    assert queued() == ["construct_queued_messages 0.0"]
    user = make_user()
    services.session_open(session_id="kept", user_id=user.pk)
    for content in ("one", "two"):
        services.queued_add(session_id="kept", user_id=user.pk, client_id=None, content=content,
                            options={}, depth=8)
    assert queued() == ["construct_queued_messages 2.0"]
