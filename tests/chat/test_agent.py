"""The agent loop alone: no database, no socket, a scripted model."""

import asyncio

import pytest

from chat.agent.events import Chunk, OperatorStatus, Record, Thinking, ToolCall, ToolResult, UsageInfo
from chat.agent.loop import Agent
from construct_core.errors import AgentError
from chat.agent.events import Chunk as TextDelta
from chat.agent.events import Thinking as ThinkingDelta
from chat.agent.events import ToolCallRequest
from chat.agent.events import UsageInfo as Usage
from chat.agent.tools.base import Tool, ToolContext, ToolFailed, ToolRegistry


class ScriptedModel:
    """A provider whose replies are enqueued, one list of stream events per call."""

    name = "scripted"
    model = "scripted-1"
    supports_tools = True

    def __init__(self):
        self.replies = []
        self.calls = []

    def enqueue(self, *events):
        self.replies.append(list(events))

    async def stream(self, messages, *, tools=None, reasoning="off"):
        self.calls.append({"messages": [dict(m) for m in messages], "tools": tools, "reasoning": reasoning})
        for event in self.replies.pop(0):
            await asyncio.sleep(0)
            yield event

    async def aclose(self):
        pass


async def collect(agent, history):
    return [event async for event in agent.run(history)]


def echo_tool():
    async def run(args, ctx):
        ctx.status("tool", "echoing")
        return "echo:" + args["text"]

    return Tool("echo", "Echo text back", {"type": "object", "required": ["text"],
                                          "properties": {"text": {"type": "string"}}}, run)


async def test_text_and_thinking_stream_and_one_record():
    model = ScriptedModel()
    model.enqueue(ThinkingDelta("hmm"), TextDelta("Hel"), TextDelta("lo"), Usage("scripted-1", 5, 2))
    events = await collect(Agent(model, system_prompt="be nice"), [{"role": "user", "content": "hi"}])
    assert events == [
        Thinking("hmm"), Chunk("Hel"), Chunk("lo"), UsageInfo("scripted-1", 5, 2),
        Record({"role": "assistant", "content": "Hello"}, {"thinking": "hmm"}),
    ]
    assert model.calls[0]["messages"][0] == {"role": "system", "content": "be nice"}


async def test_a_tool_round_trip():
    model = ScriptedModel()
    model.enqueue(TextDelta("Let me see. "), ToolCallRequest("c1", "echo", '{"text": "ping"}'))
    model.enqueue(TextDelta("It said ping."))
    agent = Agent(model, ToolRegistry([echo_tool()]))
    events = await collect(agent, [{"role": "user", "content": "go"}])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Chunk", "Record", "ToolCall", "OperatorStatus", "ToolResult", "Record", "Chunk", "Record"]
    assert events[2] == ToolCall("c1", "echo", {"text": "ping"})
    assert events[3] == OperatorStatus("tool", "echoing")
    assert events[4] == ToolResult("c1", "echo", "echo:ping", False)
    second = model.calls[1]["messages"]
    assert second[-2]["tool_calls"] == [{"id": "c1", "name": "echo", "arguments": '{"text": "ping"}'}]
    assert second[-1] == {"role": "tool", "tool_call_id": "c1", "name": "echo", "content": "echo:ping"}
    assert model.calls[0]["tools"][0]["name"] == "echo"


@pytest.mark.parametrize(
    "name, arguments, expected",
    [
        ("nope", "{}", "Unknown tool 'nope'"),
        ("echo", "{not json", "not valid JSON"),
        ("echo", "[1]", "expected a JSON object"),
        ("echo", "{}", "missing text"),
    ],
)
async def test_bad_tool_calls_are_results_not_crashes(name, arguments, expected):
    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", name, arguments))
    model.enqueue(TextDelta("ok"))
    events = await collect(Agent(model, ToolRegistry([echo_tool()])), [{"role": "user", "content": "x"}])
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error and expected in result.output
    assert isinstance(events[-1], Record) and events[-1].message["content"] == "ok"


async def test_a_failing_tool_is_a_result():
    async def broken(args, ctx):
        raise ToolFailed("disk on fire")

    async def buggy(args, ctx):
        raise RuntimeError("oops")

    model = ScriptedModel()
    model.enqueue(ToolCallRequest("a", "broken", "{}"), ToolCallRequest("b", "buggy", "{}"))
    model.enqueue(TextDelta("done"))
    tools = ToolRegistry([Tool("broken", "", {}, broken), Tool("buggy", "", {}, buggy)])
    events = await collect(Agent(model, tools), [{"role": "user", "content": "x"}])
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.output for r in results] == ["Error: disk on fire", "Error: buggy failed: oops"]


async def test_iteration_limit():
    model = ScriptedModel()
    for i in range(3):
        model.enqueue(ToolCallRequest(f"c{i}", "echo", '{"text": "again"}'))
    agent = Agent(model, ToolRegistry([echo_tool()]), max_iterations=3)
    with pytest.raises(AgentError, match=r"Agent exceeded maximum tool iterations \(3\)"):
        await collect(agent, [{"role": "user", "content": "loop"}])
    assert len(model.calls) == 3


async def test_cancelling_a_turn_cancels_the_running_tool():
    cancelled = asyncio.Event()

    async def slow(args, ctx):
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", "slow", "{}"))

    async def run():
        async for _ in Agent(model, ToolRegistry([Tool("slow", "", {}, slow)])).run(
            [{"role": "user", "content": "x"}], ToolContext()
        ):
            pass

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_reasoning_reaches_every_model_call_of_the_turn_and_defaults_to_off():
    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", "echo", '{"text": "a"}'))
    model.enqueue(TextDelta("done"))
    agent = Agent(model, ToolRegistry([echo_tool()]))
    [event async for event in agent.run([{"role": "user", "content": "go"}], reasoning="high")]
    assert [call["reasoning"] for call in model.calls] == ["high", "high"]

    model.enqueue(TextDelta("plain"))
    await collect(agent, [{"role": "user", "content": "go"}])
    assert model.calls[-1]["reasoning"] == "off"
