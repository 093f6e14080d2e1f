"""The agent over a real chat socket, against the loopback mock in both wire formats."""

import asyncio
import json
import os
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import ChatSession, Message, UsageRecord
from tests.agent.conftest import tool
from tests.chat.conftest import frames_until, open_socket, send
from tests.tools.test_shell import processes_running

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def saved(session_id="s1"):
    return list(Message.objects.filter(session_id=session_id).order_by("seq").values_list("role", "content", "data"))


@database_sync_to_async
def usage_rows():
    return list(UsageRecord.objects.order_by("id").values("session_id", "model", "input_tokens",
                                                          "output_tokens", "cost_usd"))


def of_type(frames, kind):
    return [f for f in frames if f["type"] == kind]


def model_requests(mock_llm, provider):
    return mock_llm.requests("/chat/completions" if provider == "openai" else "/messages")


# --- Tool round trips -----------------------------------------------------------------


async def test_file_write_then_file_read(provider, token, mock_llm, tmp_path):
    mock_llm.clear()
    comm, _ = await open_socket(token)
    text = "line one\nline two, with a \"quote\" and ünïcode"
    await send(comm, type="message", content=(
        tool("file_write", path="notes/a.txt", content=text) + " " + tool("file_read", path="notes/a.txt")
    ))
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done", frames[-1]
    tools = [f for f in frames if f["type"] in ("tool_call", "tool_result")]
    # Exactly one tool_call then one tool_result per call, in order.
    assert [(f["type"], f["name"]) for f in tools] == [
        ("tool_call", "file_write"), ("tool_result", "file_write"),
        ("tool_call", "file_read"), ("tool_result", "file_read"),
    ]
    # The arguments arrived in many small deltas and were put back together.
    assert tools[0]["args"] == {"path": "notes/a.txt", "content": text}
    assert tools[1]["output"] == f"Wrote {len(text.encode())} bytes to notes/a.txt"
    assert tools[3]["output"] == text and tools[3]["is_error"] is False
    assert tools[0]["id"] == tools[1]["id"] != tools[2]["id"] == tools[3]["id"]
    assert (tmp_path / "notes" / "a.txt").read_text() == text
    assert frames[-1]["full_response"] == "Tool said: " + text

    rows = await saved()
    assert [r[0] for r in rows] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert rows[1][2]["tool_calls"][0]["name"] == "file_write"
    assert rows[2][1] == tools[1]["output"] and rows[2][2]["tool_call_id"] == tools[1]["id"]
    assert rows[4][1] == text

    # The next turn sends the calls and results back to the model.
    await send(comm, type="message", content="and now?")
    assert (await frames_until(comm))[-1]["type"] == "done"
    body = model_requests(mock_llm, provider)[-1]
    if provider == "openai":
        calls = [c for m in body["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
        assert [c["function"]["name"] for c in calls] == ["file_write", "file_read"]
        assert json.loads(calls[0]["function"]["arguments"]) == {"path": "notes/a.txt", "content": text}
        results = [m for m in body["messages"] if m["role"] == "tool"]
        assert [r["tool_call_id"] for r in results] == [tools[1]["id"], tools[3]["id"]]
        assert results[1]["content"] == text
    else:
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        uses = [b for b in blocks if b["type"] == "tool_use"]
        assert [(u["name"], u["input"]) for u in uses] == [
            ("file_write", {"path": "notes/a.txt", "content": text}), ("file_read", {"path": "notes/a.txt"}),
        ]
        results = [b for b in blocks if b["type"] == "tool_result"]
        assert [r["tool_use_id"] for r in results] == [tools[1]["id"], tools[3]["id"]]
    await comm.disconnect()


async def test_shell_echo(provider, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("shell", command="echo hello from the shell"))
    frames = await frames_until(comm)
    assert [f["type"] for f in frames if f["type"].startswith("tool")] == ["tool_call", "tool_result"]
    result = of_type(frames, "tool_result")[0]
    assert (result["name"], result["output"], result["is_error"]) == ("shell", "hello from the shell\n", False)
    assert frames[-1]["full_response"] == "Tool said: hello from the shell\n"
    await comm.disconnect()


async def test_thinking_streams_and_is_kept(provider, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="ponder [[think]]")
    frames = await frames_until(comm)
    thinking = "".join(f["content"] for f in of_type(frames, "thinking"))
    assert thinking == "Let me think about this step by step."
    first_chunk = next(i for i, f in enumerate(frames) if f["type"] == "chunk")
    assert max(i for i, f in enumerate(frames) if f["type"] == "thinking") < first_chunk
    rows = await saved()
    assert rows[-1][0] == "assistant" and rows[-1][2]["thinking"] == thinking
    await comm.disconnect()


# --- Refusals are tool results --------------------------------------------------------


async def test_refused_paths_and_programs_are_tool_errors(provider, token, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("outside")
    os.symlink(outside, tmp_path / "escape.txt")
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=" ".join([
        tool("file_read", path="../../etc/passwd"),
        tool("file_read", path="/etc/passwd"),
        tool("file_write", path="escape.txt", content="overwritten"),
        tool("shell", command="rm -rf notes"),
    ]))
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    results = of_type(frames, "tool_result")
    assert [r["is_error"] for r in results] == [True, True, True, True]
    assert all("outside the workspace" in r["output"] for r in results[:3])
    assert "program 'rm' is not allowed" in results[3]["output"]
    assert "root:" not in json.dumps(frames)
    assert outside.read_text() == "outside"
    await comm.disconnect()


# --- Stop -----------------------------------------------------------------------------


async def test_stop_in_the_middle_of_a_slow_tool_kills_it(provider, token, mock_llm):
    marker = f"{30 + time.time() % 1:.5f}"
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("shell", command=f"sleep {marker}"))
    frames = await frames_until(comm, types=("tool_call",))
    for _ in range(100):
        if processes_running(f"sleep {marker}"):
            break
        await asyncio.sleep(0.02)
    assert processes_running(f"sleep {marker}"), "the tool never started"

    started = time.monotonic()
    await send(comm, type="stop")
    frames = await frames_until(comm, types=("stopped",))
    assert time.monotonic() - started < 1.0
    assert processes_running(f"sleep {marker}") == []
    assert not of_type(frames, "tool_result")
    session = await database_sync_to_async(ChatSession.objects.get)(pk="s1")
    assert session.state == "idle"

    # The session takes the next message, and the provider gets a history it
    # accepts: the stopped call has a result.
    mock_llm.clear()
    await send(comm, type="message", content="still there?")
    assert (await frames_until(comm))[-1]["type"] == "done"
    body = model_requests(mock_llm, provider)[-1]
    if provider == "openai":
        results = [m for m in body["messages"] if m["role"] == "tool"]
        assert [r["content"] for r in results] == ["[no result: the turn ended before this tool finished]"]
    else:
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        assert [b["type"] for b in blocks if b["type"] in ("tool_use", "tool_result")] == ["tool_use", "tool_result"]
    await comm.disconnect()


async def test_stop_mid_stream_on_anthropic(gateway, token, mock_llm):
    gateway.CONSTRUCT_PROVIDER = "anthropic"
    gateway.CONSTRUCT_BASE_URL = mock_llm.anthropic_url
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=200]] [[delay_ms=20]]")
    first = [await comm.receive_json_from(timeout=10) for _ in range(3)]
    started = time.monotonic()
    await send(comm, type="stop")
    frames = await frames_until(comm, types=("stopped",))
    assert time.monotonic() - started < 1.0
    streamed = "".join(f["content"] for f in first + frames if f["type"] == "chunk")
    assert streamed and frames[-1]["full_response"] == streamed
    rows = await saved()
    assert rows[-1][1] == streamed and rows[-1][2]["stopped"] is True
    await send(comm, type="message", content="next")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


