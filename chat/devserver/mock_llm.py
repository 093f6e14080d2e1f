"""A scripted stand-in for an LLM provider, speaking the real wire formats.

Demos, development, tests and the load benchmark need a model that answers at
once, costs nothing and can be told to misbehave. This server speaks the OpenAI
Chat Completions format (`/v1/chat/completions`, `/v1/models`) and the Anthropic
Messages format (`/v1/messages`), streaming or not, so the official SDKs talk to
it unchanged.

What it answers is scripted by directives written anywhere in the last user
message (see `parse_script`):

    [[chunks=N]]        reply "tok1 ", "tok2 ", ... in N chunks
    [[delay_ms=D]]      sleep D ms between chunks
    [[stamp]]           every text chunk is "<t:%.6f> " % time.time() at write time
    [[think]]           stream some reasoning first
    [[think_key]]       stream reasoning that holds the API key the request carried,
                        split across two deltas (a provider leaking it where a client
                        only ever sees it in pieces)
    [[tool:NAME {json}]]  call a tool (several run in order, one per model round);
                        `[[key]]` inside the JSON becomes the API key the request carried
    [[echo_prompt]]     reply with the last user message exactly as received
    [[echo_key]]        reply with the API key the request carried (a provider leaking it)
    [[fail=CODE]]       answer HTTP CODE with the provider's error body
    [[fail_once=CODE]]  fail the first time this request body is seen only
    [[reset_after=N]]   stream N chunks, then drop the connection
    [[reset_once=N]]    as reset_after, the first time this user message is seen only
    [[malformed]]       send one data line that is not JSON mid-stream
    [[hang]]            send one chunk, then go quiet until the client leaves
    [[silent]]          answer 200 and then send nothing at all until the client leaves
    [[side_reply=TEXT]] answer a request that offers no tools (a side call, such as a chat's
                        title) with TEXT; a request that offers tools answers as usual
    [[side_fail=CODE]]  answer HTTP CODE to a request that offers no tools only
    [[title_reply=TEXT]] answer a side call that carries a system instruction (the
                        gateway's title call) with TEXT; a request with no system
                        message (a bare relay's) answers as usual
    [[redacted_think]]  (Anthropic) start the reply with a redacted_thinking block
    [[replay=NAME]]     (Anthropic) stream one of the documented "Streaming Messages"
                        event sequences as it is (`REPLAYS`: text, thinking_tool,
                        error); later rounds, after tool results, answer as usual

The Anthropic side checks requests as the real API does and answers 400 for a
message or block with keys the API does not take, a thinking block without its
signature or whose text or signature is not exactly what this server issued, a
redacted_thinking block it did not issue, and, with `thinking` enabled, a tool
loop whose last assistant message does not start with its thinking block. A
request with `thinking` enabled is answered with thinking first.

The default reply is "Echo: <the user text without directives>", word by word.
`GET /_mock/requests` lists the last request bodies (each with `_path`,
`_headers` and `_disconnected` added; secret header values are masked) and
`DELETE /_mock/requests` forgets them.

The per-chunk path is deliberately plain: frames are formatted from string
templates and written straight to ASGI `send`, because the benchmark streams
tens of thousands of chunks through this one process.
"""

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "mock-llm"
HANG_SECONDS = 3600.0
REQUEST_LOG_SIZE = 50
ISSUED_SIZE = 10000  # thinking signatures remembered, to check them when they come back
# Asks the SDKs to retry a failure after 10 ms instead of their default back-off,
# which keeps retry tests fast; real providers send the same header family.
RETRY_AFTER_MS = "10"
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"})

_dumps = json.dumps

# --- Directives -----------------------------------------------------------------

_NUMBER_DIRECTIVE = re.compile(
    r"\[\[(chunks|delay_ms|fail|fail_once|reset_after|reset_once|side_fail)=(\d+)\]\]")
_SIDE_REPLY_DIRECTIVE = re.compile(r"\[\[(side_reply|title_reply)=([^\]]*)\]\]")
_FLAG_DIRECTIVE = re.compile(
    r"\[\[(stamp|think|think_key|echo_prompt|echo_key|malformed|hang|silent|redacted_think)\]\]")
_REPLAY_DIRECTIVE = re.compile(r"\[\[replay=([a-z_]+)\]\]")
_TOOL_DIRECTIVE = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)\s*")
# Splits text into word-sized pieces whose concatenation is the text itself.
_PIECES = re.compile(r"\s+|\S+\s*")


