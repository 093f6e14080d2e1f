"""The one interface every model provider implements.

A provider turns a neutral history into a stream of small typed events. Messages
are plain dicts in one neutral shape, whichever provider is behind:

    {"role": "system" | "user", "content": str}
    {"role": "user", "content": [part, ...]}   (a message with attachments, see
        chat/agent/attachments.py: {"type": "text", "text"} and
        {"type": "image", "media_type", "data": base64})
    {"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments": str}]}
    {"role": "tool", "tool_call_id": str, "name": str, "content": str}

The stream's events are the agent's own (chat/agent/events.py). Tools are
`{"name", "description", "parameters": <JSON schema>}`. A provider maps
its SDK's exceptions to `ProviderError` / `ProviderAuthError` inside its own module.
"""

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

from chat.agent.events import StreamEvent


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
        self, messages: list[dict], *, tools: list[dict] | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Stream one model call. The iterator closes its HTTP response when closed."""

    async def aclose(self) -> None:
        """Release the HTTP client."""
