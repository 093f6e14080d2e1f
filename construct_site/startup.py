"""What the server does once as it starts: check Redis, start tracing, say how the shell tool runs,
print a pairing code.

construct_site.serving calls these as the server starts serving, before it
accepts a connection: synchronously, outside any event loop.
"""

import json
import logging
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from construct_core.probes import redis_ping

logger = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT = 3.0
# Where Ollama listens by default (Open WebUI looks there too), and how long its
# answer may take: nothing listening is refused at once, so this bounds only a
# server that accepts and stays silent.
OLLAMA_URL = "http://127.0.0.1:11434"
OLLAMA_PROBE_TIMEOUT = 1.0
_RULE = "=" * 64


def imports_warm() -> list[str]:
    """Import now what the first request and the first turn would import: the URL conf's
    views (the REST API, its schema) and the SDKs of the listed models' providers.

    Done before the process freezes its start-up objects (construct_core.heap), so they are
    frozen with the rest; and the first turns do not wait for 700 modules to load.
    Returns the provider modules loaded.
    """
    from django.urls import get_resolver

    from chat.agent.providers import provider_modules_load
    from sessions_app import catalogue

    get_resolver().url_patterns  # noqa: B018 - the property imports every view
    return provider_modules_load(choice.provider for choice in catalogue.model_list())


def guess_base_url(argv: list[str] | None = None) -> str:
    """The server's URL as the command line that started it says (daphne -b/-p, runserver ADDR:PORT).

    The ASGI application is never told where it listens; this is only for the
    instructions printed next to the pairing code, so a guess is good enough.
    """
    argv = list(sys.argv if argv is None else argv)
    host, port = "127.0.0.1", "8000"
    for flag, value in zip(argv, argv[1:]):
        if flag in ("-b", "--bind"):
            host = value
        elif flag in ("-p", "--port"):
            port = value
    if "runserver" in argv:
        rest = [arg for arg in argv[argv.index("runserver") + 1 :] if not arg.startswith("-")]
        if rest:
            addr = rest[0]
            if addr.isdigit():
                port = addr
            elif ":" in addr:
                host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine is one of them
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def announce_pairing(stdout=None, *, base_url: str | None = None) -> str | None:
    """Print a fresh pairing code when pairing is required and no device is paired yet.

    Upstream prints its code at start-up too: the operator reads it off the
    console, where nobody but them is looking. Returns the code, or None when
    none was needed or the database is not ready. `stdout` defaults to the
    current sys.stdout, looked up at call time; `base_url` to CONSTRUCT_PUBLIC_URL,
    else guess_base_url().
    """
    from django.conf import settings

    # Imported here so that importing this module needs no app registry.
    from sessions_app.pairing import CODE_TTL_SECONDS, pairing_code_issue, pairing_required
    from sessions_app.selectors_pairing import device_any_paired

    out = stdout or sys.stdout
    if not pairing_required():
        return None
    try:
        if device_any_paired():
            return None
        code = pairing_code_issue()
    except DatabaseError as exc:  # no such table / relation does not exist
        out.write(
            f"Construct gateway: the database is not ready ({type(exc).__name__}); "
            "run `python manage.py migrate` first.\n"
        )
        return None
    base = (base_url or settings.CONSTRUCT_PUBLIC_URL or guess_base_url()).rstrip("/")
    out.write(
        "\n".join(
            [
                "",
                _RULE,
                "  Construct gateway: pairing required",
                "",
                f"  One-time pairing code:  {code}   (valid for {CODE_TTL_SECONDS // 60} minutes)",
                "",
                f"  In a browser: open {base}/ and enter the code.",
                f'  From a script: curl -X POST -H "X-Pairing-Code: {code}" {base}/pair',
                "  A fresh code at any time: python manage.py pairing_code",
                _RULE,
                "",
                "",
            ]
        )
    )
    out.flush()
    return code