@dataclass(slots=True)
class Script:
    """What the last user message asks the mock to do."""

    raw: str = ""
    text: str = ""
    chunks: int | None = None
    delay: float = 0.0
    stamp: bool = False
    think: bool = False
    think_key: bool = False
    echo_prompt: bool = False
    echo_key: bool = False
    malformed: bool = False
    hang: bool = False
    silent: bool = False
    redacted_think: bool = False
    replay: str | None = None
    fail: int | None = None
    fail_once: int | None = None
    reset_after: int | None = None
    reset_once: int | None = None
    side_fail: int | None = None
    side_reply: str | None = None
    title_reply: str | None = None
    tools: list[tuple[str, str]] = field(default_factory=list)
    side_call: bool = False  # the request offers no tools
    instructed: bool = False  # ... and it has a system message
    key: str = ""  # the API key the request carried, for the directives that leak it


def parse_script(raw):
    """Read the directives out of a user message; the rest is the text to echo."""
    script = Script(raw=raw)
    decoder = json.JSONDecoder()
    kept, position = [], 0
    for match in _TOOL_DIRECTIVE.finditer(raw):
        if match.start() < position:
            continue
        try:
            _, end = decoder.raw_decode(raw, match.end())
        except ValueError:
            continue
        close = raw.find("]]", end)
        if close == -1 or raw[end:close].strip():
            continue
        # The arguments go out exactly as written, so a test can compare them byte for byte.
        script.tools.append((match.group(1), raw[match.end() : end]))
        kept.append(raw[position : match.start()])
        position = close + 2
    kept.append(raw[position:])
    text = "".join(kept)
    for name, value in _NUMBER_DIRECTIVE.findall(text):
        number = int(value)
        if name == "delay_ms":
            script.delay = number / 1000.0
        else:
            setattr(script, name, number)
    for name in _FLAG_DIRECTIVE.findall(text):
        setattr(script, name, True)
    for name in _REPLAY_DIRECTIVE.findall(text):
        script.replay = name
    for name, reply in _SIDE_REPLY_DIRECTIVE.findall(text):
        setattr(script, name, reply)
    text = _SIDE_REPLY_DIRECTIVE.sub("", text)
    text = _REPLAY_DIRECTIVE.sub("", _FLAG_DIRECTIVE.sub("", _NUMBER_DIRECTIVE.sub("", text)))
    script.text = " ".join(text.split())
    return script


# --- Conversations: the last user text and the tool results after it -------------


