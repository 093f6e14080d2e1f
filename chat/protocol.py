"""The chat socket's wire protocol: token sources, subprotocols, frames and their checks."""

from urllib.parse import parse_qs

from construct_core.approvals import PERSON_DECISIONS, json_storable
from construct_core.errors import ApprovalInvalid
from construct_core.model_choices import MODEL_ID_MAX, REASONING_LEVELS
from sessions_app.ids import SESSION_ID_RE  # noqa: F401  (the socket checks ?session_id= with it)

WS_PROTOCOL = "construct.v1"
BEARER_SUBPROTO_PREFIX = "bearer."
PAGE_CONTEXTS = ("agent_pool", "agent_teams", "skills", "workflows", "canvas")
CLIENT_ID_MAX = 128
APPROVAL_ID_MAX = 64
HINT = 'Send {"type":"message","content":"your text"}'


def query_params(scope) -> dict[str, str]:
    """The first value of each query parameter; undecodable bytes are replaced, not fatal."""
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    # NUL (%00) is no part of any valid value, and PostgreSQL text cannot hold it.
    return {key: values[0].replace("\x00", "")
            for key, values in parse_qs(raw, keep_blank_values=True).items()}


def header(scope, name: bytes) -> str | None:
    """The first value of an ASGI scope's header `name` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def extract_token(scope, query_token: str | None) -> str | None:
    """The bearer token, first non-empty of: Authorization header, `bearer.` subprotocol, ?token=."""
    auth = header(scope, b"authorization")
    if auth and auth.startswith("Bearer "):
        token = auth[len("Bearer "):].strip()
        if token:
            return token
    for proto in scope.get("subprotocols", ()):
        proto = proto.strip()
        if proto.startswith(BEARER_SUBPROTO_PREFIX) and len(proto) > len(BEARER_SUBPROTO_PREFIX):
            return proto[len(BEARER_SUBPROTO_PREFIX):]
    if query_token:
        return query_token
    return None


def select_subprotocol(scope) -> str | None:
    """`construct.v1` when the client offers it; a `bearer.*` one is never selected."""
    offered = [p.strip() for p in scope.get("subprotocols", ())]
    return WS_PROTOCOL if WS_PROTOCOL in offered else None


def error_frame(code: str, message: str) -> dict:
    return {"type": "error", "message": message, "code": code}


class FrameError(Exception):
    """A client frame that cannot be accepted; carries the error frame's code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_message(frame: dict) -> tuple[str, str | None, str | None]:
    """Check a `message` frame; returns (content, page_context, client_id)."""
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        raise FrameError("EMPTY_CONTENT", "Message content cannot be empty")
    if not _storable(content):
        raise FrameError("BAD_FRAME", "content must be Unicode text without NUL or lone surrogates")
    page_context = frame.get("page_context")
    if page_context not in PAGE_CONTEXTS:
        page_context = None
    return content, page_context, _client_id(frame)


def _client_id(frame: dict) -> str | None:
    client_id = frame.get("client_id")
    if client_id is not None:
        if (not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_MAX
                or not _storable(client_id)):
            raise FrameError(
                "BAD_FRAME", f"client_id must be a non-empty string of at most {CLIENT_ID_MAX} characters"
            )
    return client_id


def parse_approval(frame: dict) -> tuple[str, str, dict | None]:
    """Check an `approval` frame; returns (approval_id, decision, args or None).

    Raises ApprovalInvalid (code APPROVAL_INVALID, with the approval_id when it
    is a usable string) for any malformed one: the socket stays usable.
    """
    approval_id = frame.get("approval_id")
    if (not isinstance(approval_id, str) or not 0 < len(approval_id) <= APPROVAL_ID_MAX
            or not _storable(approval_id)):
        raise ApprovalInvalid(
            f"approval_id must be a non-empty string of at most {APPROVAL_ID_MAX} characters"
        )
    decision = frame.get("decision")
    if decision not in PERSON_DECISIONS:
        raise ApprovalInvalid('decision must be "approve", "deny" or "always"', approval_id=approval_id)
    args = frame.get("args")
    if args is not None and not isinstance(args, dict):
        raise ApprovalInvalid("args, when given, must be a JSON object: the call's new arguments",
                              approval_id=approval_id)
    if args is not None and not json_storable(args):
        raise ApprovalInvalid("args must not hold NaN, Infinity, NUL or lone surrogates",
                              approval_id=approval_id)
    return approval_id, decision, args



# A message id is a database key: a positive 64-bit integer.
MESSAGE_ID_MAX = 2**63 - 1


def parse_message_id(frame: dict) -> int:
    """The frame's `message_id`: a JSON integer (not a bool, a float or a string) that can be a key."""
    message_id = frame.get("message_id")
    if type(message_id) is not int or not 0 < message_id <= MESSAGE_ID_MAX:
        raise FrameError("BAD_FRAME", "message_id must be the id of a message (a positive integer)")
    return message_id


def parse_regenerate(frame: dict) -> str | None:
    """Check a `regenerate` frame; returns its client_id (or None)."""
    return _client_id(frame)


def parse_edit(frame: dict) -> tuple[int, str, str | None, str | None]:
    """Check an `edit` frame; returns (message_id, content, page_context, client_id).

    Its content, page context and client id are checked as a message's are.
    """
    message_id = parse_message_id(frame)
    content, page_context, client_id = parse_message(frame)
    return message_id, content, page_context, client_id


def parse_switch_branch(frame: dict) -> int:
    """Check a `switch_branch` frame; returns the message_id whose newest leaf becomes active."""
    return parse_message_id(frame)


ATTACHMENT_ID_MAX = 64


def parse_attachments(frame: dict, most: int) -> list[str]:
    """The attachment ids a `message` names, at most `most` of them, each once, in order.

    As upstream, never a reason to refuse the message: a missing field or a
    non-list is no attachments, and an item that cannot be an id is skipped.
    Whether each id is one of the session's is the turn's question.
    """
    ids = frame.get("attachments")
    if not isinstance(ids, list):
        return []
    wanted: list[str] = []
    for item in ids:
        if len(wanted) >= most:
            break
        if (isinstance(item, str) and 0 < len(item) <= ATTACHMENT_ID_MAX and _storable(item)
                and item not in wanted):
            wanted.append(item)
    return wanted


def parse_model_choice(frame: dict) -> tuple[str | None, str | None]:
    """A `message`'s (or `edit`'s, `regenerate`'s) `model` and `reasoning`, each None when absent.

    `model` must be a non-empty string (whether the id is listed is the turn
    engine's question: MODEL_NOT_FOUND); `reasoning` one of off, low, medium, high.
    """
    model = frame.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= MODEL_ID_MAX
                              or not _storable(model)):
        raise FrameError("BAD_FRAME", f"model must be a model id (GET /api/models/), a string of at most "
                                      f"{MODEL_ID_MAX} characters")
    reasoning = frame.get("reasoning")
    if reasoning is not None and reasoning not in REASONING_LEVELS:
        raise FrameError("BAD_FRAME", 'reasoning must be "off", "low", "medium" or "high"')
    return model, reasoning


def _storable(text: str) -> bool:
    """False for text JSON lets through but a database cannot keep: a lone surrogate
    ("\\ud800", not UTF-8 at all) or NUL (PostgreSQL text refuses it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
