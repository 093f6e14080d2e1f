"""Deltas that one piece of the response body brings leave as one: the text of a run of
events that came in one HTTP chunk is joined into one delta (chat/agent/providers/sse.py),
through the real SDKs and HTTP.

A server that sends one event per chunk gets a delta (and a `chunk` frame) per event;
one that packs several events into a chunk gets one delta for their text, same text,
same order.

The server is a plain HTTP/1.1 server on loopback that writes the body in the
chunks a test gives, waiting between them.
"""

import asyncio
import json

import pytest

from chat.agent.events import Chunk, Finish, Thinking
from chat.agent.providers.sse import joined_deltas
from construct_core.errors import ProviderError
from tests.providers.helpers import make_provider

pytestmark = pytest.mark.asyncio


def openai_event(content=None, reasoning=None, finish=None):
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"


def anthropic_event(event):
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def anthropic_text(text):
    return anthropic_event({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": text}})


ANTHROPIC_START = anthropic_event({
    "type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                         "content": [], "model": "mock-model", "stop_reason": None,
                                         "usage": {"input_tokens": 1, "output_tokens": 0}}}) + \
    anthropic_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
ANTHROPIC_END = anthropic_event({"type": "content_block_stop", "index": 0}) + anthropic_event(
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}) + \
    anthropic_event({"type": "message_stop"})


async def stream_from(kind, segments, pause=0.05):
    """The provider's events for a body written in `segments`, `pause` s apart; with the
    error, if the stream failed."""

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for segment in segments:
            data = segment.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            await asyncio.sleep(pause)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1" if kind == "openai" else f"http://127.0.0.1:{port}"
    provider = make_provider(kind, None, base_url=base_url, max_retries=0)
    events, error = [], None
    try:
        async with asyncio.timeout(30):
            async for event in provider.stream([{"role": "user", "content": "hi"}]):
                events.append(event)
    except ProviderError as exc:
        error = exc
    finally:
        await provider.aclose()
        server.close()
    return [e for e in events if isinstance(e, (Chunk, Thinking))], error


async def test_openai_events_read_together_become_one_delta_and_paced_ones_stay_apart():
    segments = [
        openai_event(reasoning="Let me ") + openai_event(reasoning="think. "),
        openai_event(content="a") + openai_event(content="b") + openai_event(content="c"),
        openai_event(content="d"),
        openai_event(content="e") + openai_event(finish="stop") + "data: [DONE]\n\n",
    ]
    deltas, error = await stream_from("openai", segments)
    assert error is None
    assert deltas == [Thinking("Let me think. "), Chunk("abc"), Chunk("d"), Chunk("e")]


async def test_anthropic_events_read_together_become_one_delta_and_paced_ones_stay_apart():
    segments = [ANTHROPIC_START, anthropic_text("x") + anthropic_text("y"), anthropic_text("z"),
                ANTHROPIC_END]
    deltas, error = await stream_from("anthropic", segments)
    assert error is None
    assert deltas == [Chunk("xy"), Chunk("z")]


async def test_text_read_together_with_a_malformed_event_still_counts_before_the_error():
    segments = [openai_event(content="kept ") + openai_event(content="too ") + "data: {not json\n\n",
                openai_event(content="never")]
    deltas, error = await stream_from("openai", segments)
    assert isinstance(error, ProviderError) and "malformed" in str(error)
    assert deltas == [Chunk("kept too ")]


async def test_a_thinking_run_and_a_text_run_read_together_keep_their_order():
    segments = [openai_event(reasoning="r1 ") + openai_event(content="t1 ") + openai_event(reasoning="r2 ")
                + openai_event(content="t2 ") + openai_event(content="t3 ")
                + openai_event(finish="stop") + "data: [DONE]\n\n"]
    deltas, error = await stream_from("openai", segments)
    assert error is None
    assert deltas == [Thinking("r1 "), Chunk("t1 "), Thinking("r2 "), Chunk("t2 t3 ")]


async def test_joined_deltas_joins_runs_of_one_kind_only():
    finish = Finish("stop")
    assert joined_deltas([]) == []
    assert joined_deltas([Chunk("a")]) == [Chunk("a")]
    assert joined_deltas([Chunk("a"), Chunk("b"), finish, Chunk("c")]) == [Chunk("ab"), finish, Chunk("c")]


async def test_body_reads_gives_what_arrived_while_the_reader_was_busy_and_closes_the_body():
    from contextlib import aclosing

    from chat.agent.providers.sse import body_reads

    arrived = asyncio.Event()
    closed = []

    async def body():
        try:
            yield b"a"
            yield b"b"  # the same network read: no wait between them
            yield b"c"
            await arrived.wait()  # the next read waits for the network
            yield b"d"
            await asyncio.sleep(3600)  # a model that went quiet
            yield b"never"
        finally:
            closed.append(True)

    async with aclosing(body_reads(body())) as reads:
        assert await anext(reads) == [b"a", b"b", b"c"]
        arrived.set()
        assert await anext(reads) == [b"d"]
        waiting = asyncio.ensure_future(anext(reads))
        await asyncio.sleep(0.05)
        waiting.cancel()  # a stopped turn
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert closed == [True]  # the body was closed by its reader's close, not left to GC


async def test_body_reads_raises_the_body_s_error_after_what_came_before_it():
    from chat.agent.providers.sse import body_reads

    async def body():
        yield b"x"
        await asyncio.sleep(0.01)
        raise ConnectionResetError("dropped")

    reads = body_reads(body())
    assert await anext(reads) == [b"x"]
    with pytest.raises(ConnectionResetError):
        await anext(reads)