def announce_shell() -> None:
    """Say in one line when the shell tool is not offered, or runs without its sandbox."""
    from django.conf import settings

    from chat.agent.tools import shell_status

    status = shell_status(settings.CONSTRUCT_SHELL_SANDBOX, settings.CONSTRUCT_SHELL_ALLOWLIST,
                          settings.CONSTRUCT_BWRAP)
    if status is not None:
        level, line = status
        logger.log(level, "%s", line)


def tracing_begin(environ=None) -> bool:
    """Set up OpenTelemetry tracing when the OTEL_* variables ask for it, and say where spans go.

    Without OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) nothing of
    OpenTelemetry is loaded (construct_core.tracing).
    """
    import os

    from construct_core import tracing

    environ = os.environ if environ is None else environ
    if not tracing.tracing_start(environ):
        return False
    endpoint = next(environ[name].strip() for name in reversed(tracing.ENDPOINT_VARIABLES)
                    if environ.get(name, "").strip())
    logger.info("OpenTelemetry traces go to %s over OTLP/HTTP", redact_url(endpoint))
    return True


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, fit for an error message."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    userinfo = f"{parts.username or ''}:***"
    netloc = f"{userinfo}@{parts.netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def check_redis(url: str) -> None:
    """Ping REDIS_URL once; raise ImproperlyConfigured naming the variable when it does not answer.

    Without this a wrong REDIS_URL shows up only at the first socket, as a
    channel-layer traceback; failing at start is what the contract asks.
    """
    password = None
    try:
        password = urlsplit(url).password
    except ValueError:
        pass
    exc = redis_ping(url, REDIS_CONNECT_TIMEOUT)
    if exc is not None:
        reason = str(exc) or type(exc).__name__
        if password:
            reason = reason.replace(password, "***")
        raise ImproperlyConfigured(f"REDIS_URL {redact_url(url)} is unreachable: {reason}")
    logger.info("Redis at %s answers", redact_url(url))


def provider_configured() -> bool:
    """Whether the settings name a model provider: a model list, a key or a base URL."""
    from django.conf import settings

    return bool(settings.CONSTRUCT_MODELS or settings.CONSTRUCT_API_KEY or settings.CONSTRUCT_BASE_URL)


def ollama_models(base: str = OLLAMA_URL, timeout: float = OLLAMA_PROBE_TIMEOUT) -> list[str] | None:
    """The model names a local Ollama at `base` lists (GET /api/tags), or None when none answers."""
    try:
        with urllib.request.urlopen(f"{base}/api/tags", timeout=timeout) as response:
            document = json.loads(response.read(1_048_576))
    except (OSError, ValueError):  # refused, timed out, an HTTP error, not JSON
        return None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        return None
    names = [entry.get("name") or entry.get("model") for entry in models if isinstance(entry, dict)]
    return [name for name in names if isinstance(name, str) and name]


def use_local_ollama(base: str = OLLAMA_URL) -> str | None:
    """With no provider configured, use a local Ollama if one answers with a model; say so.

    Its OpenAI-compatible API (`base`/v1) becomes CONSTRUCT_BASE_URL, and the
    model is CONSTRUCT_MODEL when Ollama has it, else the first it lists. Returns
    the model picked, or None (nothing changed: a turn still gets AGENT_INIT_FAILED).
    """
    from django.conf import settings

    if provider_configured() or settings.CONSTRUCT_PROVIDER != "openai":
        return None
    names = ollama_models(base)
    if not names:
        if names is not None:
            logger.warning("No model provider is configured, and the Ollama at %s has no model "
                           "(ollama pull llama3.2)", base)
        return None
    model = settings.CONSTRUCT_MODEL if settings.CONSTRUCT_MODEL in names else names[0]
    settings.CONSTRUCT_BASE_URL = f"{base}/v1"
    settings.CONSTRUCT_MODEL = model
    logger.warning("No model provider is configured: using the local Ollama at %s, model %s",
                   base, model)
    return model
