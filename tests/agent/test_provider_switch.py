"""One session's history across providers: OpenAI-compatible, then Anthropic, then back.

Each turn runs the real agent and provider against the loopback mock; its records
are saved and read back as the turn engine does (services.message_append,
selectors.history_for_provider), so what each provider is sent comes from the
database. The mock's Anthropic side refuses what the real API refuses (unknown
keys, thinking blocks not exactly as issued).
"""

import asyncio

import pytest

from chat.agent.events import Record
from chat.agent.loop import Agent
from chat.agent.tools.base import Tool, ToolRegistry
from sessions_app import selectors, services
from sessions_app.models import Message
from tests.providers.helpers import make_provider

pytestmark = pytest.mark.django_db

OPENAI_KEYS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "tool_call_id", "content"},
}


def weather():
    async def run(args, ctx):
        return f"Sunny in {args['location']}"

    return Tool("get_weather", "The weather of a place",
                {"type": "object", "properties": {"location": {"type": "string"}}}, run)


def turn(session_id, kind, mock, content, reasoning="off"):
    """Save the user's message, run one agent turn on `kind` from the saved history, save its records."""
    services.message_append(session_id=session_id, role="user", content=content)
    history, _ = selectors.history_for_provider(session_id=session_id, token_budget=100_000)

    async def run():
        provider = make_provider(kind, mock)
        try:
            agent = Agent(provider, ToolRegistry([weather()]))
            return [event async for event in agent.run(history, reasoning=reasoning)]
        finally:
            await provider.aclose()

    events = asyncio.run(run())
    for record in (event for event in events if isinstance(event, Record)):
        # As chat/turns/run.py's Turn._save keeps them.
        message, data = record.message, dict(record.data)
        if message.get("tool_calls"):
            data["tool_calls"] = message["tool_calls"]
        if message["role"] == "tool":
            data.update(tool_call_id=message["tool_call_id"], name=message["name"])
        services.message_append(session_id=session_id, role=message["role"],
                                content=message.get("content") or "", data=data)
    return events


def assert_valid_for_openai(request):
    for message in request["messages"]:
        assert set(message) <= OPENAI_KEYS[message["role"]], message
        assert isinstance(message.get("content"), (str, type(None))), message


def test_a_session_switches_openai_anthropic_openai_and_each_request_is_valid(mock_llm):
    clean_mock_llm = mock_llm
    clean_mock_llm.clear()
    services.session_open(session_id="sw", user_id=services.default_owner().pk)

    turn("sw", "openai", clean_mock_llm, '[[think]] [[tool:get_weather {"location": "Oslo"}]]', reasoning="low")
    turn("sw", "anthropic", clean_mock_llm, '[[tool:get_weather {"location": "Rome"}]]', reasoning="medium")
    turn("sw", "openai", clean_mock_llm, "and now?", reasoning="high")
    turn("sw", "anthropic", clean_mock_llm, "once more", reasoning="low")

    openai = clean_mock_llm.requests("/chat/completions")
    anthropic = clean_mock_llm.requests("/v1/messages")
    # Two rounds each for the tool turns, one for the others; none was refused.
    assert (len(openai), len(anthropic)) == (3, 3)
    for request in openai:
        assert_valid_for_openai(request)
        assert "thinking" not in request
    assert [r["reasoning_effort"] for r in openai] == ["low", "low", "high"]

    # Anthropic's second round carries its own thinking block before the tool_use;
    # the OpenAI turn's reasoning never reaches it.
    tool_round = anthropic[1]["messages"]
    assert [b["type"] for b in tool_round[-2]["content"]][0] == "thinking"
    assert [b["type"] for b in tool_round[-2]["content"]][-1] == "tool_use"
    openai_answer = tool_round[1]
    assert [b["type"] for b in openai_answer["content"]] == ["tool_use"]
    for request in anthropic:
        for message in request["messages"]:
            assert set(message) == {"role", "content"}

    # Back on OpenAI: the Anthropic messages came as plain text and tool calls.
    last_openai = openai[-1]["messages"]
    assistants = [m for m in last_openai if m["role"] == "assistant"]
    assert any(m.get("tool_calls") and m["tool_calls"][0]["function"]["arguments"] == '{"location": "Rome"}'
               for m in assistants)

    # Back on Anthropic: the blocks saved two turns ago go back exactly as stored.
    saved = list(Message.objects.filter(session_id="sw", role="assistant").order_by("seq")
                 .values_list("data", flat=True))[:-1]  # all but the last turn's own answer
    stored = [block for data in saved for block in data.get("thinking_blocks", ())]
    assert len(stored) == 2  # the tool round's and the answer's
    sent = [b for m in anthropic[-1]["messages"] if m["role"] == "assistant" for b in m["content"]
            if b["type"] == "thinking"]
    assert sent == stored
