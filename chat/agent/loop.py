"""The agent loop: a provider, tools and a history in; typed events out.

Imports neither Django nor Channels. Persisting and sending are the caller's job:
the loop yields `Record` for every message the history should keep.
"""

import asyncio
import dataclasses
import json
import logging
from typing import AsyncIterator

from construct_core import tracing
from construct_core.errors import AgentError, ProviderError
from construct_core.redaction import scrub
from typing import Awaitable, Callable

from chat.agent.events import (
    Chunk, Finish, OperatorStatus, ProviderBlocks, Record, Thinking, ToolCall, ToolCallRequest, ToolResult, TurnEvent,
    UsageInfo, Verdict,
)
from chat.agent.tools.base import ToolContext, ToolRegistry

logger = logging.getLogger(__name__)

# Asked before each tool call runs: run it (maybe with other arguments), or not.
Gate = Callable[[ToolCallRequest], Awaitable[Verdict]]
RUN = Verdict()


def _parse_args(arguments: str):
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments


def unanswered_calls(history: list[dict]) -> list[ToolCallRequest]:
    """The tool calls of the history's last assistant message that have no result after it.

    A turn saved up to such calls (it waited for a person's approval, and its
    process died) is continued from there: `Agent.run` answers them first.
    Empty when anything but tool results follows the last assistant message.
    """
    answered = set()
    for message in reversed(history):
        role = message.get("role")
        if role == "tool":
            answered.add(message.get("tool_call_id"))
            continue
        if role != "assistant":
            return []
        return [
            ToolCallRequest(call.get("id", ""), call.get("name", ""), call.get("arguments") or "")
            for call in message.get("tool_calls") or ()
            if call.get("id", "") not in answered
        ]
    return []


class _CallSeen:
    """What a traced model call's span records of its stream: the model, usage and finish reasons."""

    __slots__ = ("model", "input_tokens", "output_tokens", "reasons")

    def __init__(self):
        self.model = None
        self.input_tokens = self.output_tokens = None
        self.reasons: list[str] = []

    def see(self, event) -> None:
        kind = event.__class__
        if kind is UsageInfo:
            self.model = event.model or self.model
            self.input_tokens = (self.input_tokens or 0) + event.input_tokens
            self.output_tokens = (self.output_tokens or 0) + event.output_tokens
        elif kind is Finish:
            self.reasons.append(event.reason)

    def attributes(self) -> dict:
        return {
            "gen_ai.response.model": self.model,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.response.finish_reasons": tuple(self.reasons) or None,
        }


def _seconds(value: float) -> str:
    """"1 second", "0.5 seconds", "60 seconds"."""
    return "1 second" if value == 1 else f"{value:g} seconds"


