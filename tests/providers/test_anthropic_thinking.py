"""Anthropic at full fidelity: thinking blocks kept and sent back unchanged before the
tool_use, redacted thinking, is_error, cut-off replies, and the documented event sequences.

Everything goes through the real SDK and HTTP to the mock LLM, which replays the
"Streaming Messages" documentation's sequences and answers 400 as the real API
does when a thinking block comes back missing or altered.
"""

import json

import pytest

from chat.agent.events import Finish, ProviderBlocks, Record, ToolCallRequest, ToolResult
from chat.agent.events import UsageInfo as Usage
from chat.agent.loop import Agent
from chat.agent.providers.base import CUT_OFF_MARK
from chat.agent.tools.base import Tool, ToolFailed, ToolRegistry
from chat.devserver.mock_llm import REPLAY_SIGNATURE, REPLAY_THINKING, REPLAY_TOOL_ID
from construct_core.errors import ProviderAuthError, ProviderError
from tests.providers.helpers import collect, collect_until_error, make_provider, of_type, text_of, thinking_of

pytestmark = pytest.mark.asyncio

MESSAGES = "/v1/messages"
WEATHER_ARGS = {"location": "San Francisco, CA", "unit": "fahrenheit"}


def weather_tool(fail=False):
    async def run(args, ctx):
        if fail:
            raise ToolFailed("weather service down")
        return f"Sunny in {args['location']}"

    return Tool("get_weather", "The weather of a place",
                {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}},
                run)


@pytest.fixture
async def provider(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm)
    yield provider
    await provider.aclose()


async def run_turn(provider, content, *, tool=None, reasoning="low"):
    agent = Agent(provider, ToolRegistry([tool or weather_tool()]))
    return [event async for event in agent.run([{"role": "user", "content": content}], reasoning=reasoning)]


# --- The documented event sequences ---------------------------------------------------------


async def test_the_documented_text_sequence_with_its_ping(provider):
    events = await collect(provider, "[[replay=text]]")

    assert text_of(events) == "Hello!"
    assert events[-2:] == [Usage("mock-model", 25, 15), Finish("stop")]
    assert of_type(events, ProviderBlocks) == []


async def test_the_documented_thinking_then_tool_use_sequence(provider):
    events = await collect(provider, "[[replay=thinking_tool]] weather?")

    assert thinking_of(events) == "".join(REPLAY_THINKING)
    assert text_of(events) == "Okay, let's check the weather for San Francisco, CA:"
    [blocks] = of_type(events, ProviderBlocks)
    assert blocks == ProviderBlocks("anthropic", [
        {"type": "thinking", "thinking": "".join(REPLAY_THINKING), "signature": REPLAY_SIGNATURE},
    ])
    [call] = of_type(events, ToolCallRequest)
    assert (call.id, call.name, json.loads(call.arguments)) == (REPLAY_TOOL_ID, "get_weather", WEATHER_ARGS)
    # The blocks come before the tool calls, the usage and the finish.
    assert events.index(blocks) < events.index(call)
    assert events[-2:] == [Usage("mock-model", 472, 89), Finish("tool_calls")]


async def test_the_documented_mid_stream_error(provider):
    events, error = await collect_until_error(provider, "[[replay=error]]")

    assert text_of(events) == "Hello"
    assert type(error) is ProviderError and "overloaded_error: Overloaded" in str(error)


async def test_401_and_529(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm, max_retries=0)
    try:
        _, auth = await collect_until_error(provider, "[[fail=401]]")
        _, overloaded = await collect_until_error(provider, "[[fail=529]]")
    finally:
        await provider.aclose()
    assert type(auth) is ProviderAuthError
    assert type(overloaded) is ProviderError and str(overloaded).startswith("Provider returned HTTP 529: ")


# --- A thinking + tool turn, the block sent back unchanged ------------------------------------


