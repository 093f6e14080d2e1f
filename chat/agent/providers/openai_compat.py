"""Any OpenAI-compatible Chat Completions server: OpenAI, Ollama, vLLM, LM Studio, ...

The official SDK connects, authenticates and retries (429 and 5xx are retried
before the response starts, never after a token was streamed). The stream body
itself is read raw, line by line, because the SDK's typed chunks are slow.
"""

import logging
import uuid
from contextlib import aclosing

import httpx2
import openai

from construct_core.errors import ProviderError
from construct_core.redaction import register_secret
from chat.agent.events import Chunk, Finish, Thinking, ToolCallRequest, UsageInfo
from chat.agent.providers.base import assistant_text, connection_limits, reasoning_check
from chat.agent.providers.netstream import with_network_backend
from chat.agent.providers.failures import body_message, event_failure, failure, sdk_errors
from chat.agent.providers.sse import event_json, joined_deltas, sse_reads

logger = logging.getLogger(__name__)

LABEL = "OpenAI-compatible"

# Local servers (Ollama, llama.cpp) need no key, but the SDK insists on one.
PLACEHOLDER_KEY = "no-key-needed"
CONNECT_TIMEOUT = 10.0
# Optional request settings an operator may pass through `ProviderConfig.extra`.
PASSTHROUGH = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "reasoning_effort", "extra_body")


class OpenAICompatProvider:
    """Streams Chat Completions from an OpenAI-compatible server."""

    name = "openai"
    supports_tools = True

    def __init__(self, config):
        self.model = config.model
        self._extra = dict(config.extra or {})
        self._stream_usage = self._extra.pop("stream_usage", True)
        if config.api_key:
            register_secret(config.api_key)
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key or PLACEHOLDER_KEY,
            base_url=config.base_url or None,
            timeout=httpx2.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT, config.timeout)),
            max_retries=config.max_retries,
            http_client=with_network_backend(openai.DefaultAsyncHttpxClient(limits=connection_limits(httpx2))),
        )

    async def aclose(self):
        await self._client.close()

    async def stream(self, messages, *, tools=None, reasoning="off"):
        """Stream one completion as Chunk / Thinking events, then the
        assembled ToolCallRequests, the UsageInfo (when the server reports it) and Finish.

        `reasoning` "low", "medium" or "high" is sent as `reasoning_effort`
        (reasoning models take it; "off" sends nothing).
        """
        # The history and the tool schemas are already plain JSON in the wire
        # format. Handed to the SDK as typed params, it walks them against its
        # TypedDicts: about 0.3 s of event-loop time on a full 128k context
        # (measured), during which every socket of the process stalls. As
        # extra_body they are merged into the request body as they are.
        body = {"messages": to_openai_messages(messages)}
        if tools:
            body["tools"] = to_openai_tools(tools)
        params = {"model": self.model, "messages": [], "stream": True}
        if self._stream_usage:
            params["stream_options"] = {"include_usage": True}
        for key in PASSTHROUGH:
            if key in self._extra:
                params[key] = self._extra[key]
        if reasoning_check(reasoning) != "off":
            params["reasoning_effort"] = reasoning
        params["extra_body"] = {**(params.get("extra_body") or {}), **body}
        with sdk_errors(LABEL, openai):
            # Leaving this block, also by the consumer's aclose(), closes the response.
            async with self._client.chat.completions.with_streaming_response.create(**params) as response:
                async with aclosing(self._events(response.http_response)) as events:
                    async for event in events:
                        yield event

    async def _events(self, http_response):
        reply = _Reply()
        async with aclosing(sse_reads(http_response.aiter_bytes())) as reads:
            async for events in reads:
                deltas = []  # of this read: joined into one where they can be (sse.py)
                for data in events:
                    if reply.done:
                        continue  # read on to the end of the body, so the connection is reused
                    if data == b"[DONE]":
                        reply.done = True
                        continue
                    try:
                        deltas += reply.feed(event_json(data))
                    except Exception as exc:
                        for delta in joined_deltas(deltas):  # what came before it still counts
                            yield delta
                        raise event_failure(LABEL, exc) from None
                for delta in joined_deltas(deltas):
                    yield delta
        if not reply.done and reply.finish is None:
            raise failure(LABEL, ProviderError, "Provider stream broke off before the end of the reply")
        for event in reply.ending(self.model):
            yield event


class _Reply:
    """What a completion stream says that only counts once whole: tool calls, usage, finish."""

    def __init__(self):
        self.calls = {}
        self.usage = None
        self.finish = None
        self.done = False

    def feed(self, chunk):
        """Take one chunk; return the text and thinking deltas it carries (usually one)."""
        if "error" in chunk:
            raise failure(LABEL, ProviderError, "Provider reported an error mid-stream: %s", body_message(chunk, ""))
        deltas = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                deltas.append(Thinking(reasoning))
            if delta.get("content"):
                deltas.append(Chunk(delta["content"]))
            if delta.get("tool_calls"):
                _collect_tool_calls(self.calls, delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        return deltas

    def ending(self, model):
        """The events that close a reply: each tool call whole, the usage if reported, the finish."""
        for index in sorted(self.calls):
            call = self.calls[index]
            call_id = call["id"] or "call_" + uuid.uuid4().hex[:24]
            yield ToolCallRequest(id=call_id, name=call["name"], arguments="".join(call["arguments"]) or "{}")
        if self.usage:
            yield UsageInfo(
                model=model,
                input_tokens=int(self.usage.get("prompt_tokens") or 0),
                output_tokens=int(self.usage.get("completion_tokens") or 0),
            )
        yield Finish(self.finish or "stop")


def _collect_tool_calls(calls, deltas):
    """Assemble streamed tool-call pieces by index: id and name come once, arguments in pieces."""
    for position, piece in enumerate(deltas):
        index = piece.get("index", position)
        call = calls.get(index)
        if call is None:
            call = calls[index] = {"id": "", "name": "", "arguments": []}
        if piece.get("id"):
            call["id"] = piece["id"]
        function = piece.get("function") or {}
        if function.get("name"):
            call["name"] = function["name"]
        if function.get("arguments"):
            call["arguments"].append(function["arguments"])


# --- Neutral history -> OpenAI wire format ------------------------------------------


def to_openai_messages(messages):
    """Convert neutral messages (see base.py) to Chat Completions messages.

    Only the keys Chat Completions knows go out: another provider's thinking
    blocks and a tool result's error flag are dropped; a cut-off reply says so.
    """
    converted = []
    for message in messages:
        role = message["role"]
        if role == "tool":
            converted.append(
                {"role": "tool", "tool_call_id": message["tool_call_id"], "content": message.get("content") or ""}
            )
        elif role == "assistant" and message.get("tool_calls"):
            converted.append(
                {
                    "role": "assistant",
                    "content": assistant_text(message) or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call.get("arguments") or "{}"},
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        elif role == "assistant":
            converted.append({"role": "assistant", "content": assistant_text(message)})
        else:
            content = message.get("content") or ""
            if isinstance(content, list):
                content = [_openai_part(part) for part in content]
            converted.append({"role": role, "content": content})
    return converted


def _openai_part(part):
    """A neutral content part as a Chat Completions one: an image is a `data:` URL."""
    if part["type"] == "image":
        url = f"data:{part['media_type']};base64,{part['data']}"
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "text", "text": part["text"]}


def to_openai_tools(tools):
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]
