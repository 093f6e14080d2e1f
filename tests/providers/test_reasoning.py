"""Reasoning levels reach each provider's request in its own shape; "off" sends none.

Through the real SDKs and HTTP against the mock LLM, which logs each request body.
"""

import pytest

from chat.agent.providers.anthropic import DEFAULT_MAX_TOKENS, THINKING_BUDGETS
from tests.providers.helpers import make_provider, text_of

pytestmark = pytest.mark.asyncio

USER = [{"role": "user", "content": "hello"}]


async def stream_once(kind, mock, reasoning, **overrides):
    provider = make_provider(kind, mock, **overrides)
    try:
        return [event async for event in provider.stream(USER, reasoning=reasoning)]
    finally:
        await provider.aclose()


@pytest.mark.parametrize("level", ["low", "medium", "high"])
async def test_anthropic_thinks_with_a_budget_by_level_and_max_tokens_above_it(clean_mock_llm, level):
    events = await stream_once("anthropic", clean_mock_llm, level)

    sent = clean_mock_llm.last_request("/v1/messages")
    budget = THINKING_BUDGETS[level]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == DEFAULT_MAX_TOKENS + budget
    assert "reasoning_effort" not in sent
    assert text_of(events) == "Echo: hello"


async def test_anthropic_budgets_grow_with_the_level():
    assert THINKING_BUDGETS["low"] < THINKING_BUDGETS["medium"] < THINKING_BUDGETS["high"]


async def test_anthropic_thinking_leaves_out_the_settings_the_api_refuses_with_it(clean_mock_llm):
    extra = {"temperature": 0.2, "top_k": 5, "top_p": 0.99, "max_tokens": 1000}
    await stream_once("anthropic", clean_mock_llm, "low", extra=extra)
    sent = clean_mock_llm.last_request("/v1/messages")
    assert "temperature" not in sent and "top_k" not in sent
    assert sent["top_p"] == 0.99 and sent["max_tokens"] == 1000 + THINKING_BUDGETS["low"]

    await stream_once("anthropic", clean_mock_llm, "off", extra=extra)
    sent = clean_mock_llm.last_request("/v1/messages")
    assert (sent["temperature"], sent["top_k"], sent["max_tokens"]) == (0.2, 5, 1000)


@pytest.mark.parametrize("level", ["low", "medium", "high"])
async def test_openai_compatible_sends_reasoning_effort(clean_mock_llm, level):
    events = await stream_once("openai", clean_mock_llm, level)

    sent = clean_mock_llm.last_request("/chat/completions")
    assert sent["reasoning_effort"] == level
    assert "thinking" not in sent
    assert text_of(events) == "Echo: hello"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_off_sends_no_reasoning_setting(clean_mock_llm, kind):
    await stream_once(kind, clean_mock_llm, "off")

    sent = clean_mock_llm.last_request()
    assert not {"thinking", "reasoning_effort", "reasoning"} & set(sent)
    if kind == "anthropic":
        assert sent["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_unknown_level_is_refused_before_any_request(clean_mock_llm, kind):
    with pytest.raises(ValueError, match="reasoning level"):
        await stream_once(kind, clean_mock_llm, "extreme")
    assert clean_mock_llm.requests() == []
