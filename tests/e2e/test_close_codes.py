"""Under daphne, server close codes and oversized frames behave as the contract says.

Autobahn refuses 1011 on its application path. Unpatched, daphne then
crashes the application, logs a traceback and, about a second later, closes
every such socket with 1011 whatever code was asked for. With
construct_site.daphne_compat the asked-for code goes out at once and the
application carries on. Likewise daphne's 1 MiB transport cap would drop a
socket the application means to answer with MESSAGE_TOO_LARGE. Only a real
daphne shows either difference.
"""


import pytest
import websockets

from tests.e2e.close_app import APP_FRAME_LIMIT, CLEAN_CLOSE_MARK, ERROR_FRAME

APP = "tests.e2e.close_app:application"


@pytest.fixture
def close_server(daphne_factory):
    # No database: the app never touches one.
    return daphne_factory(env={"DATABASE_URL": None}, app=APP, run_migrate=False)


@pytest.mark.parametrize("code", [1011, 1001, 1008, 1013, 1000, 4000])
async def test_error_frame_then_close_code(close_server, code):
    async with websockets.connect(f"{close_server.ws_url}/ws/test?{code}") as ws:
        assert await ws.recv() == ERROR_FRAME
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == code, close_server.output()
    assert close_server.wait_for_output(f"{CLEAN_CLOSE_MARK} {code}"), close_server.output()
    assert "Exception inside application" not in close_server.output()


def test_patches_are_idempotent():
    from daphne.ws_protocol import WebSocketProtocol

    from construct_site.daphne_compat import patch_daphne_close_codes, patch_daphne_message_limit

    patch_daphne_close_codes()
    patch_daphne_message_limit(APP_FRAME_LIMIT)
    patched = WebSocketProtocol.serverClose, WebSocketProtocol.onConnect
    patch_daphne_close_codes()
    patch_daphne_message_limit(APP_FRAME_LIMIT)
    assert (WebSocketProtocol.serverClose, WebSocketProtocol.onConnect) == patched


async def test_frames_over_the_app_limit_reach_the_app(close_server):
    # The app answers "too large" itself, so daphne must hand such frames over.
    size = APP_FRAME_LIMIT + 100_000
    async with websockets.connect(f"{close_server.ws_url}/ws/echo") as ws:
        await ws.send("x" * size)
        assert await ws.recv() == str(size)
        await ws.send("still open")
        assert await ws.recv() == "10"


async def test_the_server_sends_messages_over_the_transport_limit_whole(close_server):
    # The limit bounds what a client sends; a long session's history frame may be larger.
    size = APP_FRAME_LIMIT * 6
    async with websockets.connect(f"{close_server.ws_url}/ws/echo", max_size=None) as ws:
        await ws.send(f"send {size}")
        assert len(await ws.recv()) == size
        await ws.send("still open")
        assert await ws.recv() == "10"
    assert "Exception inside application" not in close_server.output()


async def test_frames_far_over_the_limit_drop_the_socket(close_server):
    # Past the transport limit autobahn fails the connection (1009, then a
    # dropped TCP connection, so the client may see either): memory stays bounded.
    async with websockets.connect(f"{close_server.ws_url}/ws/echo") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.send("x" * (APP_FRAME_LIMIT * 4 + 1))
            await ws.recv()
