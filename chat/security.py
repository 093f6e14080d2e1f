"""Defences at the edges: the socket's Origin check and request body limits.

See SECURITY.md for the threat model these answer and the tests that prove them.
"""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.http.request import split_domain_port, validate_host
from django.utils.deprecation import MiddlewareMixin

from chat.protocol import header
from sessions_app.clients import peer_is_trusted_proxy
from sessions_app.ids import SESSION_ID_RE

_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def _origin_parts(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an Origin value or an allowed-origin entry; None if malformed."""
    try:
        parts = urlsplit(origin.strip())
        scheme = parts.scheme.lower()
        host, port = split_domain_port(parts.netloc)
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


# --- Cross-site WebSocket hijacking ----------------------------------------------


def origin_allowed(scope) -> bool:
    """Whether a socket's `Origin` may open it.

    Browsers always send Origin, and a page on another site must not drive
    the agent with the browser's access (with pairing off, that access is
    everyone's). Allowed: no Origin at all (a script, which needs a token
    anyway); the origin of CONSTRUCT_PUBLIC_URL; the page's own host and
    port, when that host is one of ALLOWED_HOSTS; a host in ALLOWED_HOSTS, any port, as Channels'
    AllowedHostsOriginValidator does (a "*" there does not count, it would
    allow every site); an exact origin in CONSTRUCT_ALLOWED_ORIGINS, where
    "*" turns the check off.
    """
    origin = header(scope, b"origin")
    if origin is None:
        return True
    allowed = settings.CONSTRUCT_ALLOWED_ORIGINS
    if "*" in allowed:
        return True
    parts = _origin_parts(origin)
    if parts is None:  # "null" (a sandboxed frame, a file), or junk
        return False
    public = settings.CONSTRUCT_PUBLIC_ORIGIN
    if public and _origin_parts(public) == parts:
        return True
    if any(_origin_parts(entry) == parts for entry in allowed):
        return True
    _scheme, host, port = parts
    if validate_host(host, [h for h in settings.ALLOWED_HOSTS if h != "*"]):
        return True
    own = header(scope, b"host")
    if own:
        own_host, own_port = split_domain_port(own)
        own_port = own_port or _DEFAULT_PORTS.get(scope.get("scheme", "ws"), "80")
        if (own_host, own_port) == (host, port) and validate_host(own_host, settings.ALLOWED_HOSTS):
            return True
    return False


# --- The scheme behind a proxy ------------------------------------------------------


FORWARDED_PROTO_KEY = "CONSTRUCT_FORWARDED_PROTO"


class ForwardedProtoMiddleware(MiddlewareMixin):
    """Believe X-Forwarded-Proto only from a CONSTRUCT_TRUSTED_PROXIES peer.

    Django's SECURE_PROXY_SSL_HEADER believes the header from anyone. Here it
    names a META key without the HTTP_ prefix, which no client header can
    fill, and this middleware copies the header there only when the peer is
    a trusted proxy; otherwise the scheme is the connection's own.
    """

    def process_request(self, request):
        request.META.pop(FORWARDED_PROTO_KEY, None)
        proto = request.META.get("HTTP_X_FORWARDED_PROTO")
        if proto and peer_is_trusted_proxy(request.META.get("REMOTE_ADDR")):
            # The proxy nearest us appends last; nginx sends one value.
            request.META[FORWARDED_PROTO_KEY] = proto.split(",")[-1].strip().lower()
        return None


# --- Request bodies ---------------------------------------------------------------


# The one URL whose body may be larger: an attachment's upload (multipart), up to
# CONSTRUCT_MAX_ATTACHMENT_BYTES and the form's own few lines. The upload view
# counts the file's bytes itself as they arrive.
_UPLOAD_PATH = re.compile(
    r"^/api/sessions/" + SESSION_ID_RE.pattern.removeprefix("^").removesuffix("$") + r"/attachments/$"
)
UPLOAD_OVERHEAD_BYTES = 64 * 1024


def body_limit(request) -> int | None:
    """The most bytes a request's body may have."""
    if request.method == "POST" and _UPLOAD_PATH.match(request.path_info):
        return settings.CONSTRUCT_MAX_ATTACHMENT_BYTES + UPLOAD_OVERHEAD_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _too_large(limit: int | None) -> JsonResponse:
    return JsonResponse(
        {"error": f"Request body too large: at most {limit} bytes"}, status=413
    )


class BodyLimitMiddleware(MiddlewareMixin):
    """Answer a body over DATA_UPLOAD_MAX_MEMORY_SIZE (an attachment's upload: over
    CONSTRUCT_MAX_ATTACHMENT_BYTES) with 413 JSON, not Django's 400 page.

    A declared Content-Length is refused before anything reads the body; a body
    that turns out larger (Django counts it as it reads) is refused the same way.
    """

    def process_request(self, request):
        limit = body_limit(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return _too_large(limit)
        return None

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig):
            return _too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return None

