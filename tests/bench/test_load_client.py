"""bench/load.py's client: deltas counted by their stamps, whatever the frames, and checked."""

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import Turn, stream_round  # noqa: E402
from servers import Target  # noqa: E402
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


class Idle:
    """A server process as stream_round sees it, using no CPU."""

    def cpu_seconds(self):
        return 0.0


@pytest.mark.parametrize("dropped", [None, 2])
async def test_a_watching_process_counts_the_same_deltas_and_how_late_they_came(dropped):
    """Two fake gateway processes: A streams each answer to the socket that asked, B to the
    other socket of the session 30 ms later, without delta `dropped` (then B lost it, A not)."""
    watching = {}

    async def greet(ws):
        session_id = parse_qs(urlsplit(ws.request.path).query)["session_id"][0]
        await ws.send(json.dumps({"type": "session_start", "session_id": session_id}))
        return session_id

    async def process_a(ws):
        session_id = await greet(ws)
        later: asyncio.Queue = asyncio.Queue()
        forward = asyncio.create_task(process_b_sends(session_id, later))
        async for text in ws:
            count = int(re.search(r"chunks=(\d+)", json.loads(text)["content"]).group(1))
            full = ""
            for seq in range(1, count + 1):
                delta = f"<t:{time.time():.6f}> "
                full += delta
                frame = chunk(delta, seq=seq)
                await ws.send(frame)
                if seq != dropped:
                    later.put_nowait((time.monotonic() + 0.03, frame))
                await asyncio.sleep(0.005)
            frame = json.dumps({"type": "done", "full_response": full, "seq": count + 1})
            await ws.send(frame)
            later.put_nowait((time.monotonic() + 0.03, frame))
        forward.cancel()

    async def process_b_sends(session_id, later):
        while True:
            due, frame = await later.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            for ws in watching.get(session_id, ()):
                await ws.send(frame)

    async def process_b(ws):
        session_id = await greet(ws)
        watching.setdefault(session_id, []).append(ws)
        await ws.wait_closed()

    async with serve(process_a, "127.0.0.1", 0) as a, serve(process_b, "127.0.0.1", 0) as b:
        sender, watcher = (Target(kind, Idle(), f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/chat", {})
                           for kind, server in (("proc_a", a), ("proc_b", b)))
        result = await stream_round(sender, "t", 3, 5, Idle(), delay_ms=5, watcher=watcher, timeout=20)

    assert (result.deltas, result.nothing_lost) == (15, True)
    watched = result.watched
    assert watched.kind == "proc_b" and len(watched.turns) == 3
    if dropped is None:
        assert (watched.deltas, watched.nothing_lost) == (15, True)
        assert len(result.cross) == 15
        assert all(0.02 < late < 1.0 for late in result.cross)
    else:
        assert (watched.deltas, watched.broken_turns, watched.nothing_lost) == (12, 3, False)
        assert "seq gaps 3" in watched.problems()
        assert result.cross == []  # only deltas whole on both sockets of their session count
