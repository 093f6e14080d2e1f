"""The socket fuzz of test_socket_fuzz.py, shorter, over a real daphne and a real client.

What only the wire shows: autobahn's framing, daphne's frame limits, the
replies as text frames. A text frame that is not UTF-8 at all cannot be part
of a program: autobahn fails such a connection at once (RFC 6455 8.1), which
tests/security/test_live.py checks on its own.
"""

import asyncio
import json
import os
import uuid

import pytest
from hypothesis import given, settings
from websockets.asyncio.client import connect

from tests.e2e.conftest import gateway_env, pair
from tests.fuzz.driver import play
from tests.fuzz.frames import echo, programs
from tests.security.live import db_rows

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CONSTRUCT_FUZZ_LIVE_EXAMPLES", "20"))
NO_LIMITS = {"CONSTRUCT_MESSAGE_RATE": "off", "CONSTRUCT_SOCKET_RATE": "off",
             "CONSTRUCT_MAX_SOCKETS_PER_TOKEN": "0"}


class Wire:
    def __init__(self, ws):
        self.ws = ws

    async def send_text(self, text):
        await self.ws.send(text)

    async def send_bytes(self, data):
        await self.ws.send(data)

    async def recv(self):
        message = await asyncio.wait_for(self.ws.recv(), 20)
        assert isinstance(message, str), "the server sent a binary frame"
        return message


@pytest.fixture
def daphne_gateway(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process, **NO_LIMITS))
    return server, pair(server), daphne_factory.database_url


@settings(settings.get_profile("socket-fuzz"), max_examples=EXAMPLES)
@given(program=programs(raw_surrogates=False, min_size=20, max_size=50))
async def test_hostile_frames_over_the_wire(daphne_gateway, program):
    server, token, database_url = daphne_gateway
    session_id = "fzl-" + uuid.uuid4().hex
    async with connect(f"{server.ws_url}/ws/chat?session_id={session_id}&token={token}",
                       max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session_start"
        played = await play(Wire(ws), program)
    # A new socket on the same session: the server still serves it.
    async with connect(f"{server.ws_url}/ws/chat?session_id={session_id}&token={token}") as ws:
        start = json.loads(await ws.recv())
        assert start["message_count"] == 2 * len(played.valid)
        await ws.send(json.dumps({"type": "message", "content": "still here"}))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] != "done":
            pass
    rows = db_rows(database_url, "SELECT role, content FROM sessions_app_message "
                                 "WHERE session_id = ? ORDER BY seq", (session_id,))
    assert rows == [row for content in [*played.valid, "still here"]
                    for row in (("user", content), ("assistant", echo(content)))]
    assert server.running()
