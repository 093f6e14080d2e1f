"""Choosing the model per session over the chat socket: MODEL_NOT_FOUND, a session that goes
from an OpenAI-compatible model to an Anthropic one and back (both served by the loopback
mock), which model answered in `done`, the operator events, the REST messages and the
export, and the cost of each answer at its own model's price."""

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from chat.turns import setup
from construct_core.model_choices import models_parse
from sessions_app import exports
from sessions_app.models import ChatSession, Message, UsageRecord
from tests.chat.conftest import frames_until, is_operator_event, nothing_more, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)

GPT, CLAUDE, REASONER = "mock-gpt", "mock-claude", "mock-reasoner"
PRICES = {GPT: {"input": 1_000_000, "output": 2_000_000}, CLAUDE: {"input": 3_000_000, "output": 5_000_000}}


@pytest.fixture
def two_models(gateway, mock_llm):
    """The default model on the OpenAI-compatible wire, a thinking one on Anthropic's."""
    gateway.CONSTRUCT_MODELS = models_parse(json.dumps([
        {"id": GPT, "provider": "openai", "label": "Mock GPT", "base_url": mock_llm.openai_url},
        {"id": CLAUDE, "provider": "anthropic", "label": "Mock Claude", "base_url": mock_llm.anthropic_url,
         "thinking": True},
        {"id": REASONER, "provider": "openai", "base_url": mock_llm.openai_url, "thinking": True},
    ]))
    gateway.CONSTRUCT_PRICES = PRICES
    gateway.CONSTRUCT_REASONING_DEFAULT = "off"
    mock_llm.clear()
    return gateway


@database_sync_to_async
def session_row(session_id="s1"):
    return ChatSession.objects.filter(pk=session_id).first()


@database_sync_to_async
def message_count(session_id="s1"):
    return Message.objects.filter(session_id=session_id).count()


async def turn(comm, **frame) -> tuple[list[dict], list[dict]]:
    """Send a message; (its frames up to the end, the operator events up to its agent_end)."""
    await send(comm, type="message", **frame)
    frames, operator = [], []
    while not (frames and frames[-1]["type"] in ("done", "error", "stopped")
               and any(e["type"] in ("agent_end", "error") for e in operator)):
        received = await comm.receive_json_from(timeout=15)
        (operator.append(received["event"]) if is_operator_event(received) else frames.append(received))
    return frames, operator


# --- Refusals ----------------------------------------------------------------------------


async def test_an_unknown_model_is_refused_and_nothing_runs_or_is_kept(two_models, token, mock_llm):
    comm, start = await open_socket(token)
    assert start["model"] == GPT
    await send(comm, type="message", content="hello", model="no-such-model", client_id="c-1")
    frame = await comm.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "MODEL_NOT_FOUND"
    assert "no-such-model" in frame["message"]
    assert await nothing_more(comm)  # no ack, no turn
    assert await message_count() == 0
    assert await session_row() is None  # not even the session: it is stored with its first message
    assert mock_llm.requests() == []
    # The client id was not taken: the same message with a listed model runs.
    frames, _ = await turn(comm, content="hello", model=CLAUDE, client_id="c-1")
    assert frames[0] == {"type": "ack", "client_id": "c-1", "duplicate": False}
    assert frames[-1]["type"] == "done" and frames[-1]["model"] == CLAUDE
    await comm.disconnect()


@pytest.mark.parametrize("field, value", [("model", 7), ("model", ""), ("model", ["a"]),
                                          ("reasoning", "max"), ("reasoning", True), ("reasoning", "")])
async def test_a_malformed_model_or_reasoning_is_a_bad_frame(two_models, token, field, value):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hello", **{field: value})
    frame = await comm.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "BAD_FRAME", frame
    assert field in frame["message"]
    assert await nothing_more(comm)
    assert await message_count() == 0
    await comm.disconnect()


