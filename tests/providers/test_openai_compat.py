"""OpenAICompatProvider through the real SDK and real HTTP against the mock LLM."""

import json
import time

import pytest

from construct_core.errors import ProviderAuthError, ProviderError
from chat.agent.events import Chunk as TextDelta
from chat.agent.events import Finish, ToolCallRequest
from chat.agent.events import Thinking as ThinkingDelta
from chat.agent.events import UsageInfo as Usage
from chat.agent.providers.openai_compat import OpenAICompatProvider
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

CHAT = "/chat/completions"
TOOLS = [
    {
        "name": "file_write",
        "description": "Write a file in the workspace.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    }
]


@pytest.fixture
async def provider(clean_mock_llm):
    provider = make_provider("openai", clean_mock_llm)
    yield provider
    await provider.aclose()


async def test_build_provider_gives_the_openai_provider(provider):
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.name == "openai" and provider.supports_tools and provider.model == "mock-model"


async def test_text_arrives_in_several_deltas_then_usage_then_finish(provider):
    # Paced, as a model streams: each delta its own read (deltas read together are joined).
    events = await collect(provider, "[[delay_ms=10]] hello brave new world")

    deltas = of_type(events, TextDelta)
    assert len(deltas) >= 4
    assert text_of(events) == "Echo: hello brave new world"
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert isinstance(events[-2], Usage)


async def test_usage_is_reported_for_the_configured_model(provider, clean_mock_llm):
    events = await collect(provider, "[[chunks=7]] count")

    [usage] = of_type(events, Usage)
    assert usage.model == "mock-model"
    assert usage.input_tokens > 0
    assert usage.output_tokens == 7
    assert clean_mock_llm.last_request(CHAT)["stream_options"] == {"include_usage": True}


async def test_reasoning_content_becomes_thinking_before_the_text(provider):
    events = await collect(provider, "[[think]] why")

    assert thinking_of(events) == "Let me think about this step by step."
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    last_thinking = max(i for i, e in enumerate(events) if isinstance(e, ThinkingDelta))
    assert last_thinking < first_text
    assert text_of(events) == "Echo: why"


async def test_a_tool_call_split_over_many_deltas_is_assembled_exactly(provider):
    arguments = '{"path": "notes/ü.txt", "content": "line 1\\nline 2 ]] {x}", "n": [1, 2.5, null]}'
    events = await collect(provider, f"[[tool:file_write {arguments}]]", tools=TOOLS)

    [call] = of_type(events, ToolCallRequest)
    assert call.name == "file_write"
    assert call.arguments == arguments
    assert json.loads(call.arguments)["content"] == "line 1\nline 2 ]] {x}"
    assert call.id.startswith("call_")
    assert not of_type(events, TextDelta)
    assert events[-1] == Finish("tool_calls")


async def test_the_request_has_the_openai_shape_with_tools_and_tool_results(provider, clean_mock_llm):
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": 'write it [[tool:file_write {"path":"a.txt","content":"hi"}]]'},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "name": "file_write", "arguments": '{"path":"a.txt","content":"hi"}'}],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "file_write", "content": "wrote 2 bytes"},
    ]
    events = await collect(provider, history, tools=TOOLS)

    assert text_of(events) == "Tool said: wrote 2 bytes"
    sent = clean_mock_llm.last_request(CHAT)
    assert sent["model"] == "mock-model" and sent["stream"] is True
    assert sent["tools"] == [{"type": "function", "function": TOOLS[0]}]
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": history[1]["content"]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "file_write", "arguments": '{"path":"a.txt","content":"hi"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote 2 bytes"},
    ]


async def test_several_tool_directives_run_one_per_round(provider):
    user = {"role": "user", "content": '[[tool:file_list {"path":"."}]] then [[tool:file_read {"path":"a"}]]'}
    first = of_type(await collect(provider, [user], tools=TOOLS), ToolCallRequest)
    assert [call.name for call in first] == ["file_list"]

    history = [
        user,
        {"role": "assistant", "content": "", "tool_calls": [{"id": first[0].id, "name": "file_list", "arguments": '{"path":"."}'}]},
        {"role": "tool", "tool_call_id": first[0].id, "name": "file_list", "content": "a"},
    ]
    second = of_type(await collect(provider, history, tools=TOOLS), ToolCallRequest)
    assert [(call.name, call.arguments) for call in second] == [("file_read", '{"path":"a"}')]


