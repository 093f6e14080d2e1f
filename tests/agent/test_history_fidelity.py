"""What a turn saves comes back to the provider whole: cut-off replies marked as such,
Anthropic's thinking blocks unchanged. Over a real chat socket, against the loopback mock."""

import pytest
from channels.db import database_sync_to_async

from chat.agent.providers.base import CUT_OFF_MARK
from sessions_app.models import Message
from tests.agent.conftest import tool
from tests.chat.conftest import frames_until, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def saved(session_id="s1"):
    return list(Message.objects.filter(session_id=session_id).order_by("seq").values_list("role", "content", "data"))


def assistant_texts(body):
    """The text of each assistant message of a request, in either wire format."""
    texts = []
    for message in body["messages"]:
        if message["role"] != "assistant":
            continue
        content = message["content"]
        if isinstance(content, list):
            content = "".join(block.get("text", "") for block in content if block["type"] == "text")
        texts.append(content)
    return texts


def model_requests(mock_llm, provider):
    return mock_llm.requests("/chat/completions" if provider == "openai" else "/messages")


async def test_a_reply_cut_off_by_a_provider_error_is_sent_back_marked(provider, token, mock_llm):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=10]] [[reset_after=4]]")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "PROVIDER_ERROR"
    role, content, data = (await saved())[-1]
    assert (role, content, data) == ("assistant", "tok1 tok2 tok3 tok4 ",
                                     {"error": "PROVIDER_ERROR", "model": "mock-model"})

    mock_llm.clear()
    await send(comm, type="message", content="go on")
    assert (await frames_until(comm))[-1]["type"] == "done"
    body = model_requests(mock_llm, provider)[-1]
    assert assistant_texts(body) == ["tok1 tok2 tok3 tok4 " + CUT_OFF_MARK]
    await comm.disconnect()


async def test_a_stopped_reply_is_sent_back_marked(provider, token, mock_llm):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=200]] [[delay_ms=20]]")
    await frames_until(comm, types=("chunk",))
    await send(comm, type="stop")
    frames = await frames_until(comm, types=("stopped",))
    streamed = frames[-1]["full_response"]
    assert streamed

    mock_llm.clear()
    await send(comm, type="message", content="go on")
    assert (await frames_until(comm))[-1]["type"] == "done"
    body = model_requests(mock_llm, provider)[-1]
    assert assistant_texts(body) == [streamed + CUT_OFF_MARK]
    await comm.disconnect()


async def test_anthropic_thinking_blocks_are_saved_and_sent_back_in_later_turns(gateway, token, mock_llm):
    gateway.CONSTRUCT_PROVIDER = "anthropic"
    gateway.CONSTRUCT_BASE_URL = mock_llm.anthropic_url
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[think]] [[redacted_think]] " + tool("file_list"))
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done", frames[-1]
    assert any(f["type"] == "thinking" for f in frames)

    rows = await saved()
    assert [r[0] for r in rows] == ["user", "assistant", "tool", "assistant"]
    data = rows[1][2]
    assert data["provider"] == "anthropic"
    assert [b["type"] for b in data["thinking_blocks"]] == ["redacted_thinking", "thinking"]
    assert data["thinking"] == data["thinking_blocks"][1]["thinking"]
    # Never shown as text: the reply's content is its text alone.
    assert rows[1][1] == "" and data["thinking_blocks"][1]["signature"] not in rows[3][1]

    mock_llm.clear()
    await send(comm, type="message", content="and then?")
    assert (await frames_until(comm))[-1]["type"] == "done"
    body = mock_llm.last_request("/messages")
    tool_turn = body["messages"][1]["content"]
    assert tool_turn[:2] == data["thinking_blocks"]
    assert tool_turn[2]["type"] == "tool_use"
    await comm.disconnect()
