"""Settings for Construct gateway.

Every knob comes from the environment, read here and nowhere else. Defaults are
safe for one person on a laptop: SQLite, the in-process channel layer, pairing
required. A malformed value stops start-up with a message naming the variable.
"""

import json
import os
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from construct_core.approvals import BadRules, rules_parse
from construct_core.logs import log_format_parse
from construct_core.networks import networks_parse
from construct_core.model_choices import BadModelList, models_parse, reasoning_parse
from construct_site.secret_key import secret_key_load

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _env_bool(name, default):
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def _env_number(name, default, kind=int, minimum=None):
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {kind.__name__}, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def _env_json(name, default, expected):
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, expected):
        raise ImproperlyConfigured(f"{name} must be a JSON {expected.__name__}")
    return value


def _env_list(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _env_public_url(name):
    """An http(s) URL people use to reach the server, as (url, origin, host); Nones when unset."""
    raw = _env(name)
    if raw is None:
        return None, None, None
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.username or parts.password or parts.query or parts.fragment):
        raise ImproperlyConfigured(
            f"{name} must be an http or https URL such as https://chat.example.com, "
            f"with no user, query or fragment, not {raw!r}"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    # As a browser sends it: no port when it is the scheme's default.
    default_port = {"http": 80, "https": 443}[parts.scheme]
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")
    return raw.rstrip("/"), origin, parts.hostname


def _env_rate(name, default):
    """COUNT/SECONDS as a (count, seconds) pair, e.g. "20/10"; "0" or "off" is no limit (None)."""
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in {"0", "off", "none"}:
        return None
    count, _, seconds = raw.partition("/")
    try:
        rate = (int(count), float(seconds))
    except ValueError:
        rate = None
    if rate is None or rate[0] < 1 or not rate[1] > 0:
        raise ImproperlyConfigured(f"{name} must be COUNT/SECONDS such as 20/10, or off, not {raw!r}")
    return rate


# --- Django -----------------------------------------------------------------

DEBUG = _env_bool("DJANGO_DEBUG", False)
# Where the generated secret key file and the default SQLite database live.
CONSTRUCT_DATA_DIR = Path(_env("CONSTRUCT_DATA_DIR", str(BASE_DIR))).expanduser().resolve()
# Never a built-in key: without DJANGO_SECRET_KEY, one is made on the first
# start and kept in CONSTRUCT_DATA_DIR/secret_key (0600), so logins and CSRF
# tokens survive restarts, and every process that shares the folder agrees.
SECRET_KEY = _env("DJANGO_SECRET_KEY") or secret_key_load(CONSTRUCT_DATA_DIR)
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
# The URL people use, behind a proxy: printed in the pairing banner; its origin
# may post forms (CSRF) and open the chat socket, and its host is allowed.
CONSTRUCT_PUBLIC_URL, CONSTRUCT_PUBLIC_ORIGIN, _public_host = _env_public_url("CONSTRUCT_PUBLIC_URL")
CSRF_TRUSTED_ORIGINS = [CONSTRUCT_PUBLIC_ORIGIN] if CONSTRUCT_PUBLIC_ORIGIN else []
if _public_host and "*" not in ALLOWED_HOSTS and _public_host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_public_host if ":" not in _public_host else f"[{_public_host}]")
# X-Forwarded-Proto counts only from a CONSTRUCT_TRUSTED_PROXIES peer: the
# middleware that checks the peer (chat.security.ForwardedProtoMiddleware)
# copies it to this META key, which no client header can set.
SECURE_PROXY_SSL_HEADER = ("CONSTRUCT_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us: /api/docs/ needs no CDN
    "channels",
    "sessions_app",
    "chat",
    "chat.devserver",  # `manage.py mock_llm`, the scripted provider for development and tests
]

MIDDLEWARE = [
    # First, so an oversized body is refused before anything reads it.
    "chat.security.BodyLimitMiddleware",
    # Before anything asks whether the request is secure (CSRF, redirects).
    "chat.security.ForwardedProtoMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "construct_site.urls"
ASGI_APPLICATION = "construct_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": dj_database_url.parse(
            _env("DATABASE_URL", f"sqlite:///{CONSTRUCT_DATA_DIR / 'db.sqlite3'}"),
            # Keep the connection: opening one per call cost 2-4 ms against
            # 0.1-0.6 ms of query (measured in bench/), on the one thread all
            # database work of a process queues on. Health checks replace a
            # connection that a database restart broke.
            conn_max_age=None,
            conn_health_checks=True,
        )
    }