async def test_an_unknown_model_in_an_edit_or_regenerate_is_refused_too(two_models, token):
    comm, _ = await open_socket(token)
    frames, _ = await turn(comm, content="first")
    assert frames[-1]["type"] == "done"
    before = await message_count()
    await send(comm, type="regenerate", model="nope")
    assert (await comm.receive_json_from(timeout=10))["code"] == "MODEL_NOT_FOUND"
    await send(comm, type="edit", message_id=1, content="again", model="nope")
    assert (await comm.receive_json_from(timeout=10))["code"] == "MODEL_NOT_FOUND"
    assert await nothing_more(comm)
    assert await message_count() == before
    await comm.disconnect()


# --- Two models in one session ---------------------------------------------------------


async def test_openai_then_anthropic_and_back(two_models, token, mock_llm):
    comm, start = await open_socket(token)
    assert start["model"] == GPT  # the first in the list

    # 1. No model named: the session's default, on the OpenAI-compatible wire.
    frames, operator = await turn(comm, content="one")
    done = frames[-1]
    assert done["type"] == "done" and done["model"] == GPT
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    price = PRICES[GPT]
    assert done["usage"]["cost_usd"] == pytest.approx(
        (done["usage"]["input_tokens"] * price["input"] + done["usage"]["output_tokens"] * price["output"]) / 1e6)
    assert [(e["type"], e["model"], e["provider"]) for e in operator] == [
        ("agent_start", GPT, "openai"), ("agent_end", GPT, "openai")]
    request = mock_llm.last_request()
    assert request["_path"].endswith("/chat/completions") and request["model"] == GPT

    # 2. Switch to Claude: the Anthropic wire, with the history in its shape.
    frames, operator = await turn(comm, content="two", model=CLAUDE)
    done = frames[-1]
    assert done["model"] == CLAUDE
    assert [(e["type"], e["model"], e["provider"]) for e in operator] == [
        ("agent_start", CLAUDE, "anthropic"), ("agent_end", CLAUDE, "anthropic")]
    assert operator[1]["cost_usd"] == done["usage"]["cost_usd"]
    request = mock_llm.last_request()
    assert request["_path"].endswith("/messages") and request["model"] == CLAUDE
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert all(isinstance(m["content"], (str, list)) for m in request["messages"])
    assert (await session_row()).model == CLAUDE

    # 3. The switch holds for the next turns, and a new socket is told.
    frames, _ = await turn(comm, content="three")
    assert frames[-1]["model"] == CLAUDE
    assert mock_llm.last_request()["_path"].endswith("/messages")
    await comm.disconnect()
    comm, start = await open_socket(token)
    assert start["model"] == CLAUDE

    # 4. And back: the OpenAI-compatible wire gets the whole history, Claude's answers too.
    frames, _ = await turn(comm, content="four", model=GPT)
    assert frames[-1]["model"] == GPT
    request = mock_llm.last_request()
    assert request["_path"].endswith("/chat/completions") and request["model"] == GPT
    assert [m["role"] for m in request["messages"] if m["role"] != "system"] == ["user", "assistant"] * 3 + ["user"]
    await comm.disconnect()

    # Every answer says which model wrote it: the REST messages, the JSON and Markdown exports.
    answered = [GPT, CLAUDE, CLAUDE, GPT]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = await sync_to_async(client.get)("/api/sessions/s1/messages/")
    assistants = [m for m in response.json()["messages"] if m["role"] == "assistant"]
    assert [m["data"]["model"] for m in assistants] == answered
    assert all(set(m["data"]["usage"]) == {"input_tokens", "output_tokens", "cost_usd"} for m in assistants)
    assert all(m["data"].get("model") is None for m in response.json()["messages"] if m["role"] == "user")
    response = await sync_to_async(client.get)("/api/sessions/s1/export/?format=json")
    document = json.loads(response.content)
    assert [m["data"]["model"] for m in document["messages"] if m["role"] == "assistant"] == answered
    response = await sync_to_async(client.get)("/api/sessions/s1/export/?format=md")
    markdown = response.content.decode()
    assert [line for line in markdown.splitlines() if line.startswith("*Model:*")] == [
        f"*Model:* `{model}`" for model in answered]
    assert f"- Model: `{GPT}`" in markdown

    # Each provider call is costed at its own model's price.
    rows = await database_sync_to_async(lambda: list(UsageRecord.objects.order_by("id")))()
    assert [row.model for row in rows] == answered
    for row in rows:
        price = PRICES[row.model]
        assert row.cost_usd == Decimal(row.input_tokens * price["input"] + row.output_tokens * price["output"]) / 10**6


