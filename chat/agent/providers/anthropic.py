"""Anthropic's Messages API.

As with the OpenAI provider, the official SDK connects, authenticates and
retries before the response starts, and the event stream is read raw: every
event's JSON names its own type, so one JSON parse per line is all it takes.
"""

import json
import logging
import uuid
from contextlib import aclosing

import anthropic
import httpx2

from construct_core.errors import ProviderError
from construct_core.redaction import register_secret
from chat.agent.events import Chunk, Finish, ProviderBlocks, Thinking, ToolCallRequest, UsageInfo
from chat.agent.providers.base import assistant_text, connection_limits, reasoning_check
from chat.agent.providers.netstream import with_network_backend
from chat.agent.providers.failures import body_message, event_failure, failure, sdk_errors
from chat.agent.providers.sse import event_json, joined_deltas, sse_reads

logger = logging.getLogger(__name__)

LABEL = "Anthropic"

PLACEHOLDER_KEY = "no-key-needed"
CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_TOKENS = 4096
# Optional request settings an operator may pass through `ProviderConfig.extra`. The
# sampling ones go in the body as they are: the SDK's create() has no argument for them.
PASSTHROUGH = ("thinking", "extra_body")
SAMPLING = ("temperature", "top_p", "top_k")
# Extended thinking's token budget per reasoning level; max_tokens is raised by as much.
THINKING_BUDGET_LOW = 2048
THINKING_BUDGET_MEDIUM = 8192
THINKING_BUDGET_HIGH = 24576
THINKING_BUDGETS = {"low": THINKING_BUDGET_LOW, "medium": THINKING_BUDGET_MEDIUM, "high": THINKING_BUDGET_HIGH}
# Settings the API refuses while the model thinks.
NOT_WITH_THINKING = ("temperature", "top_k")
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
            http_client=with_network_backend(anthropic.DefaultAsyncHttpxClient(limits=connection_limits(httpx2))),
        )

    async def aclose(self):
        await self._client.close()

    async def stream(self, messages, *, tools=None, reasoning="off"):
        """Stream one reply as Chunk / Thinking events, then its ProviderBlocks (if it
        thought), the assembled ToolCallRequests, the UsageInfo and Finish."""
        budget = THINKING_BUDGETS.get(reasoning_check(reasoning))
        system, converted = to_anthropic_messages(messages)
        params = {"model": self.model, "max_tokens": self._max_tokens, "messages": converted, "stream": True}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = to_anthropic_tools(tools)
        for key in PASSTHROUGH:
            if key in self._extra:
                params[key] = self._extra[key]
        body = {key: self._extra[key] for key in SAMPLING if key in self._extra}
        body.update(params.pop("extra_body", None) or {})
        if budget:
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
            params["max_tokens"] = self._max_tokens + budget  # must be above the budget
        if (params.get("thinking") or {}).get("type") == "enabled":
            for key in NOT_WITH_THINKING:
                body.pop(key, None)
        if body:
            params["extra_body"] = body
        with sdk_errors(LABEL, anthropic, detail=_status_detail):
            # Leaving this block, also by the consumer's aclose(), closes the response.
            async with self._client.messages.with_streaming_response.create(**params) as response:
                async with aclosing(self._events(response.http_response)) as events:
                    async for event in events:
                        yield event

    async def _events(self, http_response):
        reply = _Reply()
        async with aclosing(sse_reads(http_response.aiter_bytes())) as reads:
            async for events in reads:
                deltas = []  # of this read: joined into one where they can be (sse.py)
                for data in events:
                    try:
                        delta = reply.feed(event_json(data))
                    except Exception as exc:
                        for delta in joined_deltas(deltas):  # what came before it still counts
                            yield delta
                        raise event_failure(LABEL, exc) from None
                    if delta is not None:
                        deltas.append(delta)
                for delta in joined_deltas(deltas):
                    yield delta
        if not reply.stopped:
            raise failure(LABEL, ProviderError, "Provider stream broke off before the end of the reply")
        for event in reply.ending(self.model):
            yield event


class _Reply:
    """What a Messages stream says that only counts once whole: thinking blocks,
    tool calls, usage, stop reason."""

    def __init__(self):
        self.open_tools = {}
        self.tools = []
        self.open_thinking = {}
        self.thinking_blocks = []
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
                if event["index"] in self.open_thinking:
                    self.open_thinking[event["index"]]["thinking"].append(delta["thinking"])
                return Thinking(delta["thinking"])
            if delta_kind == "signature_delta" and event["index"] in self.open_thinking:
                self.open_thinking[event["index"]]["signature"].append(delta["signature"])
            elif delta_kind == "input_json_delta" and event["index"] in self.open_tools:
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
            elif block["type"] == "thinking":
                self.open_thinking[event["index"]] = {
                    "thinking": [block.get("thinking") or ""],
                    "signature": [block.get("signature") or ""],
                }
            elif block["type"] == "redacted_thinking":
                # Whole at its start: encrypted reasoning, sent back as it came.
                self.thinking_blocks.append({"type": "redacted_thinking", "data": block["data"]})
        elif kind == "content_block_stop":
            index = event["index"]
            if index in self.open_tools:
                self.tools.append(self.open_tools.pop(index))
            elif index in self.open_thinking:
                block = self.open_thinking.pop(index)
                self.thinking_blocks.append({
                    "type": "thinking",
                    "thinking": "".join(block["thinking"]),
                    "signature": "".join(block["signature"]),
                })
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
        """The events that close a reply: its thinking blocks, each tool call whole, the usage, the finish."""
        if self.thinking_blocks:
            yield ProviderBlocks(AnthropicProvider.name, self.thinking_blocks)
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
    results sharing one message as the API expects. An assistant message that
    Anthropic wrote starts with its thinking blocks, unchanged, as the API
    requires before a tool_use; another provider's blocks are dropped.
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
            if message.get("is_error"):
                block["is_error"] = True
            previous = converted[-1] if converted else None
            if previous and previous["role"] == "user" and _is_tool_results(previous["content"]):
                previous["content"].append(block)
            else:
                converted.append({"role": "user", "content": [block]})
        elif role == "assistant":
            text = assistant_text(message)
            blocks = [{"type": "text", "text": text}] if text else []
            for call in message.get("tool_calls") or ():
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": _tool_input(call)})
            if blocks:  # the API refuses empty assistant turns (a stopped, silent reply)
                converted.append({"role": "assistant", "content": _thinking_blocks(message) + blocks})
        else:
            if isinstance(content, list):
                content = [_anthropic_block(part) for part in content]
            converted.append({"role": "user", "content": content})
    return "\n\n".join(system), converted


def _thinking_blocks(message):
    """The thinking blocks to send before an assistant message's text, exactly as they came.

    Only Anthropic's own, only of a whole reply, and only those the API takes
    back: a thinking block without its signature is never sent.
    """
    if message.get("provider") != AnthropicProvider.name or message.get("incomplete"):
        return []
    kept = []
    for block in message.get("thinking_blocks") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking" and _text(block.get("signature")) and isinstance(block.get("thinking"), str):
            kept.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif kind == "redacted_thinking" and _text(block.get("data")):
            kept.append({"type": "redacted_thinking", "data": block["data"]})
    return kept


def _text(value):
    return isinstance(value, str) and bool(value)


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
