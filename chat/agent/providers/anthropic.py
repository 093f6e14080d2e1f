"""Anthropic's Messages API.

As with the OpenAI provider, the official SDK connects, authenticates and
retries before the response starts, and the event stream is read raw: every
event's JSON names its own type, so one `json.loads` per line is all it takes.
"""

import json
import logging
import uuid
from contextlib import aclosing

import anthropic
import httpx2

from construct_core.errors import ProviderError
from construct_core.redaction import register_secret
from chat.agent.events import Chunk, Finish, Thinking, ToolCallRequest, UsageInfo
from chat.agent.providers.failures import body_message, failure, sdk_errors
from chat.agent.providers.sse import sse_data

logger = logging.getLogger(__name__)

LABEL = "Anthropic"

PLACEHOLDER_KEY = "no-key-needed"
CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_TOKENS = 4096
# Optional request settings an operator may pass through `ProviderConfig.extra`.
PASSTHROUGH = ("temperature", "top_p", "top_k", "thinking", "extra_body")
# Anthropic's stop reasons in the neutral (OpenAI) words the agent knows.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider:
    """Streams Claude replies from the Messages API."""

    name = "anthropic"
    supports_tools = True

    def __init__(self, config):
        self.model = config.model
        self._extra = dict(config.extra or {})
        self._max_tokens = int(self._extra.get("max_tokens") or DEFAULT_MAX_TOKENS)
        if config.api_key:
            register_secret(config.api_key)
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key or PLACEHOLDER_KEY,
            base_url=_sdk_base_url(config.base_url),
            timeout=httpx2.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT, config.timeout)),
            max_retries=config.max_retries,
        )

    async def aclose(self):
        await self._client.close()

    async def stream(self, messages, *, tools=None):
        """Stream one reply as Chunk / Thinking events, then the assembled
        ToolCallRequests, the UsageInfo and Finish."""
        system, converted = to_anthropic_messages(messages)
        params = {"model": self.model, "max_tokens": self._max_tokens, "messages": converted, "stream": True}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = to_anthropic_tools(tools)
        for key in PASSTHROUGH:
            if key in self._extra:
                params[key] = self._extra[key]
        with sdk_errors(LABEL, anthropic, detail=_status_detail):
            # Leaving this block, also by the consumer's aclose(), closes the response.
            async with self._client.messages.with_streaming_response.create(**params) as response:
                async with aclosing(self._events(response.http_response)) as events:
                    async for event in events:
                        yield event

    async def _events(self, http_response):
        reply = _Reply()
        async with aclosing(sse_data(http_response.aiter_bytes())) as stream:
            async for data in stream:
                try:
                    delta = reply.feed(json.loads(data))
                except (ValueError, AttributeError, TypeError, KeyError):
                    raise failure(LABEL, ProviderError, "Provider sent malformed data: a stream event is not valid JSON") from None
                if delta is not None:
                    yield delta
        if not reply.stopped:
            raise failure(LABEL, ProviderError, "Provider stream broke off before the end of the reply")
        for event in reply.ending(self.model):
            yield event


class _Reply:
    """What a Messages stream says that only counts once whole: tool calls, usage, stop reason."""

    def __init__(self):
        self.open_tools = {}
        self.tools = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason = None
        self.stopped = False

    def feed(self, event):
        """Take one event; return the text or thinking delta it carries, if any."""
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            delta_kind = delta["type"]
            if delta_kind == "text_delta":
                return Chunk(delta["text"])
            if delta_kind == "thinking_delta":
                return Thinking(delta["thinking"])
            if delta_kind == "input_json_delta" and event["index"] in self.open_tools:
                self.open_tools[event["index"]]["json"].append(delta["partial_json"])
        elif kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                self.open_tools[event["index"]] = {
                    "id": block.get("id"),
                    "name": block["name"],
                    "input": block.get("input"),
                    "json": [],
                }
        elif kind == "content_block_stop":
            if event["index"] in self.open_tools:
                self.tools.append(self.open_tools.pop(event["index"]))
        elif kind == "message_start":
            self.input_tokens = _input_tokens(event["message"].get("usage") or {})
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason") or self.stop_reason
            usage = event.get("usage") or {}
            self.output_tokens = usage.get("output_tokens") or self.output_tokens
            self.input_tokens = _input_tokens(usage) or self.input_tokens
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.get("error") or {}
            raise failure(LABEL, 
                ProviderError,
                "Provider reported an error mid-stream: %s: %s",
                error.get("type", "error"),
                error.get("message", ""),
            )
        return None

    def ending(self, model):
        """The events that close a reply: each tool call whole, the usage, the finish."""
        for call in self.tools:
            arguments = "".join(call["json"]) or (json.dumps(call["input"]) if call["input"] else "{}")
            call_id = call["id"] or "toolu_" + uuid.uuid4().hex[:24]
            yield ToolCallRequest(id=call_id, name=call["name"], arguments=arguments)
        yield UsageInfo(model=model, input_tokens=int(self.input_tokens), output_tokens=int(self.output_tokens))
        yield Finish(STOP_REASONS.get(self.stop_reason, self.stop_reason or "stop"))


def _sdk_base_url(url):
    """The SDK adds "/v1/messages" itself, so an OpenAI-style ".../v1" URL loses its "/v1"."""
    if not url:
        return None
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def _input_tokens(usage):
    """Prompt tokens, counting cache reads and writes: all of them were sent."""
    return (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )


# --- Neutral history -> Anthropic wire format -------------------------------------------


def to_anthropic_messages(messages):
    """Split neutral messages into (system text, Messages API messages).

    System messages go to `system`; assistant tool calls become tool_use blocks;
    tool results become tool_result blocks in a user message, consecutive
    results sharing one message as the API expects.
    """
    system = []
    converted = []
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "system":
            if content:
                system.append(content)
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content}
            previous = converted[-1] if converted else None
            if previous and previous["role"] == "user" and _is_tool_results(previous["content"]):
                previous["content"].append(block)
            else:
                converted.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks = [{"type": "text", "text": content}] if content else []
            for call in message.get("tool_calls") or ():
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": _tool_input(call)})
            if blocks:  # the API refuses empty assistant turns (a stopped, silent reply)
                converted.append({"role": "assistant", "content": blocks})
        else:
            if isinstance(content, list):
                content = [_anthropic_block(part) for part in content]
            converted.append({"role": "user", "content": content})
    return "\n\n".join(system), converted


def _anthropic_block(part):
    """A neutral content part as a Messages API block: an image has a base64 source."""
    if part["type"] == "image":
        return {"type": "image",
                "source": {"type": "base64", "media_type": part["media_type"], "data": part["data"]}}
    return {"type": "text", "text": part["text"]}


def _is_tool_results(content):
    return isinstance(content, list) and all(block.get("type") == "tool_result" for block in content)


def _tool_input(call):
    """A tool call's arguments as the object Anthropic wants; bad JSON is kept, not lost."""
    try:
        value = json.loads(call.get("arguments") or "{}")
    except ValueError:
        return {"_raw_arguments": call.get("arguments")}
    return value if isinstance(value, dict) else {"value": value}


def to_anthropic_tools(tools):
    return [
        {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        for tool in tools
    ]


def _status_detail(exc):
    """Anthropic's SDK parses the error message itself; fall back to the body."""
    detail = getattr(exc, "api_message", None)
    return detail if isinstance(detail, str) and detail else body_message(exc.body, "no details")
