"""A provider that fails in any of its usual ways ends the turn cleanly, on both wire formats.

Each fault must end the turn with an `error` frame of the right code, leave the
session in state "error" with the user's message saved, and leave the socket
ready for the next message. The mock LLM fails on command over real HTTP, so
the SDKs' own retries and timeouts are part of what is tested.
"""

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import ChatSession, Message
from tests.chat.conftest import frames_until, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)

FAULTS = [
    # (directive, code, requests the provider sees: the SDKs retry 429 and 5xx twice)
    ("[[fail=500]]", "PROVIDER_ERROR", 3),
    ("[[fail=503]]", "PROVIDER_ERROR", 3),
    ("[[fail=429]]", "PROVIDER_ERROR", 3),
    ("[[fail=401]]", "AUTH_ERROR", 1),
    ("[[hang]] [[chunks=5]]", "PROVIDER_ERROR", 1),
    ("[[reset_after=3]] [[chunks=8]]", "PROVIDER_ERROR", 1),
    ("[[malformed]] [[chunks=8]]", "PROVIDER_ERROR", 1),
]


@pytest.fixture(params=["openai", "anthropic"])
def provider(request, gateway, clean_mock_llm):
    gateway.CONSTRUCT_PROVIDER = request.param
    gateway.CONSTRUCT_BASE_URL = (
        clean_mock_llm.openai_url if request.param == "openai" else clean_mock_llm.anthropic_url
    )
    # [[hang]] goes quiet after one chunk: the read timeout must end it, quickly.
    gateway.CONSTRUCT_PROVIDER_TIMEOUT = 0.5
    return request.param


@database_sync_to_async
def session_state(session_id):
    session = ChatSession.objects.get(pk=session_id)
    messages = list(Message.objects.filter(session_id=session_id).order_by("seq")
                    .values_list("role", "content", "data"))
    return session.state, messages


@pytest.mark.parametrize("directive, code, requests", FAULTS)
async def test_provider_fault_ends_the_turn_cleanly(provider, token, clean_mock_llm,
                                                    directive, code, requests):
    comm, _ = await open_socket(token, query="session_id=fault")
    await send(comm, type="message", content=directive)
    frames = await frames_until(comm, timeout=20)

    error = frames[-1]
    assert error["type"] == "error" and error["code"] == code, frames
    assert error["message"] and len(error["message"]) <= 500
    assert "turn_id" in error and "seq" in error
    state, messages = await session_state("fault")
    assert state == "error"
    assert messages[0][:2] == ("user", directive)
    streamed = "".join(f["content"] for f in frames if f["type"] == "chunk")
    if streamed:  # what was streamed before the fault is kept, marked
        assert messages[1] == ("assistant", streamed, {"error": code, "model": "mock-model"})
    else:
        assert len(messages) == 1
    path = "/chat/completions" if provider == "openai" else "/messages"
    assert len(clean_mock_llm.requests(path)) == requests

    # The socket and the session carry on.
    await send(comm, type="message", content="and now?")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done" and frames[-1]["full_response"] == "Echo: and now?"
    state, messages = await session_state("fault")
    assert state == "idle"
    assert [m[:2] for m in messages[-2:]] == [("user", "and now?"), ("assistant", "Echo: and now?")]
    await comm.disconnect()


async def test_reset_mid_stream_keeps_exactly_what_was_streamed(provider, token):
    comm, _ = await open_socket(token, query="session_id=reset")
    await send(comm, type="message", content="[[reset_after=3]] [[chunks=8]]")
    frames = await frames_until(comm)
    # Deltas read together leave as one chunk: the text counts.
    chunks = [f["content"] for f in frames if f["type"] == "chunk"]
    assert "".join(chunks) == "tok1 tok2 tok3 "
    assert frames[-1]["code"] == "PROVIDER_ERROR"
    _state, messages = await session_state("reset")
    assert messages[1][1] == "tok1 tok2 tok3 "
    await comm.disconnect()
