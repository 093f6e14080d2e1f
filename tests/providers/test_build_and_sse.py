"""build_provider's configuration errors, and the SSE line reader on awkward input."""

import pytest

from construct_core.errors import AgentInitFailed
from chat.agent.providers import build_provider
from chat.agent.events import Chunk as TextDelta
from chat.agent.providers.base import ProviderConfig
from chat.agent.providers.sse import sse_data
from tests.providers.helpers import collect


def test_no_key_and_no_base_url_says_how_to_configure():
    with pytest.raises(AgentInitFailed) as caught:
        build_provider(ProviderConfig(provider="openai", model="gpt-4o-mini"))
    message = str(caught.value)
    for name in ("CONSTRUCT_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CONSTRUCT_BASE_URL", "CONSTRUCT_PROVIDER", "CONSTRUCT_MODEL"):
        assert name in message
    assert "http://127.0.0.1:11434/v1" in message
    assert caught.value.code == "AGENT_INIT_FAILED"


def test_an_unknown_provider_is_named_with_the_known_ones():
    with pytest.raises(AgentInitFailed, match="'gemini'") as caught:
        build_provider(ProviderConfig(provider="gemini", model="x", api_key="k-123456"))
    assert "set CONSTRUCT_PROVIDER to 'openai' or 'anthropic'." in str(caught.value)


@pytest.mark.parametrize("kind, cls", [("openai", "OpenAICompatProvider"), ("anthropic", "AnthropicProvider")])
def test_each_listed_kind_builds_its_own_provider(kind, cls):
    provider = build_provider(ProviderConfig(provider=kind, model="m", api_key="k-123456"))
    assert type(provider).__name__ == cls


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_base_url_the_sdk_cannot_parse_is_a_configuration_error(kind):
    # The SDKs' HTTP client raises its own InvalidURL (not a ValueError) for a bad port.
    with pytest.raises(AgentInitFailed, match=f"Could not set up the {kind} provider") as caught:
        build_provider(ProviderConfig(provider=kind, model="m", api_key="k-123456", base_url="http://[::1"))
    assert caught.value.code == "AGENT_INIT_FAILED"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_base_url_without_a_key_works_for_local_servers(clean_mock_llm, kind):
    url = clean_mock_llm.openai_url if kind == "openai" else clean_mock_llm.anthropic_url
    provider = build_provider(ProviderConfig(provider=kind, model="llama3", base_url=url))
    try:
        events = await collect(provider, "local")
    finally:
        await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: local"
    assert clean_mock_llm.last_request()["_headers"]["authorization"] == "[MASKED]"


async def _chunks(*parts):
    for part in parts:
        yield part


async def _read(*parts):
    return [data async for data in sse_data(_chunks(*parts))]


@pytest.mark.asyncio
async def test_sse_events_split_anywhere_across_chunks():
    body = b'event: a\ndata: {"x": 1}\n\n: comment\ndata:{"y":2}\r\n\r\ndata: [DONE]\n\n'
    expected = [b'{"x": 1}', b'{"y":2}', b"[DONE]"]
    assert await _read(body) == expected
    assert await _read(*[body[i : i + 1] for i in range(len(body))]) == expected


@pytest.mark.asyncio
async def test_sse_multi_line_data_is_joined_and_a_missing_last_blank_line_is_forgiven():
    assert await _read(b"data: one\ndata: two\n\ndata: tail") == [b"one\ntwo", b"tail"]


def test_event_json_reads_what_json_reads_and_refuses_what_it_refuses():
    import json
    import math

    from chat.agent.providers.sse import event_json

    data = '{"choices":[{"delta":{"content":"é ✓ \\u00e9"}}],"n":1.5}'.encode()
    assert event_json(data) == json.loads(data)
    # orjson refuses these; json reads them, and so the stream does as it did.
    assert math.isnan(event_json(b'{"x": NaN}')["x"])
    assert event_json(b'{"x": "\\ud800"}') == {"x": "\ud800"}
    with pytest.raises(ValueError):
        event_json(b'{"x": ')
