"""A provider keeps its connections: more than 100 replies at once, then as many again,
open no new connection (the SDKs' own pool kept only 100 idle; the rest were closed
as each reply ended and opened again for the next turns: a connect and a TLS
handshake per turn).

The server here is a plain HTTP/1.1 server on loopback that counts the
connections it accepts and holds every reply until all of a wave's requests
came, so the wave really has them all open at once.
"""

import asyncio
import json

import pytest

from chat.agent.events import Chunk
from tests.providers.helpers import make_provider

pytestmark = pytest.mark.asyncio

WAVE = 150  # more than the 100 idle connections the SDKs keep by default


def _sse(events):
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events)


BODIES = {
    "openai": _sse([{"choices": [{"index": 0, "delta": {"content": "hi"}}]},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]) + "data: [DONE]\n\n",
    "anthropic": _sse([
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                              "content": [], "model": "mock-model", "stop_reason": None,
                                              "usage": {"input_tokens": 1, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]),
}


class CountingServer:
    def __init__(self, body: str):
        self.body = body.encode()
        self.connections = 0
        self.waiting: list[asyncio.Future] = []
        self.wave = WAVE

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                arrived = asyncio.get_running_loop().create_future()
                self.waiting.append(arrived)
                if len(self.waiting) >= self.wave:  # the whole wave is open: answer them all
                    for future in self.waiting:
                        future.done() or future.set_result(None)
                    self.waiting = []
                await arrived
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"content-length: %d\r\n\r\n" % len(self.body) + self.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_second_wave_of_replies_opens_no_new_connection(kind):
    server = CountingServer(BODIES[kind])
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=512)
    port = listener.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1" if kind == "openai" else f"http://127.0.0.1:{port}"
    provider = make_provider(kind, None, base_url=base_url, max_retries=0)

    async def reply():
        events = [event async for event in provider.stream([{"role": "user", "content": "hello"}])]
        return "".join(event.text for event in events if isinstance(event, Chunk))

    try:
        async with asyncio.timeout(60):
            assert await asyncio.gather(*(reply() for _ in range(WAVE))) == ["hi"] * WAVE
            assert server.connections == WAVE
            assert await asyncio.gather(*(reply() for _ in range(WAVE))) == ["hi"] * WAVE
        assert server.connections == WAVE  # every connection of the first wave was kept
    finally:
        await provider.aclose()
        listener.close()
