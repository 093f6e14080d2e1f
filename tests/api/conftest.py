"""An API client that checks every answer against the published OpenAPI schema.

Each response a test receives is first validated against what /api/schema/
declares for that path, method and status, so a view and its documentation
cannot drift apart unnoticed (schemathesis relies on the same promise).
"""

import json
from urllib.parse import urlsplit

import pytest
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from rest_framework.test import APIClient

from tests.factories import make_device, make_user

_schema = None


def api_schema() -> dict:
    """The schema /api/schema/ serves, as a dict (generated once per run)."""
    global _schema
    if _schema is None:
        generated = SchemaGenerator().get_schema(request=None, public=True)
        # Through JSON, as a client sees it (no lazy strings, no tuples).
        _schema = json.loads(json.dumps(generated, default=str))
    return _schema


def _template(path: str) -> str:
    """'/api/sessions/a.b/' -> '/api/sessions/{session_id}/', via Django's own resolver."""
    route = resolve(path).route
    parts = []
    for part in route.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":")[-1] + "}"
        parts.append(part)
    return "/" + "/".join(parts)


def check_against_schema(method: str, path: str, response) -> None:
    """Fail unless the response's status and JSON body are what the schema documents."""
    schema = api_schema()
    operation = schema["paths"][_template(path)][method.lower()]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method} {path}: status {status} is not documented"
    content = documented[status].get("content")
    if content is None:
        assert not response.content, f"{method} {path}: {status} should have no body"
        return
    media_type = response["Content-Type"].split(";")[0].strip()
    assert media_type in content, f"{method} {path}: {media_type} is not documented for {status}"
    if media_type != "application/json":
        return
    body_schema = {**content[media_type]["schema"], "components": schema["components"]}
    OAS30Validator(body_schema, format_checker=oas30_format_checker).validate(response.json())


class SchemaCheckingClient(APIClient):
    """APIClient whose every /api/ answer (bar the schema and docs) is checked against the schema."""

    def generic(self, method, path, *args, **kwargs):
        response = super().generic(method, path, *args, **kwargs)
        bare = urlsplit(path).path
        if bare.startswith("/api/") and not bare.startswith(("/api/schema/", "/api/docs/")):
            check_against_schema(method, bare, response)
        return response


@pytest.fixture
def device_and_token(db):
    return make_device()


@pytest.fixture
def anonymous_client():
    return SchemaCheckingClient()


@pytest.fixture
def api(device_and_token):
    """A client that sends a paired device's bearer token."""
    client = SchemaCheckingClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {device_and_token[1]}")
    return client


@pytest.fixture
def alice():
    """A user of their own (not the default owner)."""
    return make_user(username="alice")


@pytest.fixture
def bob():
    """Another user: what alice may not see."""
    return make_user(username="bob")