except Exception as exc:  # dj-database-url raises several types for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (and the pairing_code command) write at once: wait for
    # the lock rather than fail, and let readers run beside one writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# Days and months of the budgets and quotas are this zone's (an IANA name).
TIME_ZONE = _env("CONSTRUCT_TIME_ZONE", "UTC")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"CONSTRUCT_TIME_ZONE must be a time zone name such as Europe/Berlin, not {TIME_ZONE!r}"
    ) from None
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the fingerprinted, compressed files (internal: tests
# point it at a folder of their own).
STATIC_ROOT = Path(_env("CONSTRUCT_STATIC_ROOT", str(BASE_DIR / "staticfiles"))).resolve()
if not STATIC_ROOT.is_dir():
    # WhiteNoise serves from the app folders (below) until collectstatic has run.
    STATIC_ROOT = None
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Fingerprinted names (cached for good) once collectstatic has written its manifest.
    "staticfiles": {"BACKEND": "construct_site.staticfiles.CollectedStaticFilesStorage"},
}
# Serve straight from the app folders too, so a fresh checkout needs no collectstatic.
WHITENOISE_USE_FINDERS = True

# Request bodies: the REST API never needs more than this.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Channels ----------------------------------------------------------------

REDIS_URL = _env("REDIS_URL")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, not {REDIS_URL!r}")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which kills the
                # layer's blocking BZPOPMIN reads on a quiet socket. Dead peers
                # are found by TCP keepalive instead.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "health_check_interval": 30,
                    }
                ],
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- REST framework ----------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["sessions_app.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "sessions_app.api.auth.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Construct gateway API",
    "DESCRIPTION": "Sessions, history, cost and operator events of a Construct gateway.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Sessions' state appears in several components: one enum, named for it.
    "ENUM_NAME_OVERRIDES": {"SessionStateEnum": "sessions_app.models.ChatSession.State"},
}

# --- Logging -----------------------------------------------------------------

# "text" lines, or "json": one JSON object per line with the session and turn where known.
try:
    CONSTRUCT_LOG_FORMAT = log_format_parse(os.environ.get("CONSTRUCT_LOG_FORMAT"))
