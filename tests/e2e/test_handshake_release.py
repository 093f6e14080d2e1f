"""Under daphne, an open socket lets its handshake's objects go (construct_site.daphne_tuning,
2. and 3.): the upgraded HTTP request, autobahn's copies of the handshake, the parsed request
(but its path), and daphne's queue is an Inbox; and the socket works on as before. Daphne
listens with a backlog of LISTEN_BACKLOG (4.), and writes at the end of the loop's round (5.)."""

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import websockets

from construct_site.daphne_tuning import LISTEN_BACKLOG, endpoint_with_backlog

APP = "tests.e2e.release_app:application"


@pytest.fixture
def release_server(daphne_factory):
    # No database: the app never touches one. The access log shows the paths daphne logs.
    return daphne_factory(env={"DATABASE_URL": None}, app=APP, run_migrate=False,
                          extra_args=["--access-log", "-"])


async def test_open_sockets_hold_no_handshake(release_server):
    async with websockets.connect(f"{release_server.ws_url}/ws/echo?token=abc") as echo, \
            websockets.connect(f"{release_server.ws_url}/ws/probe") as probe:
        await echo.send("hello")
        assert await echo.recv() == "5"
        # Daphne forgets a finished or upgraded HTTP request within a second (its checker).
        await asyncio.sleep(2.5)
        await probe.send("?")
        seen = json.loads(await probe.recv())
    assert len(seen["sockets"]) == 2
    for sock in seen["sockets"]:
        assert sock["producer"] == "NoneType"  # Twisted's HTTP channel is no longer the transport's producer
        assert sock["request"] == "OpenedRequest"
        assert sock["http_headers"] is None and sock["http_request_data"] is False
        assert sock["queue"] == "Inbox"
    assert sorted(sock["path"] for sock in seen["sockets"]) == ["/ws/echo", "/ws/probe"]
    assert seen["requests_alive"] == 0  # the upgraded requests are gone, not only unlinked
    assert seen["backlogs"] == [LISTEN_BACKLOG]  # daphne's own listening port, not Twisted's 50
    assert seen["writers"] == 0  # frames were sent without watching any socket for room


async def test_a_released_socket_works_on_and_closes_as_before(release_server):
    async with websockets.connect(f"{release_server.ws_url}/ws/echo") as ws:
        for size in (1, 1000, 70_000):  # the last one more than a socket's buffer takes at once
            await ws.send("x" * size)
            assert await ws.recv() == str(size)
        replies = await asyncio.gather(*(ws.send(str(n)) for n in range(50)))
        assert len(replies) == 50
        assert [await ws.recv() for _ in range(50)] == [str(len(str(n))) for n in range(50)]
    # The disconnect reached the application, and daphne's access line still names the path.
    assert release_server.wait_for_output("release_app: /ws/echo disconnected"), release_server.output()
    assert release_server.wait_for_output("WSDISCONNECT /ws/echo"), release_server.output()
    assert "Traceback" not in release_server.output()


@pytest.mark.parametrize("description, expected", [
    ("tcp:port=8000:interface=127.0.0.1", "tcp:port=8000:interface=127.0.0.1:backlog=1024"),
    (r"tcp6:port=8000:interface=\:\:1", r"tcp6:port=8000:interface=\:\:1:backlog=1024"),
    ("unix:/run/construct.sock", "unix:/run/construct.sock:backlog=1024"),
    ("tcp:port=8000:backlog=10", "tcp:port=8000:backlog=10"),  # the operator's own wins
    ("fd:fileno=3", "fd:fileno=3"),  # a socket listening already: its backlog is set
    ("ssl:port=8443:privateKey=k.pem", "ssl:port=8443:privateKey=k.pem"),  # left as given
])
def test_endpoints_get_the_backlog_unless_they_name_one(description, expected):
    assert endpoint_with_backlog(description, backlog=1024) == expected


def test_the_gateway_listens_with_the_backlog(daphne_factory):
    server = daphne_factory()  # the gateway itself (construct_site.asgi)
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True,
                               text=True, check=True).stdout.split()
    # For a listening socket, ss shows its backlog as Send-Q (the third column).
    assert listening[0] == "LISTEN" and int(listening[2]) == min(LISTEN_BACKLOG, somaxconn()), listening


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


@pytest.mark.parametrize("count, size", [(10, 900_000), (2_000, 100), (40, 300_000)])  # autobahn sends 1 MiB at most
async def test_frames_sent_at_the_round_s_end_arrive_whole_and_in_order(release_server, count, size):
    """Writes go out at the end of the loop's round (daphne_tuning 5.); what the kernel does
    not take at once (a frame larger than its buffer, a client slow to read) waits until
    the socket has room."""
    async with websockets.connect(f"{release_server.ws_url}/ws/echo", max_size=None) as ws, \
            websockets.connect(f"{release_server.ws_url}/ws/probe") as probe:
        await ws.send(f"frames {count} {size}")
        if size > 100_000:
            await asyncio.sleep(0.5)  # the client reads nothing for a while: the kernel fills up
        for n in range(count):
            frame = await asyncio.wait_for(ws.recv(), 10)
            assert len(frame) == size and frame.startswith(f"{n}:")
        await ws.send("still open")
        assert await ws.recv() == "10"
        await probe.send("?")
        assert json.loads(await probe.recv())["writers"] == 0  # nothing left to send, nothing watched


def test_release_patches_are_idempotent():
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    from construct_site.daphne_tuning import (patch_daphne_handshake_release, patch_daphne_inbox,
                                              patch_twisted_writes)

    def patches():
        patch_daphne_handshake_release()
        patch_daphne_inbox()
        patch_twisted_writes()
        return (WebSocketProtocol.onOpen, Server.create_application, AsyncioSelectorReactor.addWriter,
                AsyncioSelectorReactor.removeWriter)

    assert patches() == patches()
