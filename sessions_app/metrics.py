"""`GET /metrics`: the Prometheus text, for the host itself, the addresses the operator lists, and staff.

Who may read it: a loopback client, an address in CONSTRUCT_METRICS_ALLOWED
(addresses or networks), or a request with the bearer token of a staff user's
device; the client's address as sessions_app.clients sees it, through
CONSTRUCT_TRUSTED_PROXIES only. With pairing off every request is the local
owner, as on the REST API, so every one may. The metrics themselves are
construct_core.metrics'.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from rest_framework.exceptions import AuthenticationFailed

from construct_core.metrics import exposition
from sessions_app.api.auth import BearerTokenAuthentication
from sessions_app.clients import address_in, client_ip, networks_parse
from sessions_app.pairing import pairing_required
from sessions_app.selectors import queued_count

REFUSED_MESSAGE = (
    "Metrics are for this host, CONSTRUCT_METRICS_ALLOWED addresses and staff: "
    "send Authorization: Bearer <a staff user's token>"
)


def metrics_allowed(request) -> bool:
    """Whether `request` may read the metrics (see the module's docstring)."""
    address = client_ip(request)
    if address is not None and (address.is_loopback or address_in(
            address, networks_parse("CONSTRUCT_METRICS_ALLOWED", tuple(settings.CONSTRUCT_METRICS_ALLOWED)))):
        return True
    if not pairing_required():
        return True
    # A staff user's token, checked as the REST API checks it.
    try:
        authenticated = BearerTokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return authenticated is not None and authenticated[0].is_staff


@require_safe
def metrics(request):
    """The metrics as Prometheus text (summed over processes in multiprocess mode); else 401 JSON."""
    if not metrics_allowed(request):
        response = JsonResponse({"error": REFUSED_MESSAGE, "code": "AUTH_ERROR"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="construct"'
        return response
    # The messages draining processes handed on wait in the database: counted once, here.
    body, content_type = exposition({"construct_queued_messages": queued_count()})
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
