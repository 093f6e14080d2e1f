"""Wire-format details a live stream against the mock rarely shows: history
conversion edge cases, and stream pieces that other servers send."""

import pytest

from construct_core.errors import ProviderError
from chat.agent.providers import anthropic, openai_compat
from chat.agent.providers.anthropic import to_anthropic_messages
from chat.agent.events import Finish, ProviderBlocks
from chat.agent.events import Thinking as ThinkingDelta
from chat.agent.providers.openai_compat import to_openai_messages, to_openai_tools


def test_anthropic_keeps_bad_tool_arguments_and_drops_empty_assistant_turns():
    system, messages = to_anthropic_messages(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "name": "x", "arguments": "{oops"}]},
            {"role": "tool", "tool_call_id": "t1", "name": "x", "content": "err"},
            {"role": "user", "content": "next"},
        ]
    )
    assert system == ""
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "user"]
    assert messages[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "x", "input": {"_raw_arguments": "{oops"}}]
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": "err"}]
    assert messages[3] == {"role": "user", "content": "next"}


def test_openai_plain_assistant_text_stays_a_string_and_empty_arguments_become_an_object():
    messages = to_openai_messages(
        [
            {"role": "assistant", "content": "hello"},
            {"role": "assistant", "content": "calling", "tool_calls": [{"id": "c1", "name": "f", "arguments": ""}]},
        ]
    )
    assert messages[0] == {"role": "assistant", "content": "hello"}
    assert messages[1]["content"] == "calling"
    assert messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_openai_tools_without_parameters_get_an_empty_object_schema():
    [tool] = to_openai_tools([{"name": "clear_canvas"}])
    assert tool == {
        "type": "function",
        "function": {"name": "clear_canvas", "description": "", "parameters": {"type": "object", "properties": {}}},
    }


# --- stream pieces a live server rarely sends ----------------------------------------


def test_openai_reasoning_field_of_ollama_and_openrouter_is_thinking_too():
    reply = openai_compat._Reply()
    assert reply.feed({"choices": [{"index": 0, "delta": {"reasoning": "hmm"}}]}) == [ThinkingDelta("hmm")]


def test_openai_tool_calls_without_index_or_id_are_still_assembled():
    reply = openai_compat._Reply()
    reply.feed({"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": '{"a":'}}]}}]})
    reply.feed({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]})
    [call, finish] = list(reply.ending("m"))
    assert (call.name, call.arguments) == ("f", '{"a":1}') and call.id.startswith("call_")
    assert finish == Finish("tool_calls")


@pytest.mark.parametrize(
    ("reply", "event"),
    [
        (openai_compat._Reply, {"error": {"message": "model crashed"}}),
        (anthropic._Reply, {"type": "error", "error": {"type": "overloaded_error", "message": "model crashed"}}),
    ],
)
def test_an_error_event_mid_stream_is_a_provider_error(reply, event):
    with pytest.raises(ProviderError, match="mid-stream: .*model crashed"):
        reply().feed(event)


# --- Thinking blocks, errors and cut-off replies across the two formats ------------------

THOUGHT = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}
CALL = {"id": "t1", "name": "x", "arguments": "{}"}


def assistant(**extra):
    return {"role": "assistant", "content": "text", "tool_calls": [CALL], **extra}


def test_anthropic_sends_its_own_blocks_first_and_drops_unsigned_or_foreign_ones():
    unsigned = {"type": "thinking", "thinking": "half", "signature": ""}
    odd = {"type": "thinking", "thinking": "x", "signature": "s", "provider_extra": 1}
    _, [own] = to_anthropic_messages([assistant(thinking_blocks=[THOUGHT, unsigned, REDACTED, odd],
                                                provider="anthropic")])
    assert own["content"] == [
        THOUGHT, REDACTED, {"type": "thinking", "thinking": "x", "signature": "s"},
        {"type": "text", "text": "text"}, {"type": "tool_use", "id": "t1", "name": "x", "input": {}},
    ]
    _, [foreign] = to_anthropic_messages([assistant(thinking_blocks=[THOUGHT], provider="other")])
    _, [unnamed] = to_anthropic_messages([assistant(thinking_blocks=[THOUGHT])])
    assert [b["type"] for b in foreign["content"]] == [b["type"] for b in unnamed["content"]] == ["text", "tool_use"]


def test_openai_gets_no_thinking_block_no_provider_and_no_error_flag():
    messages = to_openai_messages([
        assistant(thinking_blocks=[THOUGHT, REDACTED], provider="anthropic"),
        {"role": "tool", "tool_call_id": "t1", "name": "x", "content": "boom", "is_error": True},
        {"role": "assistant", "content": "done", "thinking_blocks": [THOUGHT], "provider": "anthropic"},
    ])
    assert messages == [
        {"role": "assistant", "content": "text",
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "boom"},
        {"role": "assistant", "content": "done"},
    ]


def test_a_cut_off_reply_is_marked_for_both_and_keeps_no_thinking():
    message = {"role": "assistant", "content": "Half", "incomplete": True, "thinking_blocks": [THOUGHT],
               "provider": "anthropic"}
    _, [sent] = to_anthropic_messages([message])
    assert sent == {"role": "assistant", "content": [{"type": "text", "text": "Half\n\n[reply cut off]"}]}
    assert to_openai_messages([message]) == [{"role": "assistant", "content": "Half\n\n[reply cut off]"}]


def test_anthropic_tool_result_says_is_error_only_when_it_failed():
    _, [results] = to_anthropic_messages([
        {"role": "tool", "tool_call_id": "a", "name": "x", "content": "boom", "is_error": True},
        {"role": "tool", "tool_call_id": "b", "name": "x", "content": "ok"},
    ])
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "boom", "is_error": True},
        {"type": "tool_result", "tool_use_id": "b", "content": "ok"},
    ]


def test_anthropic_stream_keeps_thinking_and_redacted_blocks_in_the_order_they_came():
    reply = anthropic._Reply()
    events = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "R1"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "a "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "b"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "signature_delta", "signature": "S1"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "redacted_thinking", "data": "R2"}},
        {"type": "content_block_stop", "index": 2},
    ]
    deltas = [reply.feed(event) for event in events]
    assert [d for d in deltas if d is not None] == [ThinkingDelta("a "), ThinkingDelta("b")]
    blocks, *_ = list(reply.ending("m"))
    assert blocks == ProviderBlocks("anthropic", [
        {"type": "redacted_thinking", "data": "R1"},
        {"type": "thinking", "thinking": "a b", "signature": "S1"},
        {"type": "redacted_thinking", "data": "R2"},
    ])
