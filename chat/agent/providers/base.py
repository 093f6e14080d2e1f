"""The one interface every model provider implements.

A provider turns a neutral history into a stream of small typed events. Messages
are plain dicts in one neutral shape, whichever provider is behind:

    {"role": "system" | "user", "content": str}
    {"role": "user", "content": [part, ...]}   (a message with attachments, see
        chat/agent/attachments.py: {"type": "text", "text"} and
        {"type": "image", "media_type", "data": base64})
    {"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments": str}],
     "thinking_blocks": [block, ...], "provider": str, "incomplete": True}
    {"role": "tool", "tool_call_id": str, "name": str, "content": str, "is_error": True}

The optional assistant keys: `thinking_blocks` are one provider's own blocks
that must go back to it unchanged (Anthropic's `{"type": "thinking", "thinking",
"signature"}` and `{"type": "redacted_thinking", "data"}`), sent only to the
provider named by `provider` and dropped by any other; `incomplete` marks a
reply cut off by a stop or an error (sent with `CUT_OFF_MARK` after its text).
A tool message's `is_error` says the tool failed or was not run.

The stream's events are the agent's own (chat/agent/events.py). Tools are
`{"name", "description", "parameters": <JSON schema>}`. A provider maps
its SDK's exceptions to `ProviderError` / `ProviderAuthError` inside its own module.
"""

from dataclasses import dataclass, field
from typing import AsyncIterator, Literal, Protocol

from chat.agent.events import StreamEvent
from construct_core.model_choices import REASONING_LEVELS

# How hard the model may think before it answers; each provider maps a level to its own switch.
Reasoning = Literal["off", "low", "medium", "high"]
# After the text of a reply that was cut off, so the model knows it never finished it.
CUT_OFF_MARK = "\n\n[reply cut off]"


def reasoning_check(level: str) -> str:
    """The level itself; ValueError for a word that is not one."""
    if level not in REASONING_LEVELS:
        raise ValueError(f"unknown reasoning level {level!r}: one of {', '.join(REASONING_LEVELS)}")
    return level


def assistant_text(message: dict) -> str:
    """An assistant message's text as a provider is sent it: a cut-off reply says so."""
    content = message.get("content") or ""
    if message.get("incomplete") and content:
        return content + CUT_OFF_MARK
    return content


# The SDKs keep at most 100 idle connections to a provider (of 1,000 open). A gateway
# with more than 100 replies streaming at once (or a chat's title asked for beside its
# answer) closed the rest as each reply ended and opened new ones for the next turns:
# a connect, and a TLS handshake, per turn. Every connection the pool may open may stay.
MAX_PROVIDER_CONNECTIONS = 1000


def connection_limits(httpx_module):
    """The connection pool of a provider's SDK client (`httpx_module`: the SDK's httpx)."""
    return httpx_module.Limits(max_connections=MAX_PROVIDER_CONNECTIONS,
                               max_keepalive_connections=MAX_PROVIDER_CONNECTIONS)


@dataclass
class ProviderConfig:
    provider: str
    model: str
    api_key: str | None = None
    base_url: str | None = None
    timeout: float = 120.0
    max_retries: int = 2
    extra: dict = field(default_factory=dict)


class Provider(Protocol):
    name: str
    model: str
    supports_tools: bool

    def stream(
        self, messages: list[dict], *, tools: list[dict] | None = None, reasoning: Reasoning = "off"
    ) -> AsyncIterator[StreamEvent]:
        """Stream one model call. The iterator closes its HTTP response when closed.

        `reasoning` other than "off" turns the model's thinking on at that level,
        in the provider's own words; "off" sends no such setting.
        """

    async def aclose(self) -> None:
        """Release the HTTP client."""
