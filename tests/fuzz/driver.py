"""Plays a program of frames on one socket and checks every reply against the oracle.

`conn` is anything with `async send_text(str)`, `async send_bytes(bytes)` and
`async recv() -> str` (a WebsocketCommunicator or a real WebSocket, wrapped).
"""

import itertools
import json

from tests.fuzz.frames import check_frame, echo, expect

_ids = itertools.count(1)


class Played:
    """What a program did: the valid messages the session must now hold, and the frame count."""

    def __init__(self):
        self.valid: list[str] = []
        self.frames_sent = 0
        self.replies = 0


async def play(conn, program) -> Played:
    played = Played()
    pending_turns: list[str] = []  # contents whose `done` has not arrived yet
    last_with_id = None

    async def next_frame() -> dict:
        frame = check_frame(await conn.recv())
        played.replies += 1
        if frame["type"] == "done":
            assert pending_turns, f"a done nobody asked for: {frame}"
            assert frame["full_response"] == echo(pending_turns.pop(0)), frame
        elif frame["type"] == "error" and "turn_id" in frame:
            raise AssertionError(f"a valid message's turn failed: {frame}")
        return frame

    async def reply(predicate) -> dict:
        """Read (checking turn events on the way) up to the frame `predicate` accepts."""
        while True:
            frame = await next_frame()
            if predicate(frame):
                return frame

    for step in program:
        kind = step[0]
        if kind == "resend":
            if last_with_id is None:
                continue
            content, client_id = last_with_id
            await conn.send_text(_message(content, client_id))
            ack = await reply(lambda f: f["type"] == "ack")
            assert ack == {"type": "ack", "client_id": client_id, "duplicate": True}
        elif kind == "valid":
            _, content, with_id = step
            while pending_turns:  # one turn at a time keeps the session's queue out of it
                await next_frame()
            client_id = f"fz-{next(_ids)}" if with_id else None
            await conn.send_text(_message(content, client_id))
            pending_turns.append(content)
            played.valid.append(content)
            if client_id is not None:
                ack = await reply(lambda f: f["type"] == "ack")
                assert ack == {"type": "ack", "client_id": client_id, "duplicate": False}
                last_with_id = (content, client_id)
        else:
            outcome, detail = expect(step)
            if kind == "bytes":
                await conn.send_bytes(step[1])
            else:
                await conn.send_text(step[1])
            if outcome == "valid":  # a hostile-looking frame that is a fine message after all
                content, client_id = detail
                pending_turns.append(content)
                played.valid.append(content)
                if client_id is not None:
                    ack = await reply(lambda f: f["type"] == "ack")
                    if ack["duplicate"]:  # a random id the session had seen: not run again
                        pending_turns.pop()
                        played.valid.pop()
                while pending_turns:
                    await next_frame()
            else:
                error = await reply(lambda f: f["type"] == "error" and "turn_id" not in f)
                assert error["code"] == detail, (step[1][:200] if kind == "text" else step, error)
        played.frames_sent += 1
    while pending_turns:
        await next_frame()
    return played


def _message(content, client_id) -> str:
    frame = {"type": "message", "content": content}
    if client_id is not None:
        frame["client_id"] = client_id
    return json.dumps(frame)