except ValueError as exc:
    raise ImproperlyConfigured(f"CONSTRUCT_LOG_FORMAT {exc}") from None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "construct_core.redaction.RedactingFilter"},
        "context": {"()": "construct_core.logs.ContextFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "construct_core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": CONSTRUCT_LOG_FORMAT,
                    "filters": ["redact", "context"]},
    },
    "root": {"handlers": ["console"], "level": _env("CONSTRUCT_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
        # The SDKs' HTTP client logs every request at INFO; the SDKs pinned use httpx2.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}

# --- Construct ---------------------------------------------------------------

CONSTRUCT_PROVIDER = _env("CONSTRUCT_PROVIDER", "openai").lower()
if CONSTRUCT_PROVIDER not in {"openai", "anthropic"}:
    raise ImproperlyConfigured(
        f"CONSTRUCT_PROVIDER must be 'openai' or 'anthropic', not {CONSTRUCT_PROVIDER!r}"
    )
_DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
CONSTRUCT_BASE_URL = _env("CONSTRUCT_BASE_URL")
CONSTRUCT_MODEL = _env("CONSTRUCT_MODEL", _DEFAULT_MODELS[CONSTRUCT_PROVIDER])
CONSTRUCT_API_KEY = _env(
    "CONSTRUCT_API_KEY",
    _env("OPENAI_API_KEY" if CONSTRUCT_PROVIDER == "openai" else "ANTHROPIC_API_KEY"),
)
# Each provider's own key variable: the key of that provider's models in CONSTRUCT_MODELS
# (CONSTRUCT_API_KEY, above, is CONSTRUCT_PROVIDER's and wins for its models).
CONSTRUCT_PROVIDER_KEYS = {"openai": _env("OPENAI_API_KEY"), "anthropic": _env("ANTHROPIC_API_KEY")}
# The models people may choose, in order (the first is the default); empty: the one model of
# CONSTRUCT_PROVIDER / CONSTRUCT_MODEL / CONSTRUCT_BASE_URL (sessions_app.catalogue).
try:
    CONSTRUCT_MODELS = models_parse(os.environ.get("CONSTRUCT_MODELS"))
except BadModelList as exc:
    raise ImproperlyConfigured(
        'CONSTRUCT_MODELS must be a JSON list of models such as [{"id": "gpt-4o-mini", '
        f'"provider": "openai", "label": "GPT-4o mini", "thinking": false}}]: {exc}'
    ) from None
try:
    CONSTRUCT_REASONING_DEFAULT = reasoning_parse(os.environ.get("CONSTRUCT_REASONING_DEFAULT"))
except ValueError as exc:
    raise ImproperlyConfigured(f"CONSTRUCT_REASONING_DEFAULT {exc}") from None
CONSTRUCT_REQUIRE_PAIRING = _env_bool("CONSTRUCT_REQUIRE_PAIRING", True)
CONSTRUCT_WORKSPACE = Path(_env("CONSTRUCT_WORKSPACE", str(BASE_DIR / "workspace"))).resolve()
CONSTRUCT_SHELL_ALLOWLIST = _env_list(
    "CONSTRUCT_SHELL_ALLOWLIST",
    ["echo", "ls", "cat", "pwd", "date", "wc", "head", "tail", "grep", "sort", "uniq", "sleep"],
)
# The shell tool's sandbox: "bwrap" (bubblewrap; without it the tool is not
# offered) or "off", by name only, to run commands on the host.
CONSTRUCT_SHELL_SANDBOX = _env("CONSTRUCT_SHELL_SANDBOX", "bwrap").lower()
if CONSTRUCT_SHELL_SANDBOX not in {"bwrap", "off"}:
    raise ImproperlyConfigured(
        f"CONSTRUCT_SHELL_SANDBOX must be 'bwrap' or 'off', not {CONSTRUCT_SHELL_SANDBOX!r}"
    )
CONSTRUCT_MAX_TOOL_ITERATIONS = _env_number("CONSTRUCT_MAX_TOOL_ITERATIONS", 10, minimum=1)
CONSTRUCT_SESSION_QUEUE_TIMEOUT = _env_number(
    "CONSTRUCT_SESSION_QUEUE_TIMEOUT", 30.0, kind=float, minimum=0
)
CONSTRUCT_SESSION_QUEUE_DEPTH = _env_number("CONSTRUCT_SESSION_QUEUE_DEPTH", 8, minimum=0)
# On SIGTERM, how long running turns may go on before the process closes its sockets and exits.
CONSTRUCT_DRAIN_SECONDS = _env_number("CONSTRUCT_DRAIN_SECONDS", 120.0, kind=float, minimum=0)
CONSTRUCT_PRICES = _env_json("CONSTRUCT_PRICES", {}, dict)
for _model, _price in CONSTRUCT_PRICES.items():
    if not isinstance(_price, dict) or not all(
        isinstance(_price.get(k, 0), (int, float)) for k in ("input", "output")
    ):
        raise ImproperlyConfigured(
            'CONSTRUCT_PRICES must map each model to {"input": usd_per_1M, "output": usd_per_1M}'
        )
CONSTRUCT_MCP_SERVERS = _env_json("CONSTRUCT_MCP_SERVERS", [], list)
CONSTRUCT_DAILY_BUDGET_USD = _env_number("CONSTRUCT_DAILY_BUDGET_USD", None, kind=float, minimum=0)
# Each user's own limits, unless admin gives them others (UserQuota); unset: no limit.
CONSTRUCT_USER_DAILY_BUDGET_USD = _env_number("CONSTRUCT_USER_DAILY_BUDGET_USD", None, kind=float,
                                              minimum=0)
CONSTRUCT_USER_MONTHLY_BUDGET_USD = _env_number("CONSTRUCT_USER_MONTHLY_BUDGET_USD", None, kind=float,
                                                minimum=0)
CONSTRUCT_USER_DAILY_TOKENS = _env_number("CONSTRUCT_USER_DAILY_TOKENS", None, minimum=0)
CONSTRUCT_CONTEXT_TOKENS = _env_number("CONSTRUCT_CONTEXT_TOKENS", 128_000, minimum=256)
CONSTRUCT_TRUSTED_PROXIES = _env_list("CONSTRUCT_TRUSTED_PROXIES", [])
# Who may read GET /metrics besides loopback clients and staff tokens: addresses or networks.
CONSTRUCT_METRICS_ALLOWED = _env_list("CONSTRUCT_METRICS_ALLOWED", [])
try:
    networks_parse(CONSTRUCT_METRICS_ALLOWED)
except ValueError as exc:
    raise ImproperlyConfigured(f"CONSTRUCT_METRICS_ALLOWED: {exc}") from None
CONSTRUCT_MAX_FRAME_BYTES = _env_number("CONSTRUCT_MAX_FRAME_BYTES", 1_048_576, minimum=1024)
# Origins allowed to open the chat socket, besides the page's own host.
CONSTRUCT_ALLOWED_ORIGINS = _env_list("CONSTRUCT_ALLOWED_ORIGINS", [])
# Which tool calls wait for a person (construct_core/approvals.py): PATTERN=POLICY rules,
# first match wins, as ((pattern, policy), ...); and how long a call waits before it is denied.
try:
    CONSTRUCT_TOOL_APPROVAL = rules_parse(_env("CONSTRUCT_TOOL_APPROVAL"))
except BadRules as exc:
    raise ImproperlyConfigured(
        f"CONSTRUCT_TOOL_APPROVAL must be comma-separated PATTERN=POLICY rules such as "
        f"'shell=ask,file_*=ask,*=auto' (POLICY auto, ask or deny): {exc}"
    ) from None
CONSTRUCT_APPROVAL_TIMEOUT = _env_number("CONSTRUCT_APPROVAL_TIMEOUT", 120.0, kind=float, minimum=0.1)

# Seconds a model call may send nothing at all before the turn ends with PROVIDER_ERROR.
CONSTRUCT_FIRST_DELTA_TIMEOUT = _env_number("CONSTRUCT_FIRST_DELTA_TIMEOUT", 60.0, kind=float, minimum=0.1)

# Attachments: uploads kept one folder per session under CONSTRUCT_MEDIA_ROOT
# (never under a user's file name), at most this many bytes each.
CONSTRUCT_MEDIA_ROOT = Path(_env("CONSTRUCT_MEDIA_ROOT", str(BASE_DIR / "media"))).expanduser().resolve()
CONSTRUCT_MAX_ATTACHMENT_BYTES = _env_number("CONSTRUCT_MAX_ATTACHMENT_BYTES", 25 * 1024 * 1024, minimum=1)
CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE = _env_number("CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE", 10, minimum=0)
# An upload past this many bytes in memory goes on to a temporary file (Django's own setting).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Internal tuning, not part of the contract.
# The bubblewrap binary (a name on PATH or a path); tests point it elsewhere.
CONSTRUCT_BWRAP = _env("CONSTRUCT_BWRAP", "bwrap")
CONSTRUCT_TURN_LEASE_SECONDS = _env_number("CONSTRUCT_TURN_LEASE_SECONDS", 10.0, kind=float)
CONSTRUCT_CONNECT_FRAME_TIMEOUT = 5.0
# After a chat's first answer its model proposes a short title, in the background (one more,
# small, provider call per chat); `false` keeps the title made from the first message.
CONSTRUCT_AUTO_TITLE = _env_bool("CONSTRUCT_AUTO_TITLE", True)
# Hostile-input limits (see SECURITY.md), per device, or per client address when
# pairing is off: messages and new sockets as COUNT/SECONDS, open sockets as a cap.
CONSTRUCT_MESSAGE_RATE = _env_rate("CONSTRUCT_MESSAGE_RATE", (20, 10.0))
CONSTRUCT_SOCKET_RATE = _env_rate("CONSTRUCT_SOCKET_RATE", (30, 60.0))
CONSTRUCT_MAX_SOCKETS_PER_TOKEN = _env_number("CONSTRUCT_MAX_SOCKETS_PER_TOKEN", 20, minimum=0)
# Seconds the provider may stay silent (connect, or between two bytes of a stream).
CONSTRUCT_PROVIDER_TIMEOUT = _env_number("CONSTRUCT_PROVIDER_TIMEOUT", 120.0, kind=float, minimum=0.1)
# The attachments of one message together, in bytes: the rest are skipped (and logged).
CONSTRUCT_MAX_MESSAGE_ATTACHMENT_BYTES = _env_number("CONSTRUCT_MAX_MESSAGE_ATTACHMENT_BYTES",
                                                     50 * 1024 * 1024, minimum=1)