async def test_a_thinking_tool_turn_completes_and_sends_the_block_back_unchanged_first(provider, clean_mock_llm):
    events = await run_turn(provider, "[[replay=thinking_tool]] weather?")

    assert [e.output for e in of_type(events, ToolResult)] == ["Sunny in San Francisco, CA"]
    records = of_type(events, Record)
    assert [r.message["role"] for r in records] == ["assistant", "tool", "assistant"]
    first = records[0]
    thought = {"type": "thinking", "thinking": "".join(REPLAY_THINKING), "signature": REPLAY_SIGNATURE}
    assert first.data["thinking_blocks"] == [thought] and first.data["provider"] == "anthropic"
    assert first.data["thinking"] == "".join(REPLAY_THINKING)  # the page's text, as before
    assert records[-1].message["content"] == "Tool said: Sunny in San Francisco, CA"

    first_request, second_request = clean_mock_llm.requests(MESSAGES)
    assert first_request["thinking"]["type"] == "enabled"
    assistant = second_request["messages"][1]
    assert assistant == {"role": "assistant", "content": [
        thought,
        {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
        {"type": "tool_use", "id": REPLAY_TOOL_ID, "name": "get_weather", "input": WEATHER_ARGS},
    ]}


async def test_a_generated_thinking_signature_round_trips_over_several_rounds(provider, clean_mock_llm):
    directive = '[[tool:get_weather {"location": "Oslo"}]] [[tool:get_weather {"location": "Rome"}]]'
    events = await run_turn(provider, directive, reasoning="high")

    assert [r.message["content"] for r in of_type(events, Record)][-1] == "Tool said: Sunny in Rome"
    requests = clean_mock_llm.requests(MESSAGES)
    assert len(requests) == 3
    # Every assistant message sent back starts with the block the mock signed for it.
    for request in requests[1:]:
        for message in request["messages"]:
            if message["role"] == "assistant":
                assert message["content"][0]["type"] == "thinking"
                assert message["content"][0]["signature"]


@pytest.mark.parametrize("change", ["dropped", "text altered", "signature altered", "unsigned"])
async def test_the_mock_refuses_a_dropped_or_altered_thinking_block(provider, clean_mock_llm, change):
    events = await run_turn(provider, "[[replay=thinking_tool]] weather?")
    assistant, result = [r.message for r in of_type(events, Record)][:2]
    block = dict(assistant["thinking_blocks"][0])
    if change == "dropped":
        assistant = {k: v for k, v in assistant.items() if k != "thinking_blocks"}
    elif change == "text altered":
        assistant = {**assistant, "thinking_blocks": [{**block, "thinking": block["thinking"] + " "}]}
    elif change == "signature altered":
        assistant = {**assistant, "thinking_blocks": [{**block, "signature": block["signature"][:-1] + "X"}]}
    else:  # our converter never sends it: the tool loop then has no thinking block at all
        assistant = {**assistant, "thinking_blocks": [{**block, "signature": ""}]}
    history = [{"role": "user", "content": "weather?"}, assistant, result]

    stream = provider.stream(history, tools=[{"name": "get_weather", "parameters": {}}], reasoning="low")
    with pytest.raises(ProviderError, match="HTTP 400") as caught:
        [event async for event in stream]
    if change in ("dropped", "unsigned"):
        assert "must start with a thinking block" in str(caught.value)
        assert clean_mock_llm.last_request(MESSAGES)["messages"][1]["content"][0]["type"] == "text"
    else:
        assert "Invalid `signature` in `thinking` block" in str(caught.value)


async def test_redacted_thinking_round_trips_in_order(provider, clean_mock_llm):
    events = await run_turn(provider, '[[redacted_think]] [[tool:get_weather {"location": "Lima"}]]')

    first = of_type(events, Record)[0]
    kinds = [block["type"] for block in first.data["thinking_blocks"]]
    assert kinds == ["redacted_thinking", "thinking"]
    assert of_type(events, Record)[-1].message["content"] == "Tool said: Sunny in Lima"
    second = clean_mock_llm.requests(MESSAGES)[1]
    sent = second["messages"][1]["content"]
    assert sent[:2] == first.data["thinking_blocks"]
    assert sent[2]["type"] == "tool_use"

    # Altered, the mock refuses it as the API does.
    altered = {**first.message, "thinking_blocks": [{"type": "redacted_thinking", "data": "AAAA"},
                                                     first.data["thinking_blocks"][1]]}
    history = [{"role": "user", "content": "weather?"}, altered, of_type(events, Record)[1].message]
    with pytest.raises(ProviderError, match="Invalid `data` in `redacted_thinking` block"):
        await collect(provider, history)


# --- is_error, cut-off replies ---------------------------------------------------------------


async def test_a_failed_tool_s_result_is_sent_with_is_error(provider, clean_mock_llm):
    events = await run_turn(provider, '[[tool:get_weather {"location": "Oslo"}]]', tool=weather_tool(fail=True))

    [result] = of_type(events, ToolResult)
    assert result.is_error
    tool_result = clean_mock_llm.requests(MESSAGES)[1]["messages"][2]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["is_error"] is True


async def test_a_succeeded_tool_s_result_has_no_is_error(provider, clean_mock_llm):
    await run_turn(provider, '[[tool:get_weather {"location": "Oslo"}]]', reasoning="off")
    tool_result = clean_mock_llm.requests(MESSAGES)[1]["messages"][2]["content"][0]
    assert "is_error" not in tool_result


async def test_a_cut_off_reply_is_sent_marked_and_without_its_thinking(provider, clean_mock_llm):
    unsigned = {"type": "thinking", "thinking": "half a thought", "signature": ""}
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Half an ans", "incomplete": True,
         "thinking_blocks": [unsigned], "provider": "anthropic"},
        {"role": "user", "content": "go on"},
    ]
    events = await collect(provider, history, tools=None)

    assert text_of(events) == "Echo: go on"
    sent = clean_mock_llm.last_request(MESSAGES)["messages"][1]
    assert sent == {"role": "assistant", "content": [{"type": "text", "text": "Half an ans" + CUT_OFF_MARK}]}