# --- Limits ----------------------------------------------------------------------------


async def test_the_iteration_limit(provider, token, gateway):
    gateway.CONSTRUCT_MAX_TOOL_ITERATIONS = 2
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=" ".join(tool("shell", command=f"echo {i}") for i in range(3)))
    frames = await frames_until(comm)
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "AGENT_ERROR"
    assert error["message"] == "Agent exceeded maximum tool iterations (2)"
    assert len(of_type(frames, "tool_call")) == len(of_type(frames, "tool_result")) == 2
    await comm.disconnect()


# --- Cost ------------------------------------------------------------------------------


async def test_usage_is_recorded_and_priced(provider, token, gateway):
    gateway.CONSTRUCT_MODEL = "vendor/mock-model"
    gateway.CONSTRUCT_PRICES = {"mock-model": {"input": 3.0, "output": 15.0}}  # by the part after '/'
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("shell", command="echo priced"))
    done = (await frames_until(comm))[-1]
    rows = await usage_rows()
    assert len(rows) == 2  # one per provider call: the tool call, then the answer
    for row in rows:
        assert row["session_id"] == "s1" and row["model"] == "vendor/mock-model"
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        expected = (Decimal(3) * row["input_tokens"] + Decimal(15) * row["output_tokens"]) / 1_000_000
        assert row["cost_usd"] == expected
    assert done["usage"]["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert done["usage"]["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert done["usage"]["cost_usd"] == pytest.approx(float(sum(r["cost_usd"] for r in rows)))

    gateway.CONSTRUCT_PRICES = {"vendor/mock-model": {"input": 1.0, "output": 1.0},
                                "mock-model": {"input": 100.0, "output": 100.0}}  # the exact name wins
    await send(comm, type="message", content="again")
    await frames_until(comm)
    last = (await usage_rows())[-1]
    assert last["cost_usd"] == Decimal(last["input_tokens"] + last["output_tokens"]) / 1_000_000
    await comm.disconnect()


async def test_an_unpriced_model_costs_nothing(gateway, token):
    gateway.CONSTRUCT_PRICES = {}
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="free")
    done = (await frames_until(comm))[-1]
    assert done["usage"]["cost_usd"] == 0
    assert [r["cost_usd"] for r in await usage_rows()] == [Decimal(0)]
    await comm.disconnect()
