"""Shared bits of the provider tests: build a provider against the mock, drain a stream."""

import asyncio
import time

from chat.agent.providers import build_provider
from chat.agent.events import Chunk as TextDelta
from chat.agent.events import Thinking as ThinkingDelta
from chat.agent.providers.base import ProviderConfig


def make_provider(kind, mock, **overrides):
    settings = {"provider": kind, "model": "mock-model", "api_key": "sk-test-0123456789abcdef"}
    if mock is not None:
        settings["base_url"] = mock.openai_url if kind == "openai" else mock.anthropic_url
    settings.update(overrides)
    return build_provider(ProviderConfig(**settings))


async def collect(provider, messages, tools=None):
    """Every event of one stream, in order."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return [event async for event in provider.stream(messages, tools=tools)]


async def collect_until_error(provider, content):
    """(events received before the error, the error)."""
    events = []
    try:
        async for event in provider.stream([{"role": "user", "content": content}]):
            events.append(event)
    except Exception as exc:  # the test asserts on the exact type
        return events, exc
    raise AssertionError(f"the stream ended without an error: {events!r}")


def text_of(events):
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def thinking_of(events):
    return "".join(event.text for event in events if isinstance(event, ThinkingDelta))


def of_type(events, kind):
    return [event for event in events if isinstance(event, kind)]


async def wait_for(predicate, timeout=3.0):
    """Poll a (blocking, quick) predicate from async code until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.05)
    return False
