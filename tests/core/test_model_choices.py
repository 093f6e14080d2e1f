"""CONSTRUCT_MODELS and CONSTRUCT_REASONING_DEFAULT, parsed (construct_core.model_choices)."""

import json

import pytest

from construct_core.model_choices import BadModelList, ModelChoice, models_parse, reasoning_parse


def test_a_good_list_keeps_its_order_and_fills_in_the_defaults():
    models = models_parse(json.dumps([
        {"id": "claude-sonnet-4-5", "provider": "anthropic", "label": "Claude Sonnet", "thinking": True},
        {"id": "llama3.1", "provider": "openai", "base_url": "http://127.0.0.1:11434/v1"},
    ]))
    assert models == (
        ModelChoice("claude-sonnet-4-5", "anthropic", "Claude Sonnet", None, True),
        ModelChoice("llama3.1", "openai", "llama3.1", "http://127.0.0.1:11434/v1", False),
    )
    assert models[1].public() == {"id": "llama3.1", "label": "llama3.1", "provider": "openai",
                                  "thinking": False}


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_is_no_list(raw):
    assert models_parse(raw) == ()


@pytest.mark.parametrize(
    "raw, said",
    [
        ("[{bad", "not valid JSON"),
        ('{"id": "a", "provider": "openai"}', "list"),
        ("[]", "non-empty"),
        ('["gpt-4o"]', "not a JSON object"),
        ('[{"provider": "openai"}]', '"id"'),
        ('[{"id": "", "provider": "openai"}]', '"id"'),
        ('[{"id": 4, "provider": "openai"}]', '"id"'),
        ('[{"id": "a"}]', '"provider"'),
        ('[{"id": "a", "provider": "mistral"}]', "mistral"),
        ('[{"id": "a", "provider": "openai"}, {"id": "a", "provider": "anthropic"}]', "twice"),
        ('[{"id": "a", "provider": "openai", "label": 3}]', '"label"'),
        ('[{"id": "a", "provider": "openai", "base_url": "ftp://x"}]', '"base_url"'),
        ('[{"id": "a", "provider": "openai", "base_url": 1}]', '"base_url"'),
        ('[{"id": "a", "provider": "openai", "thinking": "yes"}]', '"thinking"'),
        ('[{"id": "a", "provider": "openai", "api_key": "sk-x"}]', "api_key"),
    ],
)
def test_a_malformed_list_says_what_is_wrong(raw, said):
    with pytest.raises(BadModelList) as caught:
        models_parse(raw)
    assert said in str(caught.value)


@pytest.mark.parametrize("raw, level", [(None, "off"), ("", "off"), ("low", "low"), (" Medium ", "medium"),
                                        ("high", "high"), ("off", "off")])
def test_reasoning_levels(raw, level):
    assert reasoning_parse(raw) == level


@pytest.mark.parametrize("raw", ["max", "on", "1"])
def test_a_bad_reasoning_level_is_refused(raw):
    with pytest.raises(ValueError):
        reasoning_parse(raw)
