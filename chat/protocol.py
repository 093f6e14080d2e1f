"""The chat socket's wire protocol: token sources, subprotocols, frames and their checks."""

from urllib.parse import parse_qs

from construct_core.approvals import PERSON_DECISIONS, json_storable
from construct_core.errors import ApprovalInvalid
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
    client_id = frame.get("client_id")
    if client_id is not None:
        if (not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_MAX
                or not _storable(client_id)):
            raise FrameError(
                "BAD_FRAME", f"client_id must be a non-empty string of at most {CLIENT_ID_MAX} characters"
            )
    return content, page_context, client_id


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
