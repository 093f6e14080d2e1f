"""Hostile frames for the chat socket, what the contract says each must get, and reply checks.

A "program" is a list of steps. Each step is ("text", str), ("bytes", bytes)
or ("valid", content, with_client_id) or ("resend",): a valid message, or a
resend of the last one that carried a client id. `expect` is the test's
oracle: it reads the contract (CONTRACT.md, section 5) for one frame.
"""

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MAX_FRAME_BYTES = 1_048_576

KNOWN_TYPES = {
    "session_start", "connected", "chunk", "thinking", "tool_call", "tool_result",
    "operator_status", "chunk_reset", "done", "error", "stopped", "ack", "agent_event",
    "approval_request", "approval_result", "history",
}
KNOWN_CODES = {
    "AGENT_INIT_FAILED", "INVALID_JSON", "UNKNOWN_MESSAGE_TYPE", "EMPTY_CONTENT", "SESSION_BUSY",
    "AUTH_ERROR", "PROVIDER_ERROR", "AGENT_ERROR", "MESSAGE_TOO_LARGE", "RATE_LIMITED",
    "BAD_FRAME", "BUDGET_EXCEEDED", "APPROVAL_INVALID", "MESSAGE_NOT_FOUND",
}
# Types whose frames act on the session rather than answer with one reply.
_ACTIVE_TYPES = {"message", "stop", "connect", "approval", "switch_branch", "edit", "regenerate"}
# No message of a fuzzed session ever has an id this high: a switch to one is MESSAGE_NOT_FOUND.
_UNUSED_ID = 10**12
_MESSAGE_ID_MAX = 2**63 - 1

settings.register_profile(
    "socket-fuzz",
    deadline=None,
    database=None,  # nothing written into the work tree
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# --- Strategies -----------------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(max_size=20))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                       max_size=4),
    max_leaves=12,
)
surrogate = st.integers(0xD800, 0xDFFF).map(chr)
# Message text the mock LLM echoes plainly: no "[[directive]]", something to say.
plain_text = st.text(min_size=1, max_size=60).filter(
    lambda t: t.strip() and "[[" not in t and "\x00" not in t)


def _active(kind) -> bool:
    return isinstance(kind, str) and kind in _ACTIVE_TYPES


def _dump(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _wrong_typed_message():
    """A message frame whose fields have any JSON type at all (mostly the wrong one)."""
    optional = st.one_of(st.just(None), json_values)
    return st.builds(
        lambda content, client_id, page, extra: _dump(
            {"type": "message", "content": content,
             **({"client_id": client_id} if client_id is not None else {}),
             **({"page_context": page} if page is not None else {}), **extra}),
        content=json_values, client_id=optional, page=optional,
        extra=st.dictionaries(st.text(max_size=8).filter(
            lambda k: k not in ("type", "content", "client_id")), json_values, max_size=3),
    )


def _other_types():
    """Any frame whose "type" is not one the socket acts on."""
    return st.builds(
        lambda kind, extra: _dump({"type": kind, **extra}),
        kind=json_values.filter(lambda v: not _active(v)),
        extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values,
                              max_size=3),
    )


def _approval_answers():
    """An `approval` frame with fields of any type; no approval waits, so each is APPROVAL_INVALID."""
    optional = st.one_of(st.just(None), json_values)
    return st.builds(
        lambda approval_id, decision, args: _dump(
            {"type": "approval",
             **({"approval_id": approval_id} if approval_id is not None else {}),
             **({"decision": decision} if decision is not None else {}),
             **({"args": args} if args is not None else {})}),
        approval_id=st.one_of(optional, st.text(max_size=80)),
        decision=st.one_of(optional, st.sampled_from(["approve", "deny", "always", "timeout"])),
        args=optional,
    )


def _branch_switches():
    """A `switch_branch` frame whose message_id is of any type, or an id no message has."""
    return st.builds(
        lambda message_id: _dump({"type": "switch_branch",
                                  **({"message_id": message_id} if message_id is not None else {})}),
        message_id=st.one_of(json_values, st.integers(min_value=_UNUSED_ID),
                             st.integers(max_value=0)).filter(
            lambda v: not (type(v) is int and 0 < v < _UNUSED_ID)),
    )


def _surrogate_frames(raw_too):
    """Lone surrogates as JSON escapes (valid UTF-8 on the wire) and, in process only, as such."""
    escaped = surrogate.map(lambda c: '{"type":"message","content":"a\\u%04x"}' % ord(c))
    in_client_id = surrogate.map(
        lambda c: '{"type":"message","content":"ok","client_id":"\\u%04x"}' % ord(c))
    if not raw_too:
        return escaped | in_client_id
    raw = surrogate.map(lambda c: '{"type":"message","content":"b' + c + '"}')
    return escaped | raw | in_client_id


