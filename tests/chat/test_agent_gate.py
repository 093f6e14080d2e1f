"""The agent's gate alone: a tool call runs only when the turn's gate says so."""

from chat.agent.events import Chunk, Record, ToolCall, ToolCallRequest, ToolResult, Verdict
from chat.agent.loop import Agent, unanswered_calls
from chat.agent.tools.base import ToolRegistry
from tests.chat.test_agent import ScriptedModel, echo_tool

HISTORY = [{"role": "user", "content": "go"}]


def agent_with_echo(model):
    return Agent(model, ToolRegistry([echo_tool()]))


async def run(agent, history, gate):
    return [event async for event in agent.run(history, gate=gate)]


async def test_a_denied_call_is_not_run_and_the_model_goes_on():
    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", "echo", '{"text": "hi"}'))
    model.enqueue(Chunk("ok then"))
    asked = []

    async def gate(call):
        asked.append(call)
        return Verdict(run=False, reason="Denied by phone: echo was not run")

    events = await run(agent_with_echo(model), HISTORY, gate)
    assert [call.id for call in asked] == ["c1"]
    assert ToolCall("c1", "echo", {"text": "hi"}) in events
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result == ToolResult("c1", "echo", "Denied by phone: echo was not run", True)
    records = [e for e in events if isinstance(e, Record)]
    assert records[1].message["content"] == "Denied by phone: echo was not run"
    assert records[1].data == {"denied": True, "is_error": True}
    # The model saw the denial and answered.
    assert model.calls[1]["messages"][-1]["content"] == "Denied by phone: echo was not run"
    assert records[-1].message == {"role": "assistant", "content": "ok then"}


async def test_replaced_arguments_are_what_runs_and_are_checked_like_the_models():
    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", "echo", '{"text": "model"}'),
                  ToolCallRequest("c2", "echo", '{"text": "model"}'))
    model.enqueue(Chunk("done"))
    replies = {"c1": Verdict(args={"text": "person"}), "c2": Verdict(args={"wrong": 1})}

    async def gate(call):
        return replies[call.id]

    events = await run(agent_with_echo(model), HISTORY, gate)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results[0] == ToolResult("c1", "echo", "echo:person", False)
    assert results[1].is_error and "missing text" in results[1].output


async def test_no_gate_runs_everything():
    model = ScriptedModel()
    model.enqueue(ToolCallRequest("c1", "echo", '{"text": "x"}'))
    model.enqueue(Chunk("fine"))
    events = await run(agent_with_echo(model), HISTORY, None)
    assert ToolResult("c1", "echo", "echo:x", False) in events


def test_unanswered_calls():
    calls = [{"id": "a", "name": "echo", "arguments": '{"text": "1"}'},
             {"id": "b", "name": "echo", "arguments": '{"text": "2"}'}]
    assistant = {"role": "assistant", "content": "", "tool_calls": calls}
    answered_a = {"role": "tool", "tool_call_id": "a", "name": "echo", "content": "echo:1"}
    assert unanswered_calls(HISTORY) == []
    assert unanswered_calls([*HISTORY, assistant]) == [
        ToolCallRequest("a", "echo", '{"text": "1"}'), ToolCallRequest("b", "echo", '{"text": "2"}')]
    assert unanswered_calls([*HISTORY, assistant, answered_a]) == [
        ToolCallRequest("b", "echo", '{"text": "2"}')]
    assert unanswered_calls([*HISTORY, assistant, answered_a, {"role": "user", "content": "x"}]) == []
    assert unanswered_calls([*HISTORY, {"role": "assistant", "content": "hi"}]) == []


async def test_a_saved_turn_is_continued_from_its_unanswered_calls():
    """A history ending in calls without results: they are answered first, then the model again."""
    model = ScriptedModel()
    model.enqueue(Chunk("after"))
    history = [*HISTORY, {"role": "assistant", "content": "",
                          "tool_calls": [{"id": "c9", "name": "echo", "arguments": '{"text": "late"}'}]}]
    asked = []

    async def gate(call):
        asked.append(call.id)
        return Verdict()

    events = await run(agent_with_echo(model), history, gate)
    assert asked == ["c9"]
    assert not any(isinstance(e, ToolCall) for e in events)  # announced before, by the first process
    assert ToolResult("c9", "echo", "echo:late", False) in events
    assert model.calls[0]["messages"][-1] == {"role": "tool", "tool_call_id": "c9", "name": "echo",
                                              "content": "echo:late"}
    assert [e for e in events if isinstance(e, Record)][-1].message["content"] == "after"