class Agent:
    """Runs one turn: calls the model, runs the tools it asks for, and repeats."""

    def __init__(self, provider, tools: ToolRegistry | None = None, *, max_iterations: int = 10,
                 system_prompt: str | None = None, first_delta_timeout: float | None = None):
        self.provider = provider
        self.tools = tools or ToolRegistry()
        self.max_iterations = max_iterations
        self.system_prompt = system_prompt
        # A provider that answers nothing at all would otherwise leave the turn waiting
        # for its HTTP timeout (minutes) or, on a trickling connection, forever.
        self.first_delta_timeout = first_delta_timeout

    async def run(self, history: list[dict], ctx: ToolContext | None = None,
                  gate: Gate | None = None, *, reasoning: str = "off") -> AsyncIterator[TurnEvent]:
        """One turn from `history`; each tool call runs only once `gate(call)` says so (if given).

        `reasoning` ("off", "low", "medium", "high") goes to every model call of the turn.

        A history that ends in tool calls without results (see
        `unanswered_calls`) is continued: those calls are answered first, then
        the model is called again.
        """
        ctx = ctx or ToolContext()
        messages = list(history)
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        specs = self.tools.specs() if len(self.tools) and self.provider.supports_tools else None

        for call in unanswered_calls(history):
            async for event in self._answer(call, ctx, gate, messages):
                yield event

        for _ in range(self.max_iterations):
            text: list[str] = []
            thinking: list[str] = []
            calls: list[ToolCallRequest] = []
            blocks: list[dict] = []
            provider = ""
            async for event in self._call(messages, specs, reasoning):
                kind = event.__class__
                if kind is Chunk:
                    if event.text:
                        text.append(event.text)
                        yield event
                elif kind is Thinking:
                    if event.text:
                        thinking.append(event.text)
                        yield event
                elif kind is ToolCallRequest:
                    calls.append(event)
                elif kind is UsageInfo:
                    yield event
                elif kind is ProviderBlocks:
                    blocks.extend(event.blocks)
                    provider = event.provider

            assistant = {"role": "assistant", "content": "".join(text)}
            data = {"thinking": "".join(thinking)} if thinking else {}
            if blocks:
                # Kept for the provider that wrote them (the next call of this turn, and later turns).
                assistant.update(thinking_blocks=blocks, provider=provider)
                data.update(thinking_blocks=blocks, provider=provider)
            if not calls:
                yield Record(assistant, data)
                return

            assistant["tool_calls"] = [
                {"id": call.id, "name": call.name, "arguments": call.arguments} for call in calls
            ]
            messages.append(assistant)
            yield Record(assistant, data)

            for call in calls:
                yield ToolCall(call.id, call.name, _parse_args(call.arguments))
                async for event in self._answer(call, ctx, gate, messages):
                    yield event

        raise AgentError(f"Agent exceeded maximum tool iterations ({self.max_iterations})")

    async def _call(self, messages: list[dict], specs, reasoning: str):
        """One model call's events; ProviderError if its first one takes over `first_delta_timeout`.

        Traced as a GenAI "chat" span (see construct_core.tracing) when tracing is on.
        """
        span = self._call_span()
        seen = _CallSeen() if span is not None else None
        error = None
        stream = self.provider.stream(messages, tools=specs, reasoning=reasoning)
        try:
            try:
                first = await asyncio.wait_for(anext(stream), self.first_delta_timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderError(
                    f"The model sent nothing for {_seconds(self.first_delta_timeout)}"
                ) from None
            if seen is not None:
                seen.see(first)
            yield first
            async for event in stream:
                if seen is not None:
                    seen.see(event)
                yield event
        except Exception as exc:  # a stop (CancelledError, GeneratorExit) is no error
            error = type(exc).__name__
            raise
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
            if span is not None:
                tracing.span_end(span, seen.attributes(), error=error)

    def _call_span(self):
        """A model call's span, with what is known before it streams; None when tracing is off."""
        if not tracing.tracing_on():
            return None
        provider = self.provider
        return tracing.span_start(f"chat {provider.model}", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider.name,
            "gen_ai.provider.name": provider.name,
            "gen_ai.request.model": provider.model,
        })

    async def _answer(self, call: ToolCallRequest, ctx: ToolContext, gate: Gate | None,
                      messages: list[dict]):
        """Ask the gate, run the call (or not), and record its result (traced as an
        "execute_tool" span when tracing is on)."""
        span = None
        if tracing.tracing_on():
            name = scrub(call.name)  # the model's words: one could hold a key it was shown
            span = tracing.span_start(f"execute_tool {name}", {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": scrub(call.id),
            })
        outcome, error = "cancelled", None  # unless its result comes
        try:
            async for event in self._resolve(call, ctx, gate, messages):
                if event.__class__ is Record:  # the call's result, as the history keeps it
                    outcome = event.tool_outcome()
                yield event
        except Exception as exc:
            outcome, error = "error", type(exc).__name__
            raise
        finally:
            if span is not None:
                tracing.span_end(span, {"construct.tool.outcome": outcome}, error=error)

    async def _resolve(self, call: ToolCallRequest, ctx: ToolContext, gate: Gate | None,
                       messages: list[dict]):
        verdict = RUN if gate is None else await gate(call)
        data = {}
        if not verdict.run:
            output, is_error = verdict.reason or f"Denied: {call.name} was not run", True
            data["denied"] = True
        else:
            if verdict.args is not None:
                call = ToolCallRequest(call.id, call.name, json.dumps(verdict.args, ensure_ascii=False))
                data["edited"] = True
            output, is_error = None, False
            async for item in self._run_tool(call, ctx):
                if isinstance(item, OperatorStatus):
                    yield item
                else:
                    output, is_error = item
        result = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": output}
        if is_error:
            data["is_error"] = True
            result["is_error"] = True
        messages.append(result)
        yield ToolResult(call.id, call.name, output, is_error)
        yield Record(result, data)

    async def _run_tool(self, call: ToolCallRequest, ctx: ToolContext):
        """Run one tool, passing on the status lines it reports while it runs."""
        statuses: asyncio.Queue = asyncio.Queue()
        tool_ctx = dataclasses.replace(
            ctx, status=lambda phase, detail: statuses.put_nowait(OperatorStatus(phase, detail))
        )
        task = asyncio.ensure_future(self.tools.call(call.name, call.arguments, tool_ctx))
        getter = None
        try:
            while True:
                getter = asyncio.ensure_future(statuses.get())
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not statuses.empty():
                    yield statuses.get_nowait()
                yield task.result()
                return
        finally:
            if getter is not None:
                getter.cancel()
            if not task.done():
                # A stop cancels the turn: the tool must end with it (its own
                # cleanup kills any process it started).
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
