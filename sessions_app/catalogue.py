"""The models people may choose, as this deployment configures them.

CONSTRUCT_MODELS lists them (construct_core.model_choices parses it); unset,
the list is the one model of CONSTRUCT_PROVIDER / CONSTRUCT_MODEL /
CONSTRUCT_BASE_URL, read when asked so that it follows the settings. The first
is the default: a session whose model is unset (or no longer listed) uses it.
Nothing here knows a key, and `public()` of a model has no URL.
"""

from django.conf import settings

from construct_core.errors import ModelNotFound
from construct_core.model_choices import REASONING_OFF, ModelChoice
from sessions_app import selectors


def model_list() -> tuple[ModelChoice, ...]:
    """Every model people may choose, the default first."""
    if settings.CONSTRUCT_MODELS:
        return tuple(settings.CONSTRUCT_MODELS)
    # The one model: it thinks when the operator asked for reasoning by default.
    return (ModelChoice(id=settings.CONSTRUCT_MODEL, provider=settings.CONSTRUCT_PROVIDER,
                        label=settings.CONSTRUCT_MODEL, base_url=settings.CONSTRUCT_BASE_URL,
                        thinking=settings.CONSTRUCT_REASONING_DEFAULT != REASONING_OFF),)


def model_default() -> ModelChoice:
    return model_list()[0]


def _listed(model_id: str) -> ModelChoice | None:
    return next((choice for choice in model_list() if choice.id == model_id), None)


def model_get(*, model_id: str) -> ModelChoice:
    """The listed model `model_id`; ModelNotFound when it is not in the list."""
    choice = _listed(model_id)
    if choice is None:
        raise ModelNotFound(f"Unknown model {model_id[:200]!r}: GET /api/models/ lists the models")
    return choice


def model_of_session(stored: str | None) -> ModelChoice:
    """A session's model: the one it chose, or the default when it chose none (or one since unlisted)."""
    return (_listed(stored) if stored else None) or model_default()


def session_model(*, session_id: str) -> ModelChoice:
    """The model of session `session_id`, as stored (see `model_of_session`)."""
    return model_of_session(selectors.session_model(session_id=session_id))


def models_document() -> dict:
    """GET /api/models/: the list as a client may see it, the default and the reasoning default."""
    models = model_list()
    return {"models": [choice.public() for choice in models], "default": models[0].id,
            "reasoning_default": settings.CONSTRUCT_REASONING_DEFAULT}
