"""Limits on what one client may cost: messages, new sockets, open sockets, request bodies."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from chat.limits import Rate, RateLimiter, SocketCounter
from sessions_app.models import AuditEvent, Message
from tests.chat.conftest import communicator, frames_until, open_socket, send
from tests.factories import make_device, make_user
from tests.test_settings_env import run_django

MIB = 1024 * 1024


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- The building blocks ---------------------------------------------------------


def test_bucket_allows_a_burst_then_refills_at_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    rate = Rate(3, 3.0)  # one a second, three at once

    assert [limiter.hit("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("k", rate) == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.hit("k", rate) == pytest.approx(0.5)  # a refused hit spends nothing
    clock.now += 0.5
    assert limiter.hit("k", rate) == 0.0
    assert limiter.hit("other", rate) == 0.0  # keys are independent
    clock.now += 1000
    assert [limiter.hit("k", rate) for _ in range(4)][-1] > 0  # refill stops at the burst size
    assert limiter.hit("k", None) == 0.0  # no rate, no limit


def test_limiter_forgets_the_least_recently_used_key():
    clock = FakeClock()
    limiter = RateLimiter(max_keys=2, clock=clock)
    rate = Rate(1, 60.0)
    limiter.hit("a", rate)
    limiter.hit("b", rate)
    limiter.hit("a", rate)  # "a" refused, and now the most recently used
    limiter.hit("c", rate)  # evicts "b"
    assert len(limiter) == 2
    assert limiter.hit("a", rate) > 0
    assert limiter.hit("b", rate) == 0.0  # forgotten: a full bucket again


def test_socket_counter():
    counter = SocketCounter()
    assert counter.acquire("k", 2) and counter.acquire("k", 2)
    assert not counter.acquire("k", 2)
    counter.release("k")
    assert counter.acquire("k", 2)
    assert all(counter.acquire("free", 0) for _ in range(50))  # 0 is no cap
    for _ in range(5):
        counter.release("k")
    assert counter.count("k") == 0


@pytest.mark.parametrize("name, value", [("CONSTRUCT_MESSAGE_RATE", "fast"),
                                         ("CONSTRUCT_SOCKET_RATE", "10/0"),
                                         ("CONSTRUCT_MAX_SOCKETS_PER_TOKEN", "-1")])
def test_bad_limit_setting_fails_fast_naming_the_variable(name, value):
    result = run_django(["-c", "import django; django.setup()"], **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


# --- On the socket ------------------------------------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def user_messages(session_id):
    return list(Message.objects.filter(session_id=session_id, role="user")
                .order_by("seq").values_list("content", flat=True))


@database_sync_to_async
def refusals():
    return list(AuditEvent.objects.filter(kind="socket_refused").values_list("detail", flat=True))


async def test_message_rate_limit_answers_rate_limited_and_keeps_the_socket(gateway, token):
    # Two at once, then one each 3 s: the three sends fit in that even on a busy machine.
    gateway.CONSTRUCT_MESSAGE_RATE = (2, 6.0)
    comm, _ = await open_socket(token, query="session_id=rl")
    for n in range(3):
        await send(comm, type="message", content=f"m{n}")
    frames = []
    while sum(f["type"] == "done" for f in frames) < 2 or not any(f["type"] == "error" for f in frames):
        frames += await frames_until(comm, types=("done", "error"))
    limited = [f for f in frames if f["type"] == "error"]
    assert len(limited) == 1
    assert limited[0]["code"] == "RATE_LIMITED"
    retry_after = limited[0]["retry_after"]
    assert retry_after in (1, 2, 3) and f"retry after {retry_after} s" in limited[0]["message"]

    await asyncio.sleep(retry_after + 0.1)  # one message earned back
    await send(comm, type="message", content="after the wait")
    assert (await frames_until(comm))[-1]["type"] == "done"
    assert await user_messages("rl") == ["m0", "m1", "after the wait"]
    await comm.disconnect()


async def test_message_rate_is_per_user_not_per_socket_or_device(gateway, token):
    gateway.CONSTRUCT_MESSAGE_RATE = (2, 60.0)
    first, _ = await open_socket(token, query="session_id=a")
    second, _ = await open_socket(token, query="session_id=b")
    # A second device of the same user (the owner) shares the user's allowance.
    _device, same_user_token = await database_sync_to_async(make_device)(name="phone")
    same_user, _ = await open_socket(same_user_token, query="session_id=d")
    _device, other_token = await database_sync_to_async(
        lambda: make_device(name="other", user=make_user()))()
    other, _ = await open_socket(other_token, query="session_id=c")
    for _ in range(2):
        await send(first, type="message", content="hi")
        assert (await frames_until(first))[-1]["type"] == "done"
    await send(second, type="message", content="hi")
    assert (await frames_until(second))[-1]["code"] == "RATE_LIMITED"
    await send(same_user, type="message", content="hi")
    assert (await frames_until(same_user))[-1]["code"] == "RATE_LIMITED"
    await send(other, type="message", content="hi")
    assert (await frames_until(other))[-1]["type"] == "done"
    for comm in (first, second, same_user, other):
        await comm.disconnect()


async def test_invalid_frames_do_not_spend_the_message_budget(gateway, token):
    gateway.CONSTRUCT_MESSAGE_RATE = (1, 60.0)
    comm, _ = await open_socket(token, query="session_id=v")
    for raw in ("{bad", '{"type":"message","content":""}', '{"type":"nope"}'):
        await comm.send_to(text_data=raw)
        assert (await comm.receive_json_from())["code"] != "RATE_LIMITED"
    await send(comm, type="message", content="the one allowed")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_new_socket_rate_refuses_before_accept(gateway, token):
    gateway.CONSTRUCT_SOCKET_RATE = (2, 60.0)
    for _ in range(2):
        comm, _ = await open_socket(token)
        await comm.disconnect()
    refused = communicator(token=token, query="session_id=s1")
    assert (await refused.connect(timeout=10))[0] is False
    reasons = [detail["reason"] for detail in await refusals()]
    assert len(reasons) == 1 and reasons[0].startswith("too many new sockets")
    # Another user's device has its own allowance.
    _device, other_token = await database_sync_to_async(
        lambda: make_device(name="other", user=make_user()))()
    comm, _ = await open_socket(other_token, query="session_id=theirs")
    await comm.disconnect()


async def test_open_sockets_per_token_are_capped(gateway, token):
    gateway.CONSTRUCT_SOCKET_RATE = None
    gateway.CONSTRUCT_MAX_SOCKETS_PER_TOKEN = 2
    first, _ = await open_socket(token, query="session_id=x")
    second, _ = await open_socket(token, query="session_id=y")
    third = communicator(token=token, query="session_id=z")
    assert (await third.connect(timeout=10))[0] is False
    assert "too many open sockets" in (await refusals())[-1]["reason"]
    await first.disconnect()
    fourth, _ = await open_socket(token, query="session_id=z")  # a slot came free
    for comm in (second, fourth):
        await comm.disconnect()


async def test_a_refused_socket_frees_no_slot_it_never_held(gateway, token):
    gateway.CONSTRUCT_SOCKET_RATE = None
    gateway.CONSTRUCT_MAX_SOCKETS_PER_TOKEN = 1
    held, _ = await open_socket(token)
    for _ in range(3):
        refused = communicator(token=token, query="session_id=s1")
        assert (await refused.connect(timeout=10))[0] is False
        await refused.disconnect()
    assert (await communicator(token=token, query="session_id=s1").connect(timeout=10))[0] is False
    await held.disconnect()


async def test_without_pairing_the_limits_key_on_the_client_address(gateway):
    gateway.CONSTRUCT_REQUIRE_PAIRING = False
    gateway.CONSTRUCT_SOCKET_RATE = None
    gateway.CONSTRUCT_MAX_SOCKETS_PER_TOKEN = 1

    def from_address(address):
        comm = communicator(query="session_id=s1")
        comm.scope["client"] = (address, 40000)
        return comm

    first = from_address("10.0.0.1")
    assert (await first.connect(timeout=10))[0]
    assert (await from_address("10.0.0.1").connect(timeout=10))[0] is False
    other = from_address("10.0.0.2")
    assert (await other.connect(timeout=10))[0]
    for comm in (first, other):
        await comm.disconnect()


async def test_a_flood_of_refused_sockets_does_not_flood_the_audit_trail(gateway):
    for _ in range(30):
        comm = communicator(token="zc_not-a-valid-token-at-all", query="session_id=s1")
        assert (await comm.connect(timeout=10))[0] is False
    assert len(await refusals()) == 20  # chat.limits.REFUSAL_AUDIT_RATE


# --- Request bodies --------------------------------------------------------------


def test_oversized_bodies_get_413_json(client, settings):
    _device, token = make_device()
    big = b"{" + b" " * MIB + b"}"
    for path, headers in [("/pair", {"HTTP_X_PAIRING_CODE": "123456"}),
                          ("/api/channel-events/", {"HTTP_AUTHORIZATION": f"Bearer {token}"})]:
        response = client.post(path, data=big, content_type="application/json", **headers)
        assert response.status_code == 413, path
        assert response.json() == {"error": f"Request body too large: at most {MIB} bytes"}


def test_bodies_within_the_limit_pass(client):
    _device, token = make_device()
    body = json.dumps({"type": "note", "text": "x" * (MIB - 100)})
    response = client.post("/api/channel-events/", data=body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 202


def test_a_body_larger_than_declared_is_refused_when_read(rf, settings):
    """A lying Content-Length does not slip past: Django counts what it reads."""
    from chat.security import BodyLimitMiddleware
    from django.core.exceptions import RequestDataTooBig

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    request = rf.post("/pair", data=b"x" * 5, content_type="application/json")
    middleware = BodyLimitMiddleware(lambda request: request.body)
    assert middleware.process_request(request) is None
    response = middleware.process_exception(request, RequestDataTooBig("too big"))
    assert response.status_code == 413
    assert middleware.process_exception(request, ValueError("other")) is None