_HUGE = {
    "deep array": lambda: "[" * 100_000,
    "closed deep array": lambda: "[" * 5_000 + "]" * 5_000,
    "deep field": lambda: '{"type":"message","content":"deep","x":' + "[" * 50_000 + "]" * 50_000 + "}",
    "deep object": lambda: '{"a":' * 20_000 + "1" + "}" * 20_000,
    "huge content": lambda: _dump({"type": "message", "content": "x" * (MAX_FRAME_BYTES + 1)}),
    # Over the limit in bytes though not in characters.
    "huge in bytes": lambda: _dump({"type": "message", "content": "é" * (MAX_FRAME_BYTES // 2 + 1)}),
    "huge list": lambda: _dump({"type": "nope", "pad": ["y" * 1000] * 1100}),
    "nul": lambda: '{"type":"message","content":"nul\\u0000"}',
}


def _deep_and_huge():
    # Built from a name, so hypothesis never has to print a megabyte.
    return st.sampled_from(sorted(_HUGE)).map(lambda name: _HUGE[name]())


def junk_text(raw_surrogates=True):
    parts = [
        st.text(max_size=40),  # mostly not JSON at all
        json_values.filter(lambda v: not (isinstance(v, dict) and _active(v.get("type"))))
        .map(_dump),  # JSON, seldom an object
        _wrong_typed_message(),
        _other_types(),
        _approval_answers(),
        _branch_switches(),
        _deep_and_huge(),
    ]
    parts.append(_surrogate_frames(raw_surrogates))
    return st.one_of(*parts).map(lambda text: ("text", text)).filter(lambda step: step[1])


def _valid_steps():
    return st.tuples(st.just("valid"), plain_text, st.booleans())


def steps(raw_surrogates=True):
    junk = junk_text(raw_surrogates)
    return st.one_of(junk, junk, junk, _valid_steps(), st.just(("resend",)),
                     st.binary(min_size=1, max_size=64).map(lambda b: ("bytes", b)))


def _with_valid(program, placed):
    """`program` with each valid step of `placed` inserted at its (wrapped) position."""
    program = list(program)
    for position, step in placed:
        program.insert(position % (len(program) + 1), step)
    return program


def programs(raw_surrogates=True, min_size=25, max_size=80):
    """Lists of steps; `raw_surrogates=False` for a real client, which cannot send them.

    Each program holds at least three valid messages among the hostile frames, wherever
    the draw puts them: how many valid steps a free draw of `steps` gives is up to the
    seed (a derandomized run gave 45 in 2,700 frames), and the history check is only
    worth something with valid messages to keep in order.
    """
    return st.builds(
        _with_valid,
        st.lists(steps(raw_surrogates), min_size=min_size, max_size=max_size),
        st.lists(st.tuples(st.integers(0, 10**6), _valid_steps()), min_size=3, max_size=8),
    )


# --- The oracle ------------------------------------------------------------------------


def _storable(text) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expect(step) -> tuple[str, object]:
    """("error", code) for a frame the socket refuses, or ("valid", (content, client_id))."""
    if step[0] == "bytes":
        return "error", "BAD_FRAME"
    text = step[1]
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        return "error", "MESSAGE_TOO_LARGE"
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return "error", "INVALID_JSON"
    if not isinstance(frame, dict):
        return "error", "BAD_FRAME"
    kind = frame.get("type")
    if kind == "approval":
        return "error", "APPROVAL_INVALID"  # there is never one to answer
    if kind == "switch_branch":
        message_id = frame.get("message_id")
        if type(message_id) is int and 0 < message_id <= _MESSAGE_ID_MAX:
            return "error", "MESSAGE_NOT_FOUND"  # no message has such an id
        return "error", "BAD_FRAME"
    if kind != "message":
        assert not _active(kind), "the strategies never make stop, connect, edit or regenerate frames"
        return "error", "UNKNOWN_MESSAGE_TYPE"
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        return "error", "EMPTY_CONTENT"
    if not _storable(content):
        return "error", "BAD_FRAME"
    client_id = frame.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 128
                                  or not _storable(client_id)):
        return "error", "BAD_FRAME"
    return "valid", (content, client_id)


def echo(content: str) -> str:
    """What the mock LLM answers to a plain message."""
    return "Echo: " + " ".join(content.split())


# --- Reply checks ------------------------------------------------------------------------


def check_frame(raw: str) -> dict:
    """Every reply is a JSON object of a known type; an error has a code and a message."""
    frame = json.loads(raw)
    assert isinstance(frame, dict), raw[:200]
    assert frame.get("type") in KNOWN_TYPES, raw[:200]
    if frame["type"] == "error":
        assert frame.get("code") in KNOWN_CODES, raw[:200]
        assert isinstance(frame.get("message"), str) and frame["message"], raw[:200]
        assert len(frame["message"]) <= 600, raw[:200]
    if "turn_id" in frame:
        assert isinstance(frame.get("seq"), int) and frame["seq"] >= 1, raw[:200]
    return frame
