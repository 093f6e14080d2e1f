"""Adaptive coalescing: deltas that arrive in one read leave as one `chunk`; a lone delta at once.

The provider is a real loopback HTTP server speaking the Chat Completions SSE
format, which controls how its deltas are written: many in one write (the turn
gets them back to back, as when the process falls behind) or each in its own
write 20 ms apart (a process that keeps up). The sinks are plain objects, as in
test_turn_engine.
"""

import asyncio
import json
import statistics
import time

import pytest
from channels.db import database_sync_to_async

from chat import turns
from sessions_app import services
from sessions_app.models import Message
from tests.chat.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def event(delta: dict, finish=None) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


END = event({}, "stop") + b"data: [DONE]\n\n"


class SSEServer:
    """One reply per request; `script(writer)` writes its SSE body (an async function)."""

    def __init__(self, script):
        self.script = script
        self.server = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"connection: close\r\n\r\n")
        await writer.drain()
        try:
            await self.script(writer)
        finally:
            writer.close()


class Sink:
    """A socket as the engine sees it, with each frame's arrival time."""

    def __init__(self):
        self.frames = []
        self.times = []

    async def send_text(self, text):
        self.times.append(time.monotonic())
        self.frames.append(json.loads(text))

    def chunks(self):
        return [frame for frame in self.frames if frame["type"] == "chunk"]

    def text(self):
        return "".join(frame["content"] for frame in self.chunks())


@pytest.fixture
def provider_at(gateway):
    def point(url):
        gateway.CONSTRUCT_BASE_URL = url
    return point


async def join(session_id):
    owner = (await database_sync_to_async(services.default_owner)()).pk
    return await turns.session_join(session_id=session_id, user_id=owner, sink=Sink())


async def test_deltas_written_at_once_leave_in_fewer_chunks_whole_and_in_order(provider_at):
    first = [f"a{i} " for i in range(300)]
    second = [f"b{i} " for i in range(300)]
    go_on = asyncio.Event()

    async def script(writer):
        writer.write(b"".join(event({"content": text}) for text in first))  # one write
        await writer.drain()
        await go_on.wait()
        writer.write(b"".join(event({"content": text}) for text in second) + END)
        await writer.drain()

    async with SSEServer(script) as server:
        provider_at(server.url)
        watcher = await join("burst")
        await turns.message_submit(watcher, content="hello")

        async def first_part_sent():
            return watcher.sink.text() == "".join(first)

        await wait_for(first_part_sent)
        late = await join("burst")  # joins mid-turn: replayed what it missed
        go_on.set()

        async def ended():
            return "done" in [frame["type"] for frame in late.sink.frames]

        await wait_for(ended, timeout=20)

    events = [frame for frame in watcher.sink.frames if frame["type"] != "session_start"]
    chunks = watcher.sink.chunks()
    whole = "".join(first + second)
    assert len(chunks) < (len(first) + len(second)) // 10, len(chunks)
    assert watcher.sink.text() == whole
    assert events[-1]["type"] == "done" and events[-1]["full_response"] == whole
    assert [frame["seq"] for frame in events] == list(range(1, len(events) + 1))
    # The late joiner: the same frames, replayed then live, nothing twice, nothing missing.
    assert late.sink.frames[0]["type"] == "session_start"
    assert late.sink.frames[1:] == events
    saved = await database_sync_to_async(
        lambda: list(Message.objects.filter(session_id="burst", role="assistant")
                     .values_list("content", flat=True)))()
    assert saved == [whole]
    await turns.session_leave(late)
    await turns.session_leave(watcher)


async def test_deltas_written_apart_leave_one_by_one_with_no_delay(provider_at):
    deltas = [f"p{i} " for i in range(15)]
    written = []

    async def script(writer):
        for text in deltas:
            writer.write(event({"content": text}))
            await writer.drain()
            written.append(time.monotonic())
            await asyncio.sleep(0.02)
        writer.write(END)
        await writer.drain()

    async with SSEServer(script) as server:
        provider_at(server.url)
        watcher = await join("paced")
        await turns.message_submit(watcher, content="hello")

        async def ended():
            return "done" in [frame["type"] for frame in watcher.sink.frames]

        await wait_for(ended, timeout=20)

    chunk_times = [t for frame, t in zip(watcher.sink.frames, watcher.sink.times)
                   if frame["type"] == "chunk"]
    assert [frame["content"] for frame in watcher.sink.chunks()] == deltas
    added = [(arrived - wrote) * 1000 for arrived, wrote in zip(chunk_times, written)]
    assert statistics.median(added) < 15, added
    await turns.session_leave(watcher)
