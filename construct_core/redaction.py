"""The secret registry, and the redaction of secrets from text, JSON values and log lines.

Plain Python, no Django: the agent, the providers, the socket and the
persistence layer all use it. Two strengths:

- `scrub` / `scrub_value` replace the exact values registered with
  `register_secret` (the provider key). Cheap enough for every streamed chunk,
  and what every stored field goes through.
- `redact` / `sanitize` also replace anything shaped like a secret (an `sk-...`
  key, a bearer token, `?token=...`): for error messages and log lines, never
  for the model's own text, which may quote such shapes on purpose.
"""

import logging
import re

MAX_ERROR_CHARS = 500
REDACTED = "[REDACTED]"

# Values known to be secret (the provider key); registered at start-up.
_secrets: set[str] = set()

# Shapes of secrets that may reach us from elsewhere (a provider echoing a key).
_SECRET_PATTERNS = [
    re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{8,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{8,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bzc_[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"),
    re.compile(r"(?i)(\"?(?:api[_-]?key|x-api-key|authorization|token|secret)\"?\s*[:=]\s*\"?)[^\s\",}]{6,}"),
    re.compile(r"(?i)([?&](?:token|key|api_key)=)[^&\s\"']+"),
]


def register_secret(value):
    """Remember a value that must never appear in a log line, a frame or a stored field."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text):
    """Replace every known secret and everything shaped like one with [REDACTED]."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + (" " if m.group(1).lower() == "bearer" else "") + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def scrub(text: str) -> str:
    """`text` with every registered secret replaced; cheap enough for each streamed chunk.

    Only exact registered values (the provider key) are looked for, one `in`
    per secret, not the shape patterns of `redact`: a chunk is the model's own
    text, and only a key the gateway holds must never reach a client.
    """
    for secret in _secrets:
        if secret in text:
            for known in sorted(_secrets, key=len, reverse=True):
                text = text.replace(known, REDACTED)
            return text
    return text


def scrub_cut(text: str) -> str:
    """`scrub` for a text that was cut short: a secret cut in two leaves no start of it behind."""
    text = scrub(text)
    for secret in _secrets:
        for size in range(len(secret) - 1, 3, -1):
            if text.endswith(secret[:size]):
                return text[:-size] + REDACTED
    return text


def scrub_value(value):
    """`scrub` through the strings of a JSON-like value: dict keys and values, list items.

    A dict of clean strings (a chunk's fields) comes back as it is, uncopied.
    """
    if value.__class__ is str:
        return scrub(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if item.__class__ is not str or key.__class__ is not str:
                return _scrub_dict(value)
            for secret in _secrets:
                if secret in item or secret in key:
                    return _scrub_dict(value)
        return value
    if isinstance(value, list):
        return [scrub_value(item) for item in value]
    return value


def _scrub_dict(value: dict) -> dict:
    return {scrub_value(key): scrub_value(item) for key, item in value.items()}


def scrub_fields(fields: dict) -> dict:
    """`scrub_value` for an event's fields, whose keys are the caller's own names.

    Only the values are looked at, so a streamed chunk ({"content": delta})
    costs one `in` per registered secret; nested values are walked, keys included.
    """
    for item in fields.values():
        if item.__class__ is not str:
            return {key: scrub_value(item) for key, item in fields.items()}
        for secret in _secrets:
            if secret in item:
                return {key: scrub_value(item) for key, item in fields.items()}
    return fields


def sanitize(text):
    """What of an error message may reach a client: redacted and at most 500 characters."""
    text = redact(str(text)).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from every record's message."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
