"""AnthropicProvider through the real SDK and real HTTP against the mock LLM."""

import time

import pytest

from construct_core.errors import ProviderAuthError, ProviderError
from chat.agent.providers.anthropic import AnthropicProvider
from chat.agent.events import Chunk as TextDelta
from chat.agent.events import Finish, ToolCallRequest
from chat.agent.events import Thinking as ThinkingDelta
from chat.agent.events import UsageInfo as Usage
from tests.providers.helpers import (
    collect,
    collect_until_error,
    make_provider,
    of_type,
    text_of,
    thinking_of,
    wait_for,
)
from tests.support.services import free_port

pytestmark = pytest.mark.asyncio

MESSAGES = "/v1/messages"
TOOLS = [
    {
        "name": "file_read",
        "description": "Read a file in the workspace.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


@pytest.fixture
async def provider(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm)
    yield provider
    await provider.aclose()


async def test_build_provider_gives_the_anthropic_provider(provider):
    assert isinstance(provider, AnthropicProvider)
    assert provider.name == "anthropic" and provider.supports_tools and provider.model == "mock-model"


async def test_text_arrives_in_several_deltas_then_usage_then_finish(provider):
    # Paced, as a model streams: each delta its own read (deltas read together are joined).
    events = await collect(provider, "[[delay_ms=10]] hello brave new world")

    assert len(of_type(events, TextDelta)) >= 4
    assert text_of(events) == "Echo: hello brave new world"
    assert events[-1] == Finish("stop")
    assert isinstance(events[-2], Usage)


async def test_usage_adds_up_input_from_start_and_output_from_delta(provider):
    events = await collect(provider, "[[chunks=9]]")

    [usage] = of_type(events, Usage)
    assert usage.model == "mock-model"
    assert usage.input_tokens > 0
    assert usage.output_tokens == 9


async def test_a_thinking_block_becomes_thinking_deltas(provider):
    events = await collect(provider, "[[think]] ponder")

    assert thinking_of(events) == "Let me think about this step by step."
    assert isinstance(events[0], ThinkingDelta)
    assert text_of(events) == "Echo: ponder"


async def test_a_tool_use_block_is_assembled_from_its_json_deltas(provider):
    arguments = '{"path": "deep/dir/ü file.txt", "extra": {"list": [1, {"k": "]] }"}]}}'
    events = await collect(provider, f"read [[tool:file_read {arguments}]]", tools=TOOLS)

    [call] = of_type(events, ToolCallRequest)
    assert (call.name, call.arguments) == ("file_read", arguments)
    assert call.id.startswith("toolu_")
    assert events[-1] == Finish("tool_calls")


async def test_the_request_has_the_messages_api_shape(provider, clean_mock_llm):
    history = [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": 'both [[tool:file_read {"path":"a"}]] [[tool:file_read {"path":"b"}]]'},
        {
            "role": "assistant",
            "content": "Reading both.",
            "tool_calls": [
                {"id": "toolu_1", "name": "file_read", "arguments": '{"path":"a"}'},
                {"id": "toolu_2", "name": "file_read", "arguments": '{"path":"b"}'},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "name": "file_read", "content": "A"},
        {"role": "tool", "tool_call_id": "toolu_2", "name": "file_read", "content": "B"},
    ]
    events = await collect(provider, history, tools=TOOLS)

    # Two directives, two results: the round ends with the last result.
    assert text_of(events) == "Tool said: B"
    sent = clean_mock_llm.last_request(MESSAGES)
    assert sent["model"] == "mock-model" and sent["stream"] is True and sent["max_tokens"] == 4096
    assert sent["system"] == "Be terse.\n\nUse tools."
    assert sent["tools"] == [
        {"name": "file_read", "description": "Read a file in the workspace.", "input_schema": TOOLS[0]["parameters"]}
    ]
    assert sent["messages"] == [
        {"role": "user", "content": history[2]["content"]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading both."},
                {"type": "tool_use", "id": "toolu_1", "name": "file_read", "input": {"path": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "file_read", "input": {"path": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "B"},
            ],
        },
    ]


async def test_max_tokens_comes_from_the_config(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm, extra={"max_tokens": 123})
    try:
        await collect(provider, "short")
    finally:
        await provider.aclose()
    assert clean_mock_llm.last_request(MESSAGES)["max_tokens"] == 123


async def test_several_tool_directives_run_one_per_round(provider):
    user = {"role": "user", "content": '[[tool:file_read {"path":"1"}]] [[tool:file_read {"path":"2"}]]'}
    [first] = of_type(await collect(provider, [user], tools=TOOLS), ToolCallRequest)
    history = [
        user,
        {"role": "assistant", "content": "", "tool_calls": [{"id": first.id, "name": first.name, "arguments": first.arguments}]},
        {"role": "tool", "tool_call_id": first.id, "name": first.name, "content": "one"},
    ]
    [second] = of_type(await collect(provider, history, tools=TOOLS), ToolCallRequest)
    assert (first.arguments, second.arguments) == ('{"path":"1"}', '{"path":"2"}')


@pytest.mark.parametrize("key", ["zz-fake-key-Q7pLm2Xc9", "sk-ant-api03-AbCdEf0123456789"])
async def test_a_rejected_key_is_an_auth_error_without_the_key(clean_mock_llm, key):
    provider = make_provider("anthropic", clean_mock_llm, api_key=key)
    try:
        events, error = await collect_until_error(provider, "[[fail=401]]")
    finally:
        await provider.aclose()

    assert events == []
    assert type(error) is ProviderAuthError and error.code == "AUTH_ERROR"
    message = str(error)
    assert message.startswith("Provider rejected the API key (HTTP 401): invalid x-api-key: ")
    assert key not in message and key[:12] not in message
    assert "[REDACTED]" in message


async def test_a_500_is_a_provider_error_after_the_sdk_retries(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm, max_retries=2)
    try:
        _, error = await collect_until_error(provider, "[[fail=500]]")
    finally:
        await provider.aclose()

    assert type(error) is ProviderError
    assert str(error).startswith("Provider returned HTTP 500: ")
    retries = [r["_headers"]["x-stainless-retry-count"] for r in clean_mock_llm.requests(MESSAGES)]
    assert retries == ["0", "1", "2"]


async def test_an_overload_before_the_first_token_is_retried(provider, clean_mock_llm):
    events = await collect(provider, "[[fail_once=529]] again")

    assert text_of(events) == "Echo: again"
    assert len(clean_mock_llm.requests(MESSAGES)) == 2


async def test_a_connection_reset_mid_stream_is_a_provider_error(provider, clean_mock_llm):
    events, error = await collect_until_error(provider, "[[chunks=10]] [[reset_after=4]]")

    assert text_of(events) == "tok1 tok2 tok3 tok4 "
    assert type(error) is ProviderError and str(error).startswith("Provider stream broke off")
    assert len(clean_mock_llm.requests(MESSAGES)) == 1


async def test_malformed_stream_data_is_a_provider_error(provider):
    events, error = await collect_until_error(provider, "[[chunks=6]] [[malformed]]")

    assert text_of(events) == "tok1 tok2 tok3 "
    assert type(error) is ProviderError and str(error).startswith("Provider sent malformed data")


async def test_closing_the_stream_early_returns_at_once_and_drops_the_request(provider, clean_mock_llm):
    stream = provider.stream([{"role": "user", "content": "[[hang]] [[chunks=3]]"}])
    assert await stream.__anext__() == TextDelta("tok1 ")

    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 2.0
    assert await wait_for(lambda: clean_mock_llm.last_request(MESSAGES)["_disconnected"])


async def test_a_base_url_ending_in_v1_still_reaches_the_messages_endpoint(clean_mock_llm):
    provider = make_provider("anthropic", clean_mock_llm, base_url=clean_mock_llm.root + "/v1/")
    try:
        events = await collect(provider, "with v1")
    finally:
        await provider.aclose()
    assert text_of(events) == "Echo: with v1"
    assert clean_mock_llm.last_request()["_path"] == MESSAGES


async def test_an_unreachable_server_is_a_provider_error():
    provider = make_provider("anthropic", None, base_url=f"http://127.0.0.1:{free_port()}", max_retries=0)
    try:
        _, error = await collect_until_error(provider, "hello?")
    finally:
        await provider.aclose()
    assert type(error) is ProviderError and str(error).startswith("Provider unreachable: ")

