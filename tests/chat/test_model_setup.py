"""One provider per (event loop, model), each with its own provider, URL and the right key."""

import json

from chat.turns import setup
from construct_core.model_choices import models_parse
from sessions_app import catalogue

OPENAI_KEY = "sk-openai-SECRET0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-SECRET0123456789abcdef"
CONSTRUCT_KEY = "sk-construct-SECRET0123456789abcdef"


def two_models(settings, **first):
    settings.CONSTRUCT_PROVIDER = "openai"
    settings.CONSTRUCT_BASE_URL = "http://127.0.0.1:9/v1"
    settings.CONSTRUCT_API_KEY = CONSTRUCT_KEY
    settings.CONSTRUCT_PROVIDER_KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}
    settings.CONSTRUCT_MODELS = models_parse(json.dumps([
        {"id": "gpt-x", "provider": "openai", **first},
        {"id": "claude-x", "provider": "anthropic", "base_url": "http://127.0.0.1:8/", "thinking": True},
    ]))


def test_each_model_has_its_provider_url_and_key(settings):
    two_models(settings)
    gpt = setup.provider_config(catalogue.model_get(model_id="gpt-x"))
    assert (gpt.provider, gpt.model, gpt.base_url, gpt.api_key) == (
        "openai", "gpt-x", "http://127.0.0.1:9/v1", CONSTRUCT_KEY)
    claude = setup.provider_config(catalogue.model_get(model_id="claude-x"))
    # Another provider's model never gets CONSTRUCT_API_KEY (CONSTRUCT_PROVIDER's key).
    assert (claude.provider, claude.model, claude.base_url, claude.api_key) == (
        "anthropic", "claude-x", "http://127.0.0.1:8/", ANTHROPIC_KEY)
    assert setup.provider_config() == gpt  # the default: the first


def test_a_model_of_the_main_provider_may_name_its_own_url(settings):
    two_models(settings, base_url="http://127.0.0.1:7/v1")
    assert setup.provider_config(catalogue.model_default()).base_url == "http://127.0.0.1:7/v1"


def test_without_a_list_the_one_model_is_as_before(settings):
    settings.CONSTRUCT_MODELS = ()
    settings.CONSTRUCT_PROVIDER = "openai"
    settings.CONSTRUCT_MODEL = "mock-model"
    settings.CONSTRUCT_BASE_URL = "http://127.0.0.1:9/v1"
    settings.CONSTRUCT_API_KEY = CONSTRUCT_KEY
    config = setup.provider_config()
    assert (config.provider, config.model, config.base_url, config.api_key) == (
        "openai", "mock-model", "http://127.0.0.1:9/v1", CONSTRUCT_KEY)


async def test_one_provider_per_loop_and_model(settings):
    two_models(settings)
    gpt, claude = catalogue.model_get(model_id="gpt-x"), catalogue.model_get(model_id="claude-x")
    first = setup.get_provider(gpt)
    assert setup.get_provider(gpt) is first
    assert setup.get_provider() is first
    other = setup.get_provider(claude)
    assert other is not first and other.name == "anthropic" and other.model == "claude-x"
    for provider in (first, other):
        await provider.aclose()


def test_reasoning_reaches_only_a_thinking_model(settings):
    two_models(settings)
    settings.CONSTRUCT_REASONING_DEFAULT = "low"
    gpt, claude = catalogue.model_get(model_id="gpt-x"), catalogue.model_get(model_id="claude-x")
    assert setup.reasoning_for(gpt, "high") == "off"
    assert setup.reasoning_for(claude, "high") == "high"
    assert setup.reasoning_for(claude, None) == "low"
