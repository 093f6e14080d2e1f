"""The unauthenticated HTTP endpoints: `POST /pair`, `POST /login`, `GET /health` and `GET /ready`.

Plain Django JSON views: they exist before any device is paired, so they sit
outside the REST framework and its bearer authentication. The logic lives in
sessions_app.pairing; these only translate HTTP to it and back.
"""

import json
import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from construct_core.drain import draining
from construct_core.probes import redis_ping
from sessions_app.clients import client_from_request
from sessions_app.pairing import (
    InvalidCredentials, InvalidPairingCode, PairingLocked, device_pair, device_sign_in, pairing_required,
)
from sessions_app.selectors_pairing import device_any_paired

logger = logging.getLogger(__name__)

READY_REDIS_TIMEOUT = 2.0

PAIRED_MESSAGE = (
    "Paired. Keep this token: it is shown only once. "
    "Send it as Authorization: Bearer <token>, or as ?token= on the chat socket."
)
SIGNED_IN_MESSAGE = (
    "Signed in. Keep this token: it is shown only once. "
    "Send it as Authorization: Bearer <token>, or as ?token= on the chat socket."
)
NOT_REQUIRED_MESSAGE = "Pairing is not required"


def _method_not_allowed(allowed: list[str]) -> JsonResponse:
    response = JsonResponse({"error": "Method not allowed"}, status=405)
    response["Allow"] = ", ".join(allowed)
    return response


def _device_name(request) -> str:
    """The optional device name: JSON body {"name": ...}, else the X-Device-Name header."""
    if request.body:
        try:
            body = json.loads(request.body)
        except ValueError:  # a form post or junk: the name is optional, not worth a 400
            body = None
        if isinstance(body, dict) and isinstance(body.get("name"), str) and body["name"].strip():
            return body["name"].strip()
    return request.headers.get("X-Device-Name", "").strip()


def _locked(exc: PairingLocked, what: str) -> JsonResponse:
    response = JsonResponse(
        {"error": f"Too many failed {what}; try again later", "retry_after": exc.retry_after},
        status=429,
    )
    response["Retry-After"] = str(exc.retry_after)
    return response


def _token_answer(token: str | None, message: str, **more) -> JsonResponse:
    response = JsonResponse({"paired": True, "token": token, "message": message, **more})
    # The token is a credential: no cache anywhere may keep this answer.
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
def pair(request):
    """Trade the one-time code in `X-Pairing-Code` for a bearer token.

    200 {"paired": true, "token": "...", "message": "..."} on success;
    403 {"error": "Invalid pairing code"} for a wrong, used, expired or missing code;
    429 {"error": "...", "retry_after": N} plus a Retry-After header while this
    client is locked out after repeated failures.

    When pairing is not required the answer is 200 with "token": null and
    "message": "Pairing is not required": there is nothing to trade, and a
    client that stores the token then simply sends none.
    """
    if request.method != "POST":
        return _method_not_allowed(["POST"])
    if not pairing_required():
        return JsonResponse({"paired": True, "token": None, "message": NOT_REQUIRED_MESSAGE})
    client = client_from_request(request)
    try:
        token = device_pair(
            code=request.headers.get("X-Pairing-Code", ""),
            client=client,
            name=_device_name(request),
        )
    except PairingLocked as exc:
        return _locked(exc, "pairing attempts")
    except InvalidPairingCode:
        return JsonResponse({"error": "Invalid pairing code"}, status=403)
    return _token_answer(token, PAIRED_MESSAGE)


@csrf_exempt
def login(request):
    """Trade a Django user's username and password for a bearer token, as /pair does a code.

    Body: JSON {"username", "password", "name"?}. 200 {"paired": true, "token",
    "message", "username"}; 401 {"error": ...} for a wrong username or password;
    400 for a body that is not that JSON; 429 {"error", "retry_after"} while this
    client is locked out (failed codes and passwords count together).
    """
    if request.method != "POST":
        return _method_not_allowed(["POST"])
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        body = None
    if (not isinstance(body, dict) or not isinstance(body.get("username"), str)
            or not isinstance(body.get("password"), str)):
        return JsonResponse({"error": 'Send JSON {"username": "...", "password": "..."}'}, status=400)
    try:
        device, token = device_sign_in(
            username=body["username"], password=body["password"],
            client=client_from_request(request), name=_device_name(request),
        )
    except PairingLocked as exc:
        return _locked(exc, "sign-in attempts")
    except InvalidCredentials:
        return JsonResponse({"error": "Wrong username or password"}, status=401)
    return _token_answer(token, SIGNED_IN_MESSAGE, username=device.user.get_username())


def health(request):
    """Liveness plus what a client needs to know before it connects."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(["GET", "HEAD"])
    return JsonResponse(
        {"status": "ok", "require_pairing": pairing_required(), "paired": device_any_paired()}
    )


def ready(request):
    """Readiness: may a load balancer send this process new work?

    200 {"status": "ok", "ready": true} when the database (and Redis, when
    REDIS_URL is set) answers and the process is not draining; else 503
    {"status": "unavailable", "ready": false, "failed": [...]}, naming
    "draining", "database" and "redis" as they apply.
    """
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(["GET", "HEAD"])
    failed = []
    if draining():
        failed.append("draining")
    if not _database_answers():
        failed.append("database")
    if settings.REDIS_URL and not _redis_answers(settings.REDIS_URL):
        failed.append("redis")
    if failed:
        return JsonResponse({"status": "unavailable", "ready": False, "failed": failed}, status=503)
    return JsonResponse({"status": "ok", "ready": True})


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("/ready: the database does not answer: %s", type(exc).__name__)
        # A broken connection is not kept for the next request.
        connection.close_if_unusable_or_obsolete()
        return False
    return True


def _redis_answers(url: str) -> bool:
    exc = redis_ping(url, READY_REDIS_TIMEOUT)
    if exc is not None:
        logger.warning("/ready: Redis does not answer: %s", type(exc).__name__)
        return False
    return True
