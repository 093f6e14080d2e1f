"""The chat page with two models: the picker, the answering model's name on each reply, the
reasoning switch for a model that thinks, and each answer's tokens and cost (also after a reload)."""

import json

import pytest

from tests.browser.helpers import (
    api, last_answer, open_paired, screenshot, send, session_id_of, wait_turn_end,
)
from tests.browser.conftest import browser_server
from tests.e2e.conftest import gateway_env

GPT, CLAUDE = "mock-gpt", "mock-claude"


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, mock_llm_process):
    """The gateway with two models, one per wire format, both the mock LLM process; priced."""
    root = mock_llm_process.openai_url.removesuffix("/v1")
    models = [
        {"id": GPT, "provider": "openai", "label": "Mock GPT", "base_url": mock_llm_process.openai_url},
        {"id": CLAUDE, "provider": "anthropic", "label": "Mock Claude", "base_url": root, "thinking": True},
    ]
    prices = {GPT: {"input": 1.0, "output": 2.0}, CLAUDE: {"input": 3000.0, "output": 15000.0}}
    env = gateway_env(mock_llm_process, CONSTRUCT_MODELS=json.dumps(models),
                      CONSTRUCT_PRICES=json.dumps(prices))
    with browser_server(tmp_path_factory, "browser-models", env) as server:
        yield server


def test_pick_a_model_see_its_name_switch_reasoning_on_see_tokens_and_cost(chat_server, page, token):
    open_paired(page, chat_server, token)
    picker = page.get_by_label("Model")
    page.wait_for_function("() => document.querySelectorAll('#model-select option').length === 2")
    assert page.locator("#model-picker").is_visible()
    assert picker.input_value() == GPT  # the session's model: the first in the list
    assert page.locator("#model-select option").all_inner_texts() == ["Mock GPT", "Mock Claude"]
    assert not page.locator("#reasoning-picker").is_visible()  # this one does not think

    send(page, "hello there")
    wait_turn_end(page, 1, "done")
    answer = last_answer(page)
    assert answer.locator(".model-name").inner_text() == "Mock GPT"
    assert answer.get_attribute("data-model") == GPT
    usage = answer.locator(".turn-usage").inner_text()
    assert " in · " in usage and " out tokens · $" in usage

    # Pick Claude with the keyboard: the reasoning switch appears; turn it on.
    picker.focus()
    picker.select_option(CLAUDE)
    reasoning = page.get_by_label("Reasoning")
    reasoning.wait_for(state="visible")
    assert reasoning.input_value() == "off"  # CONSTRUCT_REASONING_DEFAULT
    reasoning.select_option("high")

    send(page, "think hard")
    wait_turn_end(page, 2, "done")
    answer = last_answer(page)
    assert answer.locator(".model-name").inner_text() == "Mock Claude"
    claude_usage = answer.locator(".turn-usage").inner_text()
    assert " out tokens · $" in claude_usage and claude_usage != usage
    assert picker.input_value() == CLAUDE
    screenshot(page, "models-picker-and-usage")

    session_id = session_id_of(page)
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session_id}/messages/")
    assert status == 200
    answers = [m["data"] for m in body["messages"] if m["role"] == "assistant"]
    assert [(d["model"], d.get("reasoning")) for d in answers] == [(GPT, None), (CLAUDE, "high")]
    status, session = api(chat_server, token, "GET", f"/api/sessions/{session_id}/")
    assert session["model"] == CLAUDE

    # After a reload the stored answers still say who wrote them and what they cost.
    page.reload()
    wait_turn_end(page, 2)
    names = page.locator("article.msg.assistant .model-name").all_inner_texts()
    assert names == ["Mock GPT", "Mock Claude"]
    usages = page.locator("article.msg.assistant .turn-usage").all_inner_texts()
    assert usages == [usage, claude_usage]
    assert page.get_by_label("Model").input_value() == CLAUDE
    assert page.get_by_label("Reasoning").input_value() == "high"  # remembered
