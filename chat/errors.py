"""Errors a client may see, each with a stable code.

Imports neither Django nor Channels: the agent and the providers use it too.
The redaction of secrets lives in `construct_core.redaction`; its names are
imported here too, so `from chat.errors import scrub` keeps working.
"""

from construct_core.redaction import (  # noqa: F401  (re-exported)
    MAX_ERROR_CHARS, REDACTED, RedactingFilter, redact, register_secret, sanitize, scrub, scrub_value,
)

# What a client is told when the database fails under it (no host, port or SQL).
DATABASE_UNAVAILABLE = "The gateway's database is unavailable; try again shortly"


class GatewayError(Exception):
    """An error with a stable code that may be shown to a client."""

    code = "AGENT_ERROR"


class AgentInitFailed(GatewayError):
    """The agent could not be built (no provider configured, bad provider settings)."""

    code = "AGENT_INIT_FAILED"


class AgentError(GatewayError):
    """The turn failed inside the agent (tool loop limit, bad provider output)."""

    code = "AGENT_ERROR"


class ProviderError(GatewayError):
    """The model provider failed: refused, unreachable, or answered nonsense."""

    code = "PROVIDER_ERROR"


class ProviderAuthError(ProviderError):
    """The model provider refused the API key."""

    code = "AUTH_ERROR"


class SessionBusy(GatewayError):
    """The session's running turn did not finish in time, or its queue is full."""

    code = "SESSION_BUSY"


class BudgetExceeded(GatewayError):
    """The daily cost budget is spent."""

    code = "BUDGET_EXCEEDED"
