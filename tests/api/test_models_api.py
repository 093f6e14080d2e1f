"""GET /api/models/: the models people may choose, never a URL or a key."""

import json

import pytest

from construct_core.model_choices import models_parse

pytestmark = pytest.mark.django_db

SECRET = "sk-models-SECRET0123456789abcdef"
PRIVATE_URL = "http://10.1.2.3:11434/v1"


def test_the_list_from_construct_models_with_no_url_or_key(api, settings):
    settings.CONSTRUCT_API_KEY = SECRET
    settings.CONSTRUCT_PROVIDER_KEYS = {"openai": SECRET, "anthropic": SECRET}
    settings.CONSTRUCT_MODELS = models_parse(json.dumps([
        {"id": "llama3.1", "provider": "openai", "label": "Llama", "base_url": PRIVATE_URL},
        {"id": "claude-sonnet-4-5", "provider": "anthropic", "thinking": True},
    ]))
    settings.CONSTRUCT_REASONING_DEFAULT = "medium"
    response = api.get("/api/models/")
    assert response.status_code == 200
    assert response.json() == {
        "models": [
            {"id": "llama3.1", "label": "Llama", "provider": "openai", "thinking": False},
            {"id": "claude-sonnet-4-5", "label": "claude-sonnet-4-5", "provider": "anthropic",
             "thinking": True},
        ],
        "default": "llama3.1",
        "reasoning_default": "medium",
    }
    body = response.content.decode()
    assert SECRET not in body and "10.1.2.3" not in body and "base_url" not in body


def test_unset_it_is_the_one_configured_model(api, settings):
    settings.CONSTRUCT_MODELS = ()
    settings.CONSTRUCT_PROVIDER = "anthropic"
    settings.CONSTRUCT_MODEL = "claude-x"
    settings.CONSTRUCT_BASE_URL = PRIVATE_URL
    settings.CONSTRUCT_REASONING_DEFAULT = "off"
    response = api.get("/api/models/")
    assert response.json() == {
        "models": [{"id": "claude-x", "label": "claude-x", "provider": "anthropic", "thinking": False}],
        "default": "claude-x", "reasoning_default": "off",
    }
    assert "10.1.2.3" not in response.content.decode()


def test_a_bearer_token_is_required(anonymous_client):
    response = anonymous_client.get("/api/models/")
    assert response.status_code == 401
    assert "error" in response.json()
