"""bench/load.py's client: deltas counted by their stamps, whatever the frames, and checked."""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import Turn  # noqa: E402
from wsclient import HandshakeError, open_socket  # noqa: E402


def stamps(*times):
    return "".join(f"<t:{t:.6f}> " for t in times)


def chunk(content, **extra):
    return json.dumps({"type": "chunk", "content": content, **extra})


def done(full):
    return json.dumps({"type": "done", "full_response": full})


def feed(turn, *frames, now=1000.0):
    for frame in frames:
        turn.on_text(frame, now)


def test_deltas_joined_in_one_frame_count_one_by_one():
    turn = Turn(4, lambda: None)
    text = stamps(1.0, 1.1, 1.2, 1.3)
    feed(turn, chunk(stamps(1.0, 1.1, 1.2)), chunk(stamps(1.3)), done(text))
    assert (turn.deltas, turn.frames, turn.whole) == (4, 2, True)
    assert turn.latencies == pytest.approx([999.0, 998.9, 998.8, 998.7])


def test_a_delta_cut_between_frames_counts_once_when_whole():
    turn = Turn(2, lambda: None)
    text = stamps(1.0, 2.0)
    feed(turn, chunk(text[:5]), chunk(text[5:30]), chunk(text[30:]), done(text))
    assert (turn.deltas, turn.whole) == (2, True)


def test_missing_garbled_and_out_of_order_deltas_are_not_whole():
    lost = Turn(3, lambda: None)
    feed(lost, chunk(stamps(1.0, 1.1)), done(stamps(1.0, 1.1)))
    assert (lost.deltas, lost.whole) == (2, False)

    garbled = Turn(2, lambda: None)
    feed(garbled, chunk(stamps(1.0) + "tok "), chunk(stamps(1.1)), done(stamps(1.0) + "tok " + stamps(1.1)))
    assert garbled.corrupt and not garbled.whole

    swapped = Turn(2, lambda: None)
    feed(swapped, chunk(stamps(2.0)), chunk(stamps(1.0)), done(stamps(2.0, 1.0)))
    assert swapped.out_of_order == 1 and not swapped.whole

    differs = Turn(1, lambda: None)
    feed(differs, chunk(stamps(1.0)), done(stamps(1.5)))
    assert differs.corrupt and not differs.whole


def test_a_gap_in_seq_is_not_whole():
    turn = Turn(2, lambda: None)
    text = stamps(1.0, 1.1)
    feed(turn, chunk(stamps(1.0), seq=1), chunk(stamps(1.1), seq=3),
         json.dumps({"type": "done", "full_response": text, "seq": 4}))
    assert turn.seq_gaps == 1 and not turn.whole


async def test_lean_client_reads_fragmented_text_and_answers_pings():
    async def handler(ws):
        await ws.send(json.dumps({"type": "session_start"}))
        message = json.loads(await ws.recv())
        assert message == {"type": "message", "content": "hi"}
        await ws.ping(b"p")
        await ws.send(iter([chunk(stamps(1.0))[:10], chunk(stamps(1.0))[10:]]))  # two fragments
        await ws.send(chunk(stamps(1.1)))
        await ws.send(done(stamps(1.0, 1.1)))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await open_socket(f"ws://127.0.0.1:{port}/", {"X-Test": "1"})
        assert json.loads(ws.greeted.result())["type"] == "session_start"
        finished = asyncio.Event()
        turn = Turn(2, finished.set)
        ws.on_text = turn.on_text
        ws.send_text(json.dumps({"type": "message", "content": "hi"}))
        await asyncio.wait_for(finished.wait(), 10)
        ws.close()
        await asyncio.wait_for(ws.closed, 10)
    assert (turn.deltas, turn.frames, turn.whole) == (2, 2, True)


async def test_lean_client_reports_a_refused_upgrade():
    async def handler(ws):
        await ws.close()

    async def refuse(connection, request):
        return connection.respond(403, "no\n")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeError):
            await open_socket(f"ws://127.0.0.1:{port}/", timeout=10)
