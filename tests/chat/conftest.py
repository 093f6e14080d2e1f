"""Fixtures for the chat socket's tests: a gateway pointed at the loopback mock LLM."""

import asyncio
import json

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from tests.factories import make_device
from tests.support.fixtures_mock import mock_llm  # noqa: F401  (a fixture)

FAKE_KEY = "sk-test-SECRETKEY0123456789abcdef"
TERMINAL = ("done", "error", "stopped")


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test's event loop gets its own layer (the in-process one is bound to a loop)."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def gateway(settings, mock_llm, tmp_path):  # noqa: F811
    settings.CONSTRUCT_PROVIDER = "openai"
    settings.CONSTRUCT_BASE_URL = mock_llm.openai_url
    settings.CONSTRUCT_API_KEY = FAKE_KEY
    settings.CONSTRUCT_MODEL = "mock-model"
    settings.CONSTRUCT_REQUIRE_PAIRING = True
    settings.CONSTRUCT_WORKSPACE = tmp_path
    settings.CONSTRUCT_SESSION_QUEUE_TIMEOUT = 30
    settings.CONSTRUCT_SESSION_QUEUE_DEPTH = 8
    return settings


@pytest.fixture
def token(db):
    _device, token = make_device(name="test device")
    return token


def communicator(path="/ws/chat", *, token=None, query="", headers=(), subprotocols=None):
    from construct_site.routing import application

    params = [p for p in (query, f"token={token}" if token else "") if p]
    url = path + ("?" + "&".join(params) if params else "")
    headers = [(k.encode(), v.encode()) for k, v in headers]
    return WebsocketCommunicator(application, url, headers=headers, subprotocols=subprotocols)


async def open_socket(token, query="session_id=s1", **kwargs):
    comm = communicator(token=token, query=query, **kwargs)
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected, "the socket was refused"
    start = await comm.receive_json_from(timeout=10)
    assert start["type"] == "session_start"
    return comm, start


OPERATOR_EVENT_TYPES = ("agent_start", "agent_end", "error")


def is_operator_event(frame: dict) -> bool:
    """A turn's start, end or error as every socket of its user hears it (not a channel event)."""
    event = frame.get("event") if frame.get("type") == "agent_event" else None
    return isinstance(event, dict) and event.get("type") in OPERATOR_EVENT_TYPES and "turn_id" in event


async def next_frame(comm, timeout=10) -> dict:
    """The next frame that is not an operator event (those may come at any time)."""
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        if not is_operator_event(frame):
            return frame


async def nothing_more(comm, timeout=0.3) -> bool:
    """Whether nothing but operator events arrives within `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        if await comm.receive_nothing(timeout=left):
            return True
        if not is_operator_event(await comm.receive_json_from()):
            return False
    return True


async def frames_until(comm, types=TERMINAL, timeout=15) -> list[dict]:
    """Every frame up to and including the first whose type is in `types`.

    Operator events (this user's turns starting and ending) may come between a
    turn's frames at any time; they are left out unless `types` asks for `agent_event`.
    """
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        if is_operator_event(frame) and "agent_event" not in types:
            continue
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def send(comm, **frame):
    await comm.send_to(text_data=json.dumps(frame))


async def wait_for(predicate, timeout=10.0):
    """Poll an async predicate until true (for state that settles after a frame)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await predicate():
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
