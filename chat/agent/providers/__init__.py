"""Model providers behind one small interface (see base.py), and the factory.

Each provider module is imported only when chosen, so one SDK is loaded, not both.
"""

import importlib

from construct_core.errors import AgentInitFailed
from construct_core.redaction import sanitize
from chat.agent.providers.base import ProviderConfig

NOT_CONFIGURED = (
    "No model provider is configured. Set CONSTRUCT_API_KEY (or OPENAI_API_KEY / ANTHROPIC_API_KEY), "
    "or CONSTRUCT_BASE_URL for a local OpenAI-compatible server such as Ollama "
    "(http://127.0.0.1:11434/v1); choose the provider with CONSTRUCT_PROVIDER (openai or anthropic) "
    "and the model with CONSTRUCT_MODEL."
)


# provider kind -> (module, class): the one place a provider is listed
PROVIDERS = {"openai": ("chat.agent.providers.openai_compat", "OpenAICompatProvider"),
             "anthropic": ("chat.agent.providers.anthropic", "AnthropicProvider")}


def provider_modules_load(kinds) -> list[str]:
    """Import the provider modules (and so the SDKs) of `kinds` now, not at the first turn
    (the OpenAI SDK is some 700 modules); unknown kinds are left to `build_provider` to
    refuse. Returns the modules imported."""
    loaded = []
    for kind in sorted(set(kinds)):
        if kind in PROVIDERS:
            name = PROVIDERS[kind][0]
            importlib.import_module(name)
            loaded.append(name)
    return loaded


def build_provider(config: ProviderConfig):
    """Build the provider `config` names; AgentInitFailed says how to fix a bad config."""
    if not config.api_key and not config.base_url:
        raise AgentInitFailed(NOT_CONFIGURED)
    if config.provider not in PROVIDERS:
        kinds = " or ".join(repr(kind) for kind in PROVIDERS)
        raise AgentInitFailed(sanitize(f"Unknown provider {config.provider!r}: set CONSTRUCT_PROVIDER to {kinds}."))
    module, cls = PROVIDERS[config.provider]
    provider_class = getattr(importlib.import_module(module), cls)
    try:
        return provider_class(config)
    except Exception as exc:  # the SDK refused a setting, e.g. a base URL its HTTP client cannot parse
        raise AgentInitFailed(sanitize(f"Could not set up the {config.provider} provider: {exc}")) from None
