"""Tokens: revocation closes open sockets at once; the client address is never the client's say."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import events
from sessions_app.models import AuditEvent, Message, PairedDevice
from sessions_app.pairing import device_revoke
from tests.chat.conftest import communicator, frames_until, open_socket, send
from tests.factories import make_device

pytestmark = pytest.mark.django_db(transaction=True)

REVOKED_CLOSE = 4401


async def assert_revoked(comm):
    frame = await comm.receive_json_from(timeout=10)
    assert frame == {"type": "error", "code": "AUTH_ERROR",
                     "message": "Token revoked: pair this device again"}
    closed = await comm.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": REVOKED_CLOSE}


@database_sync_to_async
def device_of(token_value):
    from sessions_app.pairing import token_hash

    return PairedDevice.objects.get(token_hash=token_hash(token_value))


async def test_revoking_a_device_closes_its_open_sockets_at_once(gateway, token):
    device = await device_of(token)
    _other, other_token = await database_sync_to_async(make_device)(name="other")
    first, _ = await open_socket(token, query="session_id=a")
    second, _ = await open_socket(token, query="session_id=b")
    bystander, _ = await open_socket(other_token, query="session_id=a")

    assert await database_sync_to_async(device_revoke)(device_id=device.pk, client="admin")

    await assert_revoked(first)
    await assert_revoked(second)
    # Another device's socket, even on the same session, carries on.
    await send(bystander, type="message", content="still here")
    assert (await frames_until(bystander))[-1]["type"] == "done"
    assert await first.receive_nothing(timeout=0.2)
    await bystander.disconnect()
    # And the token opens nothing any more.
    assert (await communicator(token=token, query="session_id=a").connect(timeout=10))[0] is False


async def test_revocation_without_the_event_acts_on_the_next_message(gateway, token):
    """Another process revoked it and no layer is shared: the socket checks before acting."""
    comm, _ = await open_socket(token, query="session_id=quiet")

    @database_sync_to_async
    def revoke_behind_our_back():
        PairedDevice.objects.update(revoked_at=timezone.now())

    await revoke_behind_our_back()
    await send(comm, type="message", content="am I still allowed?")
    await assert_revoked(comm)
    await comm.send_to(text_data='{"type":"message","content":"and now?"}')
    assert await comm.receive_nothing(timeout=0.3)

    @database_sync_to_async
    def saved():
        return Message.objects.filter(session_id="quiet").count()

    assert await saved() == 0


async def test_stop_is_refused_to_a_revoked_token(gateway, token):
    comm, _ = await open_socket(token, query="session_id=stop")

    @database_sync_to_async
    def revoke_behind_our_back():
        PairedDevice.objects.update(revoked_at=timezone.now())

    await revoke_behind_our_back()
    await send(comm, type="stop")
    await assert_revoked(comm)


async def test_a_revocation_event_for_another_device_is_ignored(gateway, token):
    comm, _ = await open_socket(token, query="session_id=s1")
    await events.publish_device_revoked(987654)
    assert await comm.receive_nothing(timeout=0.3)
    await send(comm, type="message", content="fine")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_revoking_twice_publishes_once(gateway, token):
    device = await device_of(token)
    comm, _ = await open_socket(token)
    assert await database_sync_to_async(device_revoke)(device_id=device.pk) is True
    assert await database_sync_to_async(device_revoke)(device_id=device.pk) is False
    await assert_revoked(comm)


# --- X-Forwarded-For on the socket ----------------------------------------------------


@database_sync_to_async
def connect_clients():
    return list(AuditEvent.objects.filter(kind="socket_connect").values_list("client", flat=True))


async def socket_from(peer, forwarded, token):
    comm = communicator(token=token, query="session_id=s1",
                        headers=[("x-forwarded-for", forwarded)] if forwarded else ())
    comm.scope["client"] = (peer, 50000)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.receive_json_from()
    await comm.disconnect()


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(gateway, token):
    gateway.CONSTRUCT_TRUSTED_PROXIES = []
    await socket_from("203.0.113.7", "198.51.100.1", token)
    assert await connect_clients() == ["203.0.113.7"]


async def test_forwarded_for_is_believed_from_a_trusted_proxy(gateway, token):
    gateway.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    await socket_from("10.1.2.3", "6.6.6.6, 198.51.100.1, 10.9.9.9", token)
    # The right-most address no trusted proxy vouched for; "6.6.6.6" may be forged.
    assert await connect_clients() == ["198.51.100.1"]


async def test_forwarded_client_is_what_the_limits_key_on(gateway):
    gateway.CONSTRUCT_REQUIRE_PAIRING = False
    gateway.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.1"]
    gateway.CONSTRUCT_SOCKET_RATE = None
    gateway.CONSTRUCT_MAX_SOCKETS_PER_TOKEN = 1

    def through_proxy(client):
        comm = communicator(query="session_id=s1", headers=[("x-forwarded-for", client)])
        comm.scope["client"] = ("10.0.0.1", 50000)
        return comm

    first = through_proxy("198.51.100.1")
    assert (await first.connect(timeout=10))[0]
    assert (await through_proxy("198.51.100.1").connect(timeout=10))[0] is False
    second = through_proxy("198.51.100.2")  # another person behind the same proxy
    assert (await second.connect(timeout=10))[0]
    for comm in (first, second):
        await comm.disconnect()
    await asyncio.sleep(0)
