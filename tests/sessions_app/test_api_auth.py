"""REST bearer authentication and error answers, against test-only views.

The views here use the project's DRF defaults (BearerTokenAuthentication,
IsAuthenticated, our exception handler) exactly as the real API views will.
"""

import pytest
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from sessions_app.api.auth import AUTH_REQUIRED_MESSAGE, DeviceUser
from tests.factories import make_device

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()


class WhoAmI(APIView):
    """Answers with the device behind the request."""

    def get(self, request):
        assert isinstance(request.user, DeviceUser)
        return Response({"device": request.user.pk, "auth": getattr(request.auth, "pk", None)})


class Failing(APIView):
    """Raises the error named in ?kind=."""

    errors = {
        "validation": exceptions.ValidationError({"name": ["This field is required."]}),
        "list": exceptions.ValidationError(["Bad things."]),
        "not_found": exceptions.NotFound(),
        "denied": exceptions.PermissionDenied("Not yours."),
    }

    def get(self, request):
        raise self.errors[request.query_params["kind"]]


def call(view, token=None, path_="/t/", **query):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = view.as_view()(factory.get(path_, query, **extra))
    response.render()
    return response


def test_no_token_is_401_with_how_to_pair():
    response = call(WhoAmI)

    assert response.status_code == 401
    assert response.data == {"error": AUTH_REQUIRED_MESSAGE}
    assert response["WWW-Authenticate"] == 'Bearer realm="construct"'


@pytest.mark.parametrize("header", ["Bearer zc_not-a-real-token", "Bearer", "Bearer a b"])
def test_bad_bearer_header_is_401(header):
    request = factory.get("/t/", HTTP_AUTHORIZATION=header)

    response = WhoAmI.as_view()(request)

    assert response.status_code == 401
    assert response.data == {"error": AUTH_REQUIRED_MESSAGE}


def test_valid_token_authenticates_the_device():
    device, token = make_device()

    response = call(WhoAmI, token)

    assert response.status_code == 200
    assert response.data == {"device": device.pk, "auth": device.pk}


def test_revoked_token_is_401():
    _, token = make_device(revoked=True)

    assert call(WhoAmI, token).status_code == 401


def test_without_pairing_everyone_is_the_local_user(settings):
    settings.CONSTRUCT_REQUIRE_PAIRING = False

    response = call(WhoAmI)

    assert response.status_code == 200
    assert response.data == {"device": None, "auth": None}


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("validation", 400, {"error": "name: This field is required.",
                             "name": ["This field is required."]}),
        ("list", 400, {"error": "Bad things.", "errors": ["Bad things."]}),
        ("not_found", 404, {"error": "Not found.", "detail": "Not found."}),
        ("denied", 403, {"error": "Not yours.", "detail": "Not yours."}),
    ],
)
def test_other_errors_keep_their_shape_and_gain_an_error_key(kind, status, expected):
    _, token = make_device()

    response = call(Failing, token, kind=kind)

    assert response.status_code == status
    assert response.data == expected


def test_schema_documents_the_bearer_scheme():
    generator = SchemaGenerator(patterns=[path("t/", WhoAmI.as_view())])

    schema = generator.get_schema(request=None, public=True)

    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
    }
    assert {"bearerAuth": []} in schema["paths"]["/t/"]["get"]["security"]
