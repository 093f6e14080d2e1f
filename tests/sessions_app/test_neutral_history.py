"""Stored messages become the neutral history the providers are sent (selectors.message_to_neutral)."""

import pytest

from sessions_app import selectors, services
from tests.factories import make_session

pytestmark = pytest.mark.django_db

BLOCKS = [
    {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
    {"type": "redacted_thinking", "data": "EmwKAhgB"},
]


def history(session_id="s"):
    messages, _dropped = selectors.history_for_provider(session_id=session_id, token_budget=10_000)
    return messages


def test_thinking_blocks_and_their_provider_come_back_the_page_s_thinking_text_does_not():
    make_session(session_id="s")
    call = {"id": "toolu_1", "name": "shell", "arguments": "{}"}
    services.messages_append(session_id="s", messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Looking.", "data": {
            "thinking": "Let me think.", "thinking_blocks": BLOCKS, "provider": "anthropic",
            "tool_calls": [call]}},
        {"role": "tool", "content": "boom", "data": {"tool_call_id": "toolu_1", "name": "shell",
                                                     "is_error": True}},
        {"role": "assistant", "content": "It failed."},
    ])

    assert history() == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [call], "thinking_blocks": BLOCKS,
         "provider": "anthropic"},
        {"role": "tool", "tool_call_id": "toolu_1", "name": "shell", "content": "boom", "is_error": True},
        {"role": "assistant", "content": "It failed."},
    ]


def test_blocks_without_the_provider_that_wrote_them_are_left_out():
    make_session(session_id="s")
    services.messages_append(session_id="s", messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "ok", "data": {"thinking_blocks": BLOCKS}},
    ])
    assert history()[1] == {"role": "assistant", "content": "ok"}


@pytest.mark.parametrize("mark", [{"stopped": True}, {"error": "PROVIDER_ERROR"}])
def test_a_reply_saved_cut_off_is_marked_incomplete(mark):
    make_session(session_id="s")
    services.messages_append(session_id="s", messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Half an ans", "data": mark},
        {"role": "user", "content": "again"},
    ])
    assert history()[1] == {"role": "assistant", "content": "Half an ans", "incomplete": True}