@pytest.mark.parametrize("key", ["zz-fake-key-Q7pLm2Xc9", "sk-proj-AbCdEf0123456789xyz"])
async def test_a_rejected_key_is_an_auth_error_without_the_key(clean_mock_llm, key):
    provider = make_provider("openai", clean_mock_llm, api_key=key)
    try:
        events, error = await collect_until_error(provider, "[[fail=401]] hi")
    finally:
        await provider.aclose()

    assert events == []
    assert type(error) is ProviderAuthError and error.code == "AUTH_ERROR"
    message = str(error)
    assert message.startswith("Provider rejected the API key (HTTP 401): Incorrect API key provided:")
    assert key not in message and key[:12] not in message
    assert "[REDACTED]" in message
    # The mock really did echo the key back: the redaction is ours.
    assert clean_mock_llm.last_request(CHAT)["_headers"]["authorization"] == "[MASKED]"


async def test_a_403_is_an_auth_error_too(provider):
    _, error = await collect_until_error(provider, "[[fail=403]]")
    assert type(error) is ProviderAuthError and "HTTP 403" in str(error)


async def test_a_500_is_a_provider_error_after_the_sdk_retries(clean_mock_llm):
    provider = make_provider("openai", clean_mock_llm, max_retries=2)
    try:
        _, error = await collect_until_error(provider, "[[fail=500]] always")
    finally:
        await provider.aclose()

    assert type(error) is ProviderError and error.code == "PROVIDER_ERROR"
    assert str(error).startswith("Provider returned HTTP 500: The server had an error")
    retries = [r["_headers"]["x-stainless-retry-count"] for r in clean_mock_llm.requests(CHAT)]
    assert retries == ["0", "1", "2"]


async def test_a_429_is_a_provider_error_not_an_auth_error(clean_mock_llm):
    provider = make_provider("openai", clean_mock_llm, max_retries=0)
    try:
        _, error = await collect_until_error(provider, "[[fail=429]]")
    finally:
        await provider.aclose()
    assert type(error) is ProviderError and "HTTP 429" in str(error)


async def test_a_failure_before_the_first_token_is_retried_by_the_sdk(provider, clean_mock_llm):
    events = await collect(provider, "[[fail_once=500]] second time lucky")

    assert text_of(events) == "Echo: second time lucky"
    retries = [r["_headers"]["x-stainless-retry-count"] for r in clean_mock_llm.requests(CHAT)]
    assert retries == ["0", "1"]


async def test_a_connection_reset_mid_stream_is_a_provider_error(provider, clean_mock_llm):
    events, error = await collect_until_error(provider, "[[chunks=10]] [[reset_after=3]]")

    assert text_of(events) == "tok1 tok2 tok3 "
    assert type(error) is ProviderError
    assert str(error).startswith("Provider stream broke off")
    # Never retried once tokens were streamed: the user saw them.
    assert len(clean_mock_llm.requests(CHAT)) == 1


async def test_malformed_stream_data_is_a_provider_error(provider):
    events, error = await collect_until_error(provider, "[[chunks=6]] [[malformed]]")

    assert text_of(events) == "tok1 tok2 tok3 "
    assert type(error) is ProviderError
    assert str(error).startswith("Provider sent malformed data")


async def test_closing_the_stream_early_returns_at_once_and_drops_the_request(provider, clean_mock_llm):
    stream = provider.stream([{"role": "user", "content": "[[hang]] wait for it"}])
    first = await stream.__anext__()
    assert first == TextDelta("Echo: ")

    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 2.0

    assert await wait_for(lambda: clean_mock_llm.last_request(CHAT)["_disconnected"]), (
        "the mock never saw the client go away"
    )


async def test_a_stalled_stream_times_out_as_a_provider_error(clean_mock_llm):
    provider = make_provider("openai", clean_mock_llm, timeout=0.5)
    started = time.monotonic()
    try:
        events, error = await collect_until_error(provider, "[[hang]] anyone?")
    finally:
        await provider.aclose()

    assert text_of(events) == "Echo: "
    assert type(error) is ProviderError and "stalled" in str(error)
    assert time.monotonic() - started < 5.0


async def test_an_unreachable_server_is_a_provider_error():
    provider = make_provider(
        "openai", None, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout=5.0
    )
    try:
        _, error = await collect_until_error(provider, "hello?")
    finally:
        await provider.aclose()
    assert type(error) is ProviderError
    assert str(error).startswith("Provider unreachable: ")
