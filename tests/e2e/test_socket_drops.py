"""Sockets dropped at random points of many turns, over the wire: no turn dies of it.

A soak found turns ending in AGENT_ERROR when a socket's transport closed
before the server noticed the socket had left: the failed send reached the
turn. Here each turn's sender drops its TCP connection at a random point while
a second socket watches the session: every turn must end with `done` and its
whole text, on the watcher, and the session must end idle.
"""

import asyncio
import json
import random
import urllib.request

from websockets.asyncio.client import connect

from tests.e2e.conftest import gateway_env, pair
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url

TURNS = 30
DROPPERS = 4  # sockets per turn that drop at random points


async def _drop_at_random(server, token, rng, chunks):
    sockets = []
    for _ in range(DROPPERS):
        # An unbounded queue keeps the client reading, so it sees the server's close frame
        # at once instead of stalling behind unread chunks.
        socket = await connect(ws_url(server, "drops", token=token), max_queue=None, close_timeout=5)
        await session_start(socket)
        sockets.append((socket, rng.randint(0, chunks + 3)))
    return sockets


async def _read_then_leave(socket, count, graceful):
    for _ in range(count):
        try:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 5))
        except Exception:
            break
        if frame.get("type") in ("done", "error", "stopped"):
            break  # the turn is over: nothing more comes before the next one, so leave now
    if graceful:
        # A close handshake: until its TCP connection ends, a send on it raises in the server.
        await socket.close()
    else:
        socket.transport.abort()  # no handshake: the server finds out on its next send


async def test_turns_survive_sockets_dropping_at_random_points(daphne_factory, mock_llm_process):
    # Five sockets a turn for 30 turns: past the per-device socket rate.
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_SOCKET_RATE="off",
                                            CONSTRUCT_MESSAGE_RATE="off"))
    token = pair(server)
    rng = random.Random(4242)
    async with connect(ws_url(server, "drops", token=token)) as watcher:
        await session_start(watcher)
        for index in range(TURNS):
            chunks = rng.randint(20, 200)
            droppers = await _drop_at_random(server, token, rng, chunks)
            sender = droppers[0][0]
            await sender.send(json.dumps({"type": "message", "content": f"[[chunks={chunks}]] turn {index}"}))
            await asyncio.gather(*(_read_then_leave(socket, count, rng.random() < 0.7)
                                   for socket, count in droppers))
            frames = await frames_until(watcher, timeout=30)
            assert frames[-1]["type"] == "done", frames[-1]
            assert frames[-1]["full_response"].count("tok") == chunks
            seqs = [frame["seq"] for frame in frames]
            assert seqs == list(range(1, len(seqs) + 1))
    request = urllib.request.Request(server.url + "/api/sessions/drops/",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        session = json.loads(response.read())
    assert session["state"] == "idle" and session["message_count"] == 2 * TURNS
