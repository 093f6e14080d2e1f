"""The history sent to the provider stays inside CONSTRUCT_CONTEXT_TOKENS."""

import logging
import re

import pytest
from channels.db import database_sync_to_async

from chat.turns import setup as runtime
from sessions_app import selectors, services
from sessions_app.selectors import UNANSWERED_TOOL_CALL, pair_tool_results
from tests.chat.conftest import frames_until, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)

FILLER = "x" * 396  # about 100 tokens a message


def fill_session(session_id, rounds):
    """`rounds` exchanges of user, assistant-with-a-tool-call, tool result, assistant answer."""
    services.session_open(session_id=session_id, user_id=services.default_owner().pk)
    items = []
    for i in range(rounds):
        call = {"id": f"call-{i}", "name": "shell", "arguments": '{"command": "echo hi"}'}
        items += [
            {"role": "user", "content": f"question {i} {FILLER}"},
            {"role": "assistant", "content": "", "data": {"tool_calls": [call]}},
            {"role": "tool", "content": f"result {i} {FILLER}", "data": {"tool_call_id": f"call-{i}", "name": "shell"}},
            {"role": "assistant", "content": f"answer {i} {FILLER}"},
        ]
    services.messages_append(session_id=session_id, messages=items)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


async def test_the_provider_gets_the_system_prompt_and_only_the_newest_messages(gateway, token, mock_llm):
    await database_sync_to_async(fill_session)("s1", 50)  # 200 messages, about 15,000 tokens
    gateway.CONSTRUCT_CONTEXT_TOKENS = 20_000
    budget = runtime.history_budget()
    gateway.CONSTRUCT_CONTEXT_TOKENS -= budget - 1000  # 1,000 tokens for the history: about ten messages
    assert runtime.history_budget() == 1000
    mock_llm.clear()
    comm, _ = await open_socket(token)
    # Our own handler: caplog's is gone once the ASGI app's django.setup() reconfigured logging.
    log, logger = Lines(), logging.getLogger("sessions_app.selectors")
    logger.addHandler(log)
    try:
        await send(comm, type="message", content="the newest question")
        assert (await frames_until(comm))[-1]["type"] == "done"
    finally:
        logger.removeHandler(log)
    sent = mock_llm.requests()[-1]["messages"]
    assert sent[0] == {"role": "system", "content": runtime.SYSTEM_PROMPT}
    history = sent[1:]
    assert 8 <= len(history) <= 16
    assert sum(len(m.get("content") or "") for m in history) <= 4 * 1000  # about 4 characters a token
    assert history[0]["role"] == "user"  # the window opens on a question, never mid-exchange
    assert history[-1] == {"role": "user", "content": "the newest question"}
    assert history[-2]["content"] == f"answer 49 {FILLER}"  # messages are kept whole
    # Every tool result is right after the call it answers.
    for index, message in enumerate(history):
        if message["role"] == "tool":
            call_ids = [c["id"] for c in history[index - 1].get("tool_calls") or ()]
            assert message["tool_call_id"] in call_ids
    dropped = 201 - len(history)
    assert log.lines == [f"history of session s1: sent {len(history)} messages, left out {dropped} to fit 1000 tokens"]
    await comm.disconnect()


def test_a_window_never_opens_on_a_tool_result(db):
    fill_session("s2", 3)
    # An exchange estimates at 105 + 10 + 105 + 105 = 325 tokens.
    history, dropped = selectors.history_for_provider(session_id="s2", token_budget=330)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[0]["content"].startswith("question 2 ")
    assert dropped == 8
    # A budget that reaches back to the middle of the exchange: its tail is not
    # sent without the question (nor a tool result without its call).
    history, dropped = selectors.history_for_provider(session_id="s2", token_budget=300)
    assert (history, dropped) == ([], 12)


def test_unanswered_calls_get_a_result_and_stray_results_go():
    calls = [{"id": "a", "name": "shell", "arguments": "{}"}, {"id": "b", "name": "file_read", "arguments": "{}"}]
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a", "name": "shell", "content": "ok"},
        {"role": "tool", "tool_call_id": "zzz", "name": "shell", "content": "stray"},
        {"role": "user", "content": "next"},
    ]
    assert pair_tool_results(messages) == [
        messages[0], messages[1], messages[2],
        {"role": "tool", "tool_call_id": "b", "name": "file_read", "content": UNANSWERED_TOOL_CALL,
         "is_error": True},
        messages[4],
    ]


def test_the_read_costs_the_window_not_the_session(db, django_assert_max_num_queries):
    fill_session("long", 500)  # 2,000 messages
    with django_assert_max_num_queries(3) as queries:  # the count, then a page or two of the newest
        history, dropped = selectors.history_for_provider(session_id="long", token_budget=2000)
    reads = [q["sql"] for q in queries.captured_queries if "sessions_app_message" in q["sql"]]
    assert reads and all(re.search(r"LIMIT \d+$", sql) for sql in reads)  # never the whole session
    assert history[-1]["content"] == f"answer 499 {FILLER}"
    assert dropped == 2000 - len(history) > 1900
