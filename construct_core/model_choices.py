"""The models people may choose (CONSTRUCT_MODELS) and the reasoning levels, parsed.

Plain Python, no Django: settings.py parses the variables with `models_parse`
and `reasoning_parse` (a malformed value stops start-up, naming it);
sessions_app.catalogue serves the list, and the turn engine builds one
provider per model.

    CONSTRUCT_MODELS='[{"id": "claude-sonnet-4-5", "provider": "anthropic", "label": "Claude Sonnet",
                        "thinking": true},
                       {"id": "llama3.1", "provider": "openai", "base_url": "http://127.0.0.1:11434/v1"}]'

`id` is the model name sent to the provider, and what a client names in a
`message`'s `"model"`. Keys are never in the list: they come from the
provider's key variables.
"""

import json
from dataclasses import dataclass

PROVIDERS = ("openai", "anthropic")
REASONING_OFF = "off"
REASONING_LEVELS = (REASONING_OFF, "low", "medium", "high")
MODEL_ID_MAX = 200
LABEL_MAX = 200
_FIELDS = {"id", "provider", "label", "base_url", "thinking"}


class BadModelList(ValueError):
    """CONSTRUCT_MODELS is not a JSON list of models."""


@dataclass(frozen=True)
class ModelChoice:
    """One model a person may choose: what the page shows, and where its requests go."""

    id: str
    provider: str
    label: str
    base_url: str | None = None
    thinking: bool = False

    def public(self) -> dict:
        """What a client may see of it: never its URL."""
        return {"id": self.id, "label": self.label, "provider": self.provider, "thinking": self.thinking}


def models_parse(raw: str | None) -> tuple[ModelChoice, ...]:
    """The models a CONSTRUCT_MODELS value lists, in its order; () when it is unset or blank.

    Raises BadModelList, saying what is wrong, for anything but a non-empty
    JSON list of objects with a unique string `id`, a known `provider`, and
    optionally a string `label` and `base_url` and a boolean `thinking`.
    """
    if raw is None or not raw.strip():
        return ()
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise BadModelList(f"not valid JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise BadModelList("must be a non-empty JSON list of models")
    found: list[ModelChoice] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"item {index}"
        if not isinstance(item, dict):
            raise BadModelList(f"{where} is not a JSON object")
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise BadModelList(f"{where} has unknown fields {unknown} (keys come from the provider's "
                               f"key variables, never from this list)")
        model_id = item.get("id")
        if not isinstance(model_id, str) or not model_id.strip() or len(model_id) > MODEL_ID_MAX:
            raise BadModelList(f"{where} needs an \"id\": the model's name, a string of at most "
                               f"{MODEL_ID_MAX} characters")
        model_id = model_id.strip()
        if model_id in seen:
            raise BadModelList(f"the id {model_id!r} is listed twice")
        seen.add(model_id)
        provider = item.get("provider")
        if provider not in PROVIDERS:
            raise BadModelList(f"{where} ({model_id}) needs a \"provider\": 'openai' or 'anthropic', "
                               f"not {provider!r}")
        label = item.get("label", model_id)
        if not isinstance(label, str) or len(label) > LABEL_MAX:
            raise BadModelList(f"{where} ({model_id}): \"label\" must be a string of at most "
                               f"{LABEL_MAX} characters")
        base_url = item.get("base_url")
        if base_url is not None and (not isinstance(base_url, str)
                                     or not base_url.startswith(("http://", "https://"))):
            raise BadModelList(f"{where} ({model_id}): \"base_url\" must be an http(s) URL")
        thinking = item.get("thinking", False)
        if not isinstance(thinking, bool):
            raise BadModelList(f"{where} ({model_id}): \"thinking\" must be true or false")
        found.append(ModelChoice(id=model_id, provider=provider, label=label.strip() or model_id,
                                 base_url=base_url or None, thinking=thinking))
    return tuple(found)


def reasoning_parse(raw: str | None) -> str:
    """A reasoning level: off (unset), low, medium or high; ValueError for anything else."""
    if raw is None or not raw.strip():
        return REASONING_OFF
    level = raw.strip().lower()
    if level not in REASONING_LEVELS:
        raise ValueError(f"must be one of {', '.join(REASONING_LEVELS)}, not {raw!r}")
    return level