def _text_of(content):
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _openai_turn(messages):
    """(last user text, tool results after it, whether the last message is a tool result)."""
    last_user = -1
    for index, message in enumerate(messages):
        if message.get("role") == "user":
            last_user = index
    raw = _text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    results = [_text_of(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    ends_with_tool = bool(messages) and messages[-1].get("role") == "tool"
    return raw, results, ends_with_tool


def _anthropic_tool_results(message):
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return []
    return [
        _text_of(block.get("content"))
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


def _anthropic_turn(messages):
    """Like `_openai_turn`; tool results live in user messages as tool_result blocks."""
    last_user = -1
    for index, message in enumerate(messages):
        if message.get("role") == "user" and not _anthropic_tool_results(message):
            last_user = index
    raw = _text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    results = [text for message in messages[last_user + 1 :] for text in _anthropic_tool_results(message)]
    ends_with_tool = bool(messages) and bool(_anthropic_tool_results(messages[-1]))
    return raw, results, ends_with_tool


# --- The reply plan ----------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """One model round: reasoning pieces, then either text pieces or one tool call.

    A text piece of None means "a time stamp, taken when the chunk is written".
    """

    thinking: list[str]
    text: list[str | None]
    tool_name: str | None = None
    tool_id: str = ""
    tool_args: str = ""
    tool_pieces: list[str] = field(default_factory=list)
    prompt_tokens: int = 1
    signature: str = ""  # the thinking's signature (Anthropic), issued by _State.sign
    redacted: str = ""  # a redacted_thinking block's data (Anthropic), issued by _State.redact

    @property
    def piece_count(self):
        return len(self.thinking) + len(self.text) + len(self.tool_pieces)


def _pieces(text):
    return _PIECES.findall(text) or [text]


def make_plan(script, tool_results, ends_with_tool, prompt_chars, id_prefix):
    """Decide this round's answer from the script and the tool results so far."""
    thinking = ["Let me think ", "about this ", "step by step."] if script.think else []
    if script.think_key:
        half = len(script.key) // 2
        thinking = ["Let me think about the key ", script.key[:half], script.key[half:] + " step by step."]
    plan = Plan(thinking=thinking, text=[], prompt_tokens=max(1, prompt_chars // 4))
    done = len(tool_results)
    if script.tools and done < len(script.tools) and (ends_with_tool or done == 0):
        plan.tool_name, plan.tool_args = script.tools[done]
        plan.tool_args = plan.tool_args.replace("[[key]]", _dumps(script.key)[1:-1])
        plan.tool_id = id_prefix + uuid.uuid4().hex[:24]
        args = plan.tool_args
        plan.tool_pieces = [args[i : i + 4] for i in range(0, len(args), 4)] or [""]
        return plan
    if tool_results:
        reply = "Tool said: " + tool_results[-1]
        plan.text = _pieces(reply)
    elif script.side_reply is not None and script.side_call:
        plan.text = _pieces(script.side_reply)
    elif script.title_reply is not None and script.side_call and script.instructed:
        plan.text = _pieces(script.title_reply)
    elif script.echo_prompt:
        plan.text = _pieces(script.raw)
    elif script.chunks is not None:
        plan.text = [f"tok{i} " for i in range(1, script.chunks + 1)]
    else:
        plan.text = _pieces("Echo: " + script.text if script.text else "Echo:")
    if script.stamp:
        plan.text = [None] * len(plan.text)
    return plan


def _stamp():
    return "<t:%.6f> " % time.time()


# --- Stream control ------------------------------------------------------------------

# Sentinels the frame generators yield between byte frames; `_SSEStream` acts on them.
_PAUSE = object()
_DROP = object()
_HANG = object()


class _DropConnection(Exception):
    """Raised inside the app to make uvicorn cut the TCP connection mid-response."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection we drop on purpose."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DropConnection)


class _Controls:
    """Inserts pauses, a malformed line, a hang or a drop before content pieces."""

    def __init__(self, script, plan, malformed_frame):
        self.script = script
        self.count = 0
        self.malformed_at = max(1, plan.piece_count // 2) if script.malformed else -1
        self.malformed_frame = malformed_frame

    def before(self):
        script = self.script
        if self.count:
            if script.delay:
                yield _PAUSE
            if self.count == 1 and script.hang:
                yield _HANG
        if self.count == self.malformed_at:
            yield self.malformed_frame
        if script.reset_after is not None and self.count >= script.reset_after:
            yield _DROP
        self.count += 1

    def at_end(self):
        if self.script.hang and self.count == 1:
            yield _HANG
        if self.script.reset_after is not None:
            yield _DROP


class _SSEStream:
    """An ASGI response writing SSE frames as they are generated.

    A watcher task notices when the client goes away, so a stopped stream ends
    here too and the request log can say so.
    """

    _HEADERS = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-request-id", b"req_mock"),
    ]

    def __init__(self, frames, delay, record):
        self.frames = frames
        self.delay = delay
        self.record = record

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": self._HEADERS})
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            for frame in self.frames:
                if frame.__class__ is bytes:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                elif frame is _PAUSE:
                    await asyncio.sleep(self.delay)
                elif frame is _HANG:
                    await asyncio.wait((watcher,), timeout=HANG_SECONDS)
                elif frame is _DROP:
                    raise _DropConnection()
                if watcher.done():
                    self.record["_disconnected"] = True
                    return
        finally:
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


# --- OpenAI format ---------------------------------------------------------------------


def _openai_frames(script, plan, model, include_usage):
    head = (
        'data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,"model":%s,'
        '"choices":[{"index":0,"delta":' % (uuid.uuid4().hex[:24], int(time.time()), _dumps(model))
    )
    tail = ',"logprobs":null,"finish_reason":null}]}\n\n'
    controls = _Controls(script, plan, b"data: {this is not json\n\n")
    if script.silent:
        yield _HANG
    yield (head + '{"role":"assistant","content":""}' + tail).encode()
    for piece in plan.thinking:
        yield from controls.before()
        yield (head + '{"reasoning_content":' + _dumps(piece) + "}" + tail).encode()
    if plan.tool_name is not None:
        for number, piece in enumerate(plan.tool_pieces):
            yield from controls.before()
            if number == 0:
                call = '{"index":0,"id":%s,"type":"function","function":{"name":%s,"arguments":%s}}' % (
                    _dumps(plan.tool_id),
                    _dumps(plan.tool_name),
                    _dumps(piece),
                )
            else:
                call = '{"index":0,"function":{"arguments":%s}}' % _dumps(piece)
            yield (head + '{"tool_calls":[' + call + "]}" + tail).encode()
    for piece in plan.text:
        yield from controls.before()
        yield (head + '{"content":' + _dumps(_stamp() if piece is None else piece) + "}" + tail).encode()
    yield from controls.at_end()
    finish = "tool_calls" if plan.tool_name is not None else "stop"
    yield (head + '{},"logprobs":null,"finish_reason":"%s"}]}\n\n' % finish).encode()
    if include_usage:
        usage = _dumps(_openai_usage(plan), separators=(",", ":"))
        yield (head.replace('"choices":[{"index":0,"delta":', '"choices":[],"usage":') + usage + "}\n\n").encode()
    yield b"data: [DONE]\n\n"


def _openai_usage(plan):
    completion = plan.piece_count
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }


def _openai_message(plan, model):
    """The whole reply as a non-streaming chat.completion object."""
    message = {"role": "assistant", "content": None}
    if plan.thinking:
        message["reasoning_content"] = "".join(plan.thinking)
    if plan.tool_name is not None:
        message["tool_calls"] = [
            {"id": plan.tool_id, "type": "function", "function": {"name": plan.tool_name, "arguments": plan.tool_args}}
        ]
    else:
        message["content"] = "".join(_stamp() if piece is None else piece for piece in plan.text)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if plan.tool_name is not None else "stop",
            }
        ],
        "usage": _openai_usage(plan),
    }


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again shortly."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _openai_error(status, key):
    kind, code, message = _OPENAI_ERRORS.get(status, ("server_error", None, f"Mock failure {status}."))
    body = {"error": {"message": message.format(key=key), "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers={"retry-after-ms": RETRY_AFTER_MS})


# --- Anthropic format ------------------------------------------------------------------


def _event(name, payload):
    return b"event: " + name + b"\ndata: " + payload.encode() + b"\n\n"


def _anthropic_frames(script, plan, model):
    controls = _Controls(script, plan, b"event: content_block_delta\ndata: {this is not json\n\n")
    if script.silent:
        yield _HANG
    message = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": 1},
    }
    yield _event(b"message_start", _dumps({"type": "message_start", "message": message}, separators=(",", ":")))
    yield _event(b"ping", '{"type":"ping"}')
    index = 0
    if plan.redacted:
        yield _block_start(index, '{"type":"redacted_thinking","data":%s}' % _dumps(plan.redacted))
        yield _block_stop(index)
        index += 1
    if plan.thinking:
        yield _block_start(index, '{"type":"thinking","thinking":"","signature":""}')
        for piece in plan.thinking:
            yield from controls.before()
            yield _block_delta(index, '{"type":"thinking_delta","thinking":%s}' % _dumps(piece))
        yield _block_delta(index, '{"type":"signature_delta","signature":%s}' % _dumps(plan.signature))
        yield _block_stop(index)
        index += 1
    if plan.tool_name is not None:
        start = '{"type":"tool_use","id":%s,"name":%s,"input":{}}' % (_dumps(plan.tool_id), _dumps(plan.tool_name))
        yield _block_start(index, start)
        for piece in plan.tool_pieces:
            yield from controls.before()
            yield _block_delta(index, '{"type":"input_json_delta","partial_json":%s}' % _dumps(piece))
    else:
        yield _block_start(index, '{"type":"text","text":""}')
        for piece in plan.text:
            yield from controls.before()
            text = _stamp() if piece is None else piece
            yield _block_delta(index, '{"type":"text_delta","text":%s}' % _dumps(text))
    yield from controls.at_end()
    yield _block_stop(index)
    stop = "tool_use" if plan.tool_name is not None else "end_turn"
    yield _event(
        b"message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},"usage":{"output_tokens":%d}}'
        % (stop, plan.piece_count),
    )
    yield _event(b"message_stop", '{"type":"message_stop"}')


def _block_start(index, block):
    payload = '{"type":"content_block_start","index":%d,"content_block":%s}' % (index, block)
    return _event(b"content_block_start", payload)


def _block_delta(index, delta):
    return _event(b"content_block_delta", '{"type":"content_block_delta","index":%d,"delta":%s}' % (index, delta))


def _block_stop(index):
    return _event(b"content_block_stop", '{"type":"content_block_stop","index":%d}' % index)


def _anthropic_message(plan, model):
    """The whole reply as a non-streaming Messages API object."""
    content = []
    if plan.redacted:
        content.append({"type": "redacted_thinking", "data": plan.redacted})
    if plan.thinking:
        content.append({"type": "thinking", "thinking": "".join(plan.thinking), "signature": plan.signature})
    if plan.tool_name is not None:
        tool_input = json.loads(plan.tool_args)
        content.append({"type": "tool_use", "id": plan.tool_id, "name": plan.tool_name, "input": tool_input})
    else:
        content.append({"type": "text", "text": "".join(_stamp() if piece is None else piece for piece in plan.text)})
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if plan.tool_name is not None else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.piece_count},
    }


_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key: {key}"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Anthropic's API is temporarily overloaded."),
}


def _anthropic_error(status, key):
    kind, message = _ANTHROPIC_ERRORS.get(status, ("api_error", f"Mock failure {status}."))
    body = {"type": "error", "error": {"type": kind, "message": message.format(key=key)}, "request_id": "req_mock"}
    return JSONResponse(body, status_code=status, headers={"retry-after-ms": RETRY_AFTER_MS})


# --- Anthropic's documented event sequences, replayed as they are ----------------------
#
# The shapes of the "Streaming Messages" documentation's examples: a text reply
# with its `ping`; extended thinking (`thinking_delta`s, then one
# `signature_delta`) followed by text and a tool_use built from
# `input_json_delta` fragments; and an `error` event in the middle of a reply.

REPLAY_THINKING = (
    "The user wants the weather in San Francisco. ",
    "I should call get_weather with the location.",
)
REPLAY_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds" + "Mock" * 8
REPLAY_TOOL_ID = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
REPLAY_TOOL_JSON = ("", '{"location":', ' "San Fra', 'ncisco, CA"', ', "unit": "fah', 'renheit"}')


def _replay_start(model, usage):
    message = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant", "content": [],
               "model": model, "stop_reason": None, "stop_sequence": None}
    if usage is not None:
        message["usage"] = usage
    return ("message_start", {"type": "message_start", "message": message})


def _replay_block(index, block, deltas):
    yield ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
    for delta in deltas:
        yield ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
    yield ("content_block_stop", {"type": "content_block_stop", "index": index})


def _replay_text(model):
    yield _replay_start(model, {"input_tokens": 25, "output_tokens": 1})
    yield ("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})
    yield ("ping", {"type": "ping"})
    for text in ("Hello", "!"):
        yield ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": text}})
    yield ("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": 15}})
    yield ("message_stop", {"type": "message_stop"})


def _replay_thinking_tool(model):
    yield _replay_start(model, {"input_tokens": 472, "output_tokens": 2})
    thinking = [{"type": "thinking_delta", "thinking": piece} for piece in REPLAY_THINKING]
    thinking.append({"type": "signature_delta", "signature": REPLAY_SIGNATURE})
    yield from _replay_block(0, {"type": "thinking", "thinking": ""}, thinking)
    yield ("ping", {"type": "ping"})
    text = [{"type": "text_delta", "text": piece} for piece in ("Okay, let's check ", "the weather for San Francisco, CA:")]
    yield from _replay_block(1, {"type": "text", "text": ""}, text)
    tool = [{"type": "input_json_delta", "partial_json": piece} for piece in REPLAY_TOOL_JSON]
    yield from _replay_block(2, {"type": "tool_use", "id": REPLAY_TOOL_ID, "name": "get_weather", "input": {}}, tool)
    yield ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"output_tokens": 89}})
    yield ("message_stop", {"type": "message_stop"})


def _replay_error(model):
    yield _replay_start(model, {"input_tokens": 25, "output_tokens": 1})
    yield ("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})
    yield ("ping", {"type": "ping"})
    yield ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": "Hello"}})
    yield ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


REPLAYS = {"text": _replay_text, "thinking_tool": _replay_thinking_tool, "error": _replay_error}


def _replay_frames(name, model):
    for event, payload in REPLAYS[name](model):
        yield _event(event.encode(), _dumps(payload))


# --- Anthropic's request checks ------------------------------------------------------------

# The keys each content block may have (the API refuses any other: "Extra inputs are not permitted").
_BLOCK_KEYS = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control"},
    "document": {"type", "source", "title", "context", "citations", "cache_control"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
    "thinking": {"type", "thinking", "signature"},
    "redacted_thinking": {"type", "data"},
}
_BLOCK_REQUIRED = {
    "text": ("text",),
    "image": ("source",),
    "tool_use": ("id", "name", "input"),
    "tool_result": ("tool_use_id",),
    "thinking": ("thinking", "signature"),
    "redacted_thinking": ("data",),
}
_THINKING_FIRST = (
    "messages.%d.content.0.type: Expected `thinking` or `redacted_thinking`, but found `%s`. When `thinking` "
    "is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of "
    "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To "
    "avoid this requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _anthropic_problem(body, state):
    """What the real API would refuse in this request (its 400 message), or None."""
    messages = body["messages"]
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] <= budget:
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
        if "temperature" in body and body["temperature"] != 1:
            return "`temperature` may only be set to 1 when thinking is enabled."
        if "top_k" in body:
            return "`top_k` must be unset when thinking is enabled."
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        for key in set(message) - {"role", "content"}:
            return f"messages.{i}.{key}: Extra inputs are not permitted"
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"messages.{i}.content: Input should be a valid string or list"
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in _BLOCK_KEYS:
                return f"{where}: Input tag {kind!r} found using 'type' does not match any of the expected tags"
            for key in set(block) - _BLOCK_KEYS[kind]:
                return f"{where}.{kind}.{key}: Extra inputs are not permitted"
            for key in _BLOCK_REQUIRED.get(kind, ()):
                if key not in block:
                    return f"{where}.{kind}.{key}: Field required"
            if kind == "thinking" and state.signatures.get(block["signature"]) != block["thinking"]:
                return f"{where}: Invalid `signature` in `thinking` block"
            if kind == "redacted_thinking" and block["data"] not in state.redacted:
                return f"{where}: Invalid `data` in `redacted_thinking` block"
    if thinking.get("type") == "enabled" and messages and _anthropic_tool_results(messages[-1]):
        # A tool loop is under way: its last assistant message must start with its thinking.
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is not None:
            content = messages[last]["content"]
            first = "text" if isinstance(content, str) else (content[0].get("type") if content else "nothing")
            if first not in ("thinking", "redacted_thinking"):
                return _THINKING_FIRST % (last, first)
    return None


def _anthropic_invalid(message):
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message},
            "request_id": "req_mock"}
    return JSONResponse(body, status_code=400)


# --- The app ------------------------------------------------------------------------------


class _State:
    """What the mock remembers: recent requests, and bodies that already failed once."""

    def __init__(self):
        self.requests = deque(maxlen=REQUEST_LOG_SIZE)
        self.failed_once = set()
        self.reset_once = set()  # user messages whose first stream was dropped already
        # Thinking signatures and redacted-thinking data issued (kept across a log clear:
        # a conversation may go on after it), so what comes back can be checked.
        self.signatures = OrderedDict({REPLAY_SIGNATURE: "".join(REPLAY_THINKING)})
        self.redacted = OrderedDict()

    def sign(self, thinking):
        """A new signature for this thinking text, as the real API issues one per block."""
        signature = base64.b64encode(b"\x12" + secrets.token_bytes(47)).decode()
        self.signatures[signature] = thinking
        _trim(self.signatures)
        return signature

    def redact(self):
        """New opaque data for a redacted_thinking block."""
        data = base64.b64encode(b"\x12" + secrets.token_bytes(95)).decode()
        self.redacted[data] = True
        _trim(self.redacted)
        return data

    async def record(self, request):
        body_bytes = await request.body()
        try:
            body = json.loads(body_bytes) if body_bytes else {}
        except ValueError:
            body = None
        entry = dict(body) if isinstance(body, dict) else {"_raw": body_bytes.decode(errors="replace")}
        entry["_path"] = request.url.path
        entry["_headers"] = {
            name: ("[MASKED]" if name in SECRET_HEADERS else value) for name, value in request.headers.items()
        }
        entry["_disconnected"] = False
        self.requests.append(entry)
        return body, body_bytes, entry

    def should_fail(self, script, body_bytes):
        if script.fail:
            return script.fail
        if script.side_fail and script.side_call:
            return script.side_fail
        if script.fail_once:
            digest = hashlib.sha256(body_bytes).digest()
            if digest not in self.failed_once:
                self.failed_once.add(digest)
                return script.fail_once
        return None

    def drop_once(self, script):
        """`reset_once` becomes `reset_after` the first time its user message is seen."""
        if script.reset_once is not None and script.raw not in self.reset_once:
            self.reset_once.add(script.raw)
            script.reset_after = script.reset_once


def _trim(issued):
    while len(issued) > ISSUED_SIZE:
        issued.popitem(last=False)


def _bearer_key(request):
    value = request.headers.get("authorization", "")
    return value[7:] if value[:7].lower() == "bearer " else value


def _prompt_chars(body):
    return len(json.dumps(body.get("messages", []))) + len(str(body.get("system", "")))


def create_app():
    """Build a fresh mock server app with its own request log."""
    state = _State()

    async def models(request):
        return JSONResponse(
            {"object": "list", "data": [{"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "mock"}]}
        )

    async def chat_completions(request):
        body, body_bytes, entry = await state.record(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _openai_error(400, "")
        raw, results, ends_with_tool = _openai_turn(body["messages"])
        script = parse_script(raw)
        script.side_call = not body.get("tools")
        script.instructed = any(isinstance(m, dict) and m.get("role") in ("system", "developer")
                                for m in body["messages"])
        script.key = _bearer_key(request)
        failure = state.should_fail(script, body_bytes)
        if failure:
            return _openai_error(failure, script.key)
        state.drop_once(script)
        if script.echo_key:
            script.text = script.key
        plan = make_plan(script, results, ends_with_tool, _prompt_chars(body), "call_")
        model = body.get("model") or DEFAULT_MODEL
        if not body.get("stream"):
            return JSONResponse(_openai_message(plan, model))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _SSEStream(_openai_frames(script, plan, model, include_usage), script.delay, entry)

    async def messages(request):
        body, body_bytes, entry = await state.record(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _anthropic_error(400, "")
        raw, results, ends_with_tool = _anthropic_turn(body["messages"])
        script = parse_script(raw)
        script.side_call = not body.get("tools")
        script.instructed = bool(body.get("system"))
        # The SDK sends its key as x-api-key or, lately, as a bearer token.
        script.key = request.headers.get("x-api-key") or _bearer_key(request)
        failure = state.should_fail(script, body_bytes)
        if failure:
            return _anthropic_error(failure, script.key)
        state.drop_once(script)
        problem = _anthropic_problem(body, state)
        if problem:
            return _anthropic_invalid(problem)
        if script.echo_key:
            script.text = script.key
        model = body.get("model") or DEFAULT_MODEL
        if script.replay and not results and body.get("stream"):
            if script.replay not in REPLAYS:
                return _anthropic_invalid(f"mock: no replay {script.replay!r}; one of {', '.join(REPLAYS)}")
            return _SSEStream(_replay_frames(script.replay, model), script.delay, entry)
        # With thinking enabled, the real model thinks before each answer.
        script.think = script.think or (body.get("thinking") or {}).get("type") == "enabled"
        plan = make_plan(script, results, ends_with_tool, _prompt_chars(body), "toolu_")
        if plan.thinking:
            plan.signature = state.sign("".join(plan.thinking))
        if script.redacted_think:
            plan.redacted = state.redact()
        if not body.get("stream"):
            return JSONResponse(_anthropic_message(plan, model))
        return _SSEStream(_anthropic_frames(script, plan, model), script.delay, entry)

    async def request_log(request):
        if request.method == "DELETE":
            state.requests.clear()
            state.failed_once.clear()
            state.reset_once.clear()
            return Response(status_code=204)
        return JSONResponse(list(state.requests))

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/_mock/requests", request_log, methods=["GET", "DELETE"]),
        ]
    )


def make_server(host="127.0.0.1", port=11435):
    """A uvicorn server for the mock app; the caller runs `serve()` on it."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def bound_port(server):
    """The port a started server listens on (useful when asked for port 0)."""
    return server.servers[0].sockets[0].getsockname()[1]


async def _serve_and_announce(server, host):
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        print(f"mock_llm listening on http://{host}:{bound_port(server)}/v1", flush=True)
    await task


def serve(host="127.0.0.1", port=11435):
    """Run the mock until interrupted, announcing the URL once it listens."""
    server = make_server(host, port)
    try:
        asyncio.run(_serve_and_announce(server, host))
    except KeyboardInterrupt:
        pass
