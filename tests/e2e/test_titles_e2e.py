"""A chat's title from its model, over the wire: real daphne, real sockets, the mock LLM process.

After a chat's first answer the gateway asks the chat's model for a title (a
call with no tools, which the mock answers by `[[side_reply=...]]`, or fails by
`[[side_fail=CODE]]`); the title becomes the chat's name unless a person
renamed it first, and every socket of the session hears `session_name`.
"""

import asyncio
import contextlib
import json
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from sessions_app.services import title_of
from tests.conftest import DaphneFactory
from tests.e2e.conftest import FAKE_KEY, gateway_env, pair
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url


@pytest.fixture(scope="module")
def titled(tmp_path_factory, mock_llm_process):
    """A gateway whose chats get their model's title (the suite turns that off elsewhere)."""
    with contextlib.ExitStack() as stack:
        factory = DaphneFactory(tmp_path_factory.mktemp("titles"), stack)
        try:
            server = factory(env=gateway_env(mock_llm_process, CONSTRUCT_AUTO_TITLE="true"))
            yield server, pair(server), mock_llm_process
        finally:
            for server in factory.servers:
                server.kill()


def rest(server, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def title_calls(mock, marker):
    """The mock's requests with no tools (title calls) about a question holding `marker`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mock.port}/_mock/requests", timeout=5) as response:
        entries = json.loads(response.read())
    return [entry for entry in entries if not entry.get("tools") and marker in json.dumps(entry)]


async def next_of(ws, kind, timeout=15):
    """Frames up to the first of type `kind`; fails on an `error` frame on the way."""
    frames = await frames_until(ws, types=(kind, "error"), timeout=timeout)
    assert frames[-1]["type"] == kind, frames[-1]
    return frames


async def quiet(ws, seconds):
    """The frames (operator events aside) that come within `seconds`."""
    frames = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] != "agent_event":
                    frames.append(frame)
    return frames


async def test_the_models_title_reaches_every_socket_and_the_rest_api(titled):
    server, token, mock = titled
    question = "Plan the **garden** party for Saturday [[side_reply=Garden party plans]]"
    async with connect(ws_url(server, "title-1", token=token)) as first, \
            connect(ws_url(server, "title-1", token=token)) as second:
        await session_start(first)
        await session_start(second)
        await first.send(json.dumps({"type": "message", "content": question}))

        turn = await next_of(first, "done")
        # `done` first, without the title; the first message's title is already the name.
        assert not any(frame["type"] == "session_name" for frame in turn)
        assert turn[-1]["full_response"] == "Echo: Plan the **garden** party for Saturday"
        named = (await next_of(first, "session_name"))[-1]
        assert named == {"type": "session_name", "session_id": "title-1", "name": "Garden party plans"}
        assert (await next_of(second, "session_name"))[-1] == named

    assert rest(server, token, "GET", "/api/sessions/title-1/")["name"] == "Garden party plans"
    # A socket that joins later gets the name in session_start.
    async with connect(ws_url(server, "title-1", token=token)) as later:
        assert (await session_start(later))["name"] == "Garden party plans"
    # One call with no tools, shown the question (cut short), recorded like the turn's own.
    calls = title_calls(mock, "garden** party for Saturday")
    assert len(calls) == 1 and calls[0]["messages"][0]["role"] == "system"
    assert rest(server, token, "GET", "/api/cost/")["request_count"] == 2


async def test_a_rename_before_the_title_arrives_is_kept(titled):
    server, token, mock = titled
    # The title comes slowly (several chunks, 700 ms apart): the rename lands first.
    question = "Slow one [[delay_ms=700]] [[side_reply=A title that comes too late]]"
    async with connect(ws_url(server, "title-2", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": question}))
        await next_of(ws, "done")
        assert rest(server, token, "PATCH", "/api/sessions/title-2/", {"name": "My own name"})["name"] \
            == "My own name"
        deadline = time.monotonic() + 20
        while not title_calls(mock, "Slow one") or \
                rest(server, token, "GET", "/api/cost/")["request_count"] < 2:
            assert time.monotonic() < deadline, "the title call was never made"
            await asyncio.sleep(0.2)
        # The title was had (its usage is recorded just before it would be set): no frame comes.
        assert [frame for frame in await quiet(ws, 1.5) if frame["type"] == "session_name"] == []
    assert rest(server, token, "GET", "/api/sessions/title-2/")["name"] == "My own name"


async def test_a_failed_title_call_keeps_the_first_messages_title_and_tells_no_client(titled):
    server, token, mock = titled
    question = "Budget for the trip [[side_fail=500]]"
    async with connect(ws_url(server, "title-3", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": question}))
        assert (await next_of(ws, "done"))[-1]["full_response"] == "Echo: Budget for the trip"
        deadline = time.monotonic() + 20
        # The SDK tries three times (two retries) before it gives up.
        while len(title_calls(mock, "Budget for the trip")) < 3:
            assert time.monotonic() < deadline, "the title call was never made"
            await asyncio.sleep(0.2)
        assert await quiet(ws, 1.5) == []  # neither an error nor a name
    assert rest(server, token, "GET", "/api/sessions/title-3/")["name"] == title_of(question)
    deadline = time.monotonic() + 10
    while "no title from model" not in server.output():
        assert time.monotonic() < deadline, "the failure was not logged"
        await asyncio.sleep(0.2)
    assert FAKE_KEY not in server.output()
