"""Bearer authentication for the REST API, and error answers that say how to get in.

A REST client authenticates with the token `POST /pair` or `POST /login`
returned: `Authorization: Bearer <token>`. An authenticated request carries a
`DeviceUser`: the device, and the Django user it belongs to, whose sessions
are the only ones the request may see.
"""

import logging

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from sessions_app.pairing import device_authenticate, pairing_required
from sessions_app.services import default_owner

logger = logging.getLogger(__name__)

AUTH_REQUIRED_MESSAGE = (
    "Authentication required: pair a device with POST /pair (header X-Pairing-Code) "
    "or sign in with POST /login, and send Authorization: Bearer <token>"
)


class DeviceUser:
    """Who made an authenticated request: a paired device and its user.

    With pairing off there is no device (`device=None`) and the user is the
    default owner.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False

    def __init__(self, device=None, user=None):
        self.device = device
        self.user = user if user is not None else device.user

    @property
    def user_id(self) -> int:
        return self.user.pk

    @property
    def is_staff(self) -> bool:
        return self.user.is_staff

    @property
    def pk(self):
        return self.device.pk if self.device is not None else None

    id = pk

    def __str__(self):
        return str(self.device) if self.device is not None else "local (pairing not required)"


class BearerTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>` of a paired, unrevoked device.

    With CONSTRUCT_REQUIRE_PAIRING off every request is authenticated as the
    local user, as the contract promises for single-user use.
    """

    keyword = b"bearer"

    def authenticate(self, request):
        if not pairing_required():
            return DeviceUser(device=None, user=default_owner()), None
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None  # no credentials: DRF answers NotAuthenticated (401)
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization: Bearer header")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed bearer token") from None
        device = device_authenticate(token=token)
        if device is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token")
        return DeviceUser(device=device), device

    def authenticate_header(self, request):
        # A WWW-Authenticate value is what makes DRF answer 401 instead of 403.
        return 'Bearer realm="construct"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Documents BearerTokenAuthentication as the HTTP bearer scheme in /api/schema/."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer"
        )


def _readable(data) -> str:
    """One line out of DRF's error data: its `detail`, or the first field error."""
    if isinstance(data, dict):
        if "detail" in data:
            return str(data["detail"])
        for field, value in data.items():
            message = _readable(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
        return "Error"
    if isinstance(data, list):
        return _readable(data[0]) if data else "Error"
    return str(data)


def exception_handler(exc, context):
    """DRF's handler, plus an "error" key in every answer and a how-to-pair one for 401/403."""
    # Imported here: rest_framework.views imports this module (through
    # DEFAULT_AUTHENTICATION_CLASSES) before it defines its own handler.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        response.data = {"error": AUTH_REQUIRED_MESSAGE}
    elif isinstance(response.data, dict):
        if "error" not in response.data:
            response.data = {"error": _readable(response.data), **response.data}
    else:
        response.data = {"error": _readable(response.data), "errors": response.data}
    return response
