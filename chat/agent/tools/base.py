"""A tool is data: a name, a description, a JSON schema and an async function.

A tool's failure is a result the model sees (`ToolFailed`), never a crashed turn.
Imports neither Django nor Channels.
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from construct_core.redaction import sanitize, scrub, scrub_cut

logger = logging.getLogger(__name__)

MAX_TOOL_OUTPUT_CHARS = 64_000


class ToolFailed(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


@dataclass
class ToolContext:
    """What a running tool may use: where it works, which session, and a status line."""

    session_id: str = ""
    workspace: Any = None
    status: Callable[[str, str], None] = lambda phase, detail: None
    extra: dict = field(default_factory=dict)
    # Where memory notes are kept (chat/agent/tools/memory.py MemoryStore); None: no memory.
    memory: Any = None


ToolFunc = Callable[[dict, ToolContext], Awaitable[str]]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    func: ToolFunc

    def spec(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolRegistry:
    """The tools one turn may call, by name."""

    def __init__(self, tools=()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[dict]:
        return [tool.spec() for tool in self._tools.values()]

    def __len__(self):
        return len(self._tools)

    async def call(self, name: str, arguments: str, ctx: ToolContext) -> tuple[str, bool]:
        """Run a tool; returns (output, is_error). Bad input is an error result, not an exception."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return f"Unknown tool {name!r}. Available tools: {known}.", True
        try:
            args = json.loads(arguments) if arguments and arguments.strip() else {}
        except ValueError as exc:
            return f"Invalid arguments for {name}: not valid JSON ({exc}).", True
        if not isinstance(args, dict):
            return f"Invalid arguments for {name}: expected a JSON object.", True
        missing = [key for key in tool.parameters.get("required", ()) if key not in args]
        if missing:
            return f"Invalid arguments for {name}: missing {', '.join(missing)}.", True
        try:
            output = await tool.func(args, ctx)
        except ToolFailed as exc:
            return f"Error: {exc}", True
        except OSError as exc:
            return f"Error: {exc.strerror or exc}", True
        except Exception as exc:  # a tool's bug must not end the turn
            logger.warning("tool %s failed", name, exc_info=True)
            return f"Error: {name} failed: {sanitize(str(exc)) or type(exc).__name__}", True
        # Scrubbed before the cut, so a cut output never ends in part of a key.
        output = "" if output is None else scrub(str(output))
        if len(output) > MAX_TOOL_OUTPUT_CHARS:
            output = (scrub_cut(output[:MAX_TOOL_OUTPUT_CHARS])
                      + f"\n[output cut at {MAX_TOOL_OUTPUT_CHARS} characters]")
        return output, False
