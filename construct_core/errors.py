"""Errors a client may see, each with a stable code.

Plain Python, no Django: the agent, the providers, the turn engine and the
persistence layer all raise them. What of an error's text may reach a client
is `construct_core.redaction.sanitize`'s job.
"""

# What a client is told when the database fails under it (no host, port or SQL).
DATABASE_UNAVAILABLE = "The gateway's database is unavailable; try again shortly"


class GatewayError(Exception):
    """An error with a stable code that may be shown to a client.

    `details` are more fields for the client's error frame (JSON-safe).
    """

    code = "AGENT_ERROR"

    def __init__(self, message: str = "", **details):
        super().__init__(message)
        self.details = details


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
    """The session is running a turn: a message waited too long or found the queue full,
    or a delete came while the turn holds the session."""

    code = "SESSION_BUSY"


class ServerRestarting(SessionBusy):
    """This process drains before a restart: it starts no new turn (the session lock says
    so; the message is handed on to a process that serves on, chat/turns/queue.py)."""

    def __init__(self, message: str = "The server is restarting: the message was not run; "
                                      "send it again after reconnecting", **details):
        super().__init__(message, restarting=True, retry_after=1, **details)


class BudgetExceeded(GatewayError):
    """A budget or quota is spent: the gateway's daily one, or one of the user's.

    Its details say which limit (`limit`) and when it resets (`resets_at`, ISO 8601).
    """

    code = "BUDGET_EXCEEDED"


class ApprovalInvalid(GatewayError):
    """An approval that cannot be decided: unknown, expired, already decided, or a malformed answer.

    Its details carry the `approval_id` (when the frame had one as a string).
    """

    code = "APPROVAL_INVALID"


class MessageNotFound(GatewayError):
    """A message id that is not one of the session's (unknown, or another session's)."""

    code = "MESSAGE_NOT_FOUND"


class NotEditable(GatewayError):
    """An edit of a message that is not a user message: only questions are edited."""

    code = "BAD_FRAME"


class NothingToRegenerate(GatewayError):
    """A regenerate with no user message on the active branch to answer again."""

    code = "EMPTY_CONTENT"


class ModelNotFound(GatewayError):
    """A model id that is not one of the models people may choose (CONSTRUCT_MODELS)."""

    code = "MODEL_NOT_FOUND"
