"""Everything that happens in a turn, one type per happening, from the provider to the caller.

A provider yields `Chunk`, `Thinking`, `ProviderBlocks`, `ToolCallRequest`,
`UsageInfo` and `Finish`; the agent loop passes the first three kinds of the stream on as they
are (the same objects, not copies) and adds `ToolCall`, `ToolResult`,
`OperatorStatus` and `Record`. A streamed delta is one `Chunk` from the
provider's SSE parser to the turn that frames it for the sockets.
"""

from dataclasses import dataclass, field


@dataclass(slots=True)
class Chunk:
    """A piece of the answer's text."""

    text: str


@dataclass(slots=True)
class Thinking:
    """A piece of the model's reasoning."""

    text: str


@dataclass(slots=True)
class ProviderBlocks:
    """Blocks of a reply that only its provider reads, to be sent back to it unchanged.

    Anthropic's thinking blocks with their signatures (`{"type": "thinking",
    "thinking", "signature"}`, `{"type": "redacted_thinking", "data"}`), in the
    order they came. Sent once a call's stream is whole, before its tool calls;
    the agent keeps them on the assistant message (`thinking_blocks`, `provider`).
    """

    provider: str
    blocks: list[dict]


@dataclass(slots=True)
class ToolCallRequest:
    """A whole tool call as the model streamed it, its arguments still JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class UsageInfo:
    """Tokens one provider call used."""

    model: str
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class Finish:
    """Why one provider call ended (stop, tool_use, length, ...)."""

    reason: str = "stop"


@dataclass(slots=True)
class ToolCall:
    """The agent runs a tool: its arguments parsed (the raw text when not JSON)."""

    id: str
    name: str
    args: object


@dataclass(slots=True)
class ToolResult:
    id: str
    name: str
    output: str
    is_error: bool = False


@dataclass(slots=True)
class Verdict:
    """What the turn's gate says of a tool call before it runs.

    `run` False: the call is not run; `reason` is the error result the model
    sees. `args`, when given, replaces the model's arguments (validated like them).
    """

    run: bool = True
    args: dict | None = None
    reason: str = ""


@dataclass(slots=True)
class OperatorStatus:
    """A status line for the people watching (a tool that takes a while, a queue)."""

    phase: str
    detail: str


@dataclass(slots=True)
class Record:
    """A message the session's history keeps, in the providers' neutral shape."""

    message: dict
    data: dict = field(default_factory=dict)

    def tool_outcome(self) -> str:
        """A tool result's outcome, as traces and metrics name it: "denied", "error" or "ok"."""
        return "denied" if self.data.get("denied") else "error" if self.data.get("is_error") else "ok"


# What a provider's stream yields, and what the agent's run yields.
StreamEvent = Chunk | Thinking | ProviderBlocks | ToolCallRequest | UsageInfo | Finish
TurnEvent = Chunk | Thinking | ToolCall | ToolResult | OperatorStatus | UsageInfo | Record
