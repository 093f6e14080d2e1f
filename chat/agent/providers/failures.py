"""Provider failures, mapped once: the SDKs' exceptions become ours, sanitized.

Both SDKs share one exception shape (APIStatusError, APIConnectionError over
httpx), so one context manager serves every provider module.
"""

import contextlib
import logging

import httpx2

from construct_core.errors import ProviderAuthError, ProviderError
from construct_core.redaction import sanitize

logger = logging.getLogger(__name__)


def failure(label, kind, template, *args):
    """One of our errors with a sanitized message, logged without secrets."""
    message = sanitize(template % args if args else template)
    logger.warning("%s provider failed: %s", label, message)
    return kind(message)


def event_failure(label, exc):
    """What to raise for `exc`, raised while reading one stream event: a ProviderError
    for an event that is not what the wire format says (not JSON, a missing field),
    else `exc` itself (the provider's own mid-stream error, say)."""
    if isinstance(exc, (ValueError, AttributeError, TypeError, KeyError)):
        return failure(label, ProviderError, "Provider sent malformed data: a stream event is not valid JSON")
    return exc


def describe(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def body_message(body, fallback):
    """The provider's own error message from an error body, if it has one."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return fallback


@contextlib.contextmanager
def sdk_errors(label, sdk, detail=lambda exc: body_message(exc.body, "no details")):
    """Translate the SDK's exceptions raised inside the block into ProviderError/ProviderAuthError."""
    try:
        yield
    except sdk.APIStatusError as exc:
        status = exc.status_code
        if status in (401, 403):
            raise failure(label, ProviderAuthError, "Provider rejected the API key (HTTP %s): %s",
                          status, detail(exc)) from None
        raise failure(label, ProviderError, "Provider returned HTTP %s: %s", status, detail(exc)) from None
    except sdk.APIConnectionError as exc:
        raise failure(label, ProviderError, "Provider unreachable: %s", describe(exc.__cause__ or exc)) from None
    except httpx2.TimeoutException:
        raise failure(label, ProviderError, "Provider stream stalled: no data within the timeout") from None
    except httpx2.TransportError as exc:
        raise failure(label, ProviderError, "Provider stream broke off: %s", describe(exc)) from None
