"""Wire-format details a live stream against the mock rarely shows: history
conversion edge cases, and stream pieces that other servers send."""

import pytest

from construct_core.errors import ProviderError
from chat.agent.providers import anthropic, openai_compat
from chat.agent.providers.anthropic import to_anthropic_messages
from chat.agent.events import Finish
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