# --- Reasoning --------------------------------------------------------------------------


async def test_reasoning_is_kept_only_for_a_thinking_model(two_models, token):
    comm, _ = await open_socket(token)
    _, operator = await turn(comm, content="one", reasoning="high")  # GPT does not think
    assert operator[0]["reasoning"] == "off"
    _, operator = await turn(comm, content="two", model=CLAUDE, reasoning="high")
    assert operator[0]["reasoning"] == "high"
    two_models.CONSTRUCT_REASONING_DEFAULT = "low"
    _, operator = await turn(comm, content="three")
    assert operator[0]["reasoning"] == "low"
    await comm.disconnect()
    rows = await database_sync_to_async(
        lambda: list(Message.objects.filter(role="assistant").order_by("seq").values_list("data", flat=True)))()
    assert [(d["model"], d.get("reasoning")) for d in rows] == [(GPT, None), (CLAUDE, "high"), (CLAUDE, "low")]


async def test_the_level_reaches_an_agent_loop_that_takes_one(two_models, token, monkeypatch):
    """What the turn hands the agent loop, as the loop with a `reasoning` keyword will get it."""
    from chat.agent.loop import Agent

    asked = []
    original = Agent.run

    def run(self, history, ctx=None, gate=None, *, reasoning="off"):
        asked.append((self.provider.model, reasoning))
        return original(self, history, ctx, gate)

    monkeypatch.setattr(Agent, "run", run)
    comm, _ = await open_socket(token)
    await turn(comm, content="one", model=CLAUDE, reasoning="medium")
    await turn(comm, content="two", model=GPT, reasoning="high")
    await turn(comm, content="three", model=REASONER)
    await comm.disconnect()
    assert asked == [(CLAUDE, "medium"), (GPT, "off"), (REASONER, "off")]


async def test_reasoning_reaches_each_provider_in_its_own_shape(two_models, token, mock_llm):
    comm, _ = await open_socket(token)
    await turn(comm, content="think", model=CLAUDE, reasoning="high")
    assert mock_llm.last_request("/messages").get("thinking", {}).get("type") == "enabled"
    await turn(comm, content="no thinking", reasoning="off")
    assert "thinking" not in mock_llm.last_request("/messages")
    await turn(comm, content="think", model=REASONER, reasoning="medium")
    assert mock_llm.last_request("/chat/completions").get("reasoning_effort") == "medium"
    # A model that does not think is never asked to, whatever the message says.
    await turn(comm, content="think", model=GPT, reasoning="high")
    assert "reasoning_effort" not in mock_llm.last_request("/chat/completions")
    await comm.disconnect()


async def test_a_model_whose_provider_cannot_be_set_up_is_refused_before_anything_is_kept(
        two_models, token, mock_llm):
    # An Anthropic model with neither its own URL nor ANTHROPIC_API_KEY.
    two_models.CONSTRUCT_PROVIDER_KEYS = {"openai": None, "anthropic": None}
    two_models.CONSTRUCT_MODELS = (*two_models.CONSTRUCT_MODELS, *models_parse(json.dumps([
        {"id": "keyless", "provider": "anthropic"}])))
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hello", model="keyless", client_id="k-1")
    frame = await comm.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "AGENT_INIT_FAILED"
    assert await nothing_more(comm)
    assert await message_count() == 0 and await session_row() is None
    assert mock_llm.requests() == []
    await comm.disconnect()
