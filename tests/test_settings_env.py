"""A bad environment stops start-up with a message naming the variable.

Settings are read once, at import, so each case runs Django in a fresh
subprocess: what an operator sees is the exit status and stderr.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP = "import django; django.setup()"

# Variables a case may set; removed from the inherited environment so that
# each case tests exactly one bad value on top of the defaults.
CONFIG_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "CONSTRUCT_PROVIDER", "CONSTRUCT_PRICES",
    "CONSTRUCT_MCP_SERVERS", "CONSTRUCT_MAX_TOOL_ITERATIONS", "CONSTRUCT_SHELL_SANDBOX",
    "CONSTRUCT_MODELS", "CONSTRUCT_REASONING_DEFAULT", "CONSTRUCT_FIRST_DELTA_TIMEOUT",
    "CONSTRUCT_PUBLIC_URL", "DJANGO_ALLOWED_HOSTS",
)


def run_django(args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    full_env.update(env, DJANGO_SETTINGS_MODULE="construct_site.settings")
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("CONSTRUCT_PROVIDER", "nope"),
        ("CONSTRUCT_PRICES", "{bad"),
        ("CONSTRUCT_PRICES", '{"gpt-4o": 3}'),
        ("CONSTRUCT_MCP_SERVERS", "{}"),
        ("CONSTRUCT_MCP_SERVERS", '[{"name": "ops"}]'),
        ("CONSTRUCT_MCP_SERVERS", '[{"name": "a b", "command": "python"}]'),
        ("CONSTRUCT_MAX_TOOL_ITERATIONS", "abc"),
        ("DATABASE_URL", "nonsense://x"),
        ("REDIS_URL", "http://x"),
        ("CONSTRUCT_SHELL_SANDBOX", "none"),
        ("CONSTRUCT_SHELL_SANDBOX", "false"),
        ("CONSTRUCT_MAX_ATTACHMENT_BYTES", "lots"),
        ("CONSTRUCT_MAX_ATTACHMENT_BYTES", "0"),
        ("CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE", "-1"),
        ("CONSTRUCT_MODELS", "[{bad"),
        ("CONSTRUCT_MODELS", '{"id": "a", "provider": "openai"}'),
        ("CONSTRUCT_MODELS", "[]"),
        ("CONSTRUCT_MODELS", '[{"provider": "openai"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "gemini"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "openai"}, {"id": "a", "provider": "anthropic"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "openai", "thinking": "yes"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "openai", "label": 1}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "openai", "base_url": "not a url"}]'),
        ("CONSTRUCT_MODELS", '[{"id": "a", "provider": "openai", "api_key": "sk-x"}]'),
        ("CONSTRUCT_REASONING_DEFAULT", "max"),
        ("CONSTRUCT_FIRST_DELTA_TIMEOUT", "soon"),
        ("CONSTRUCT_FIRST_DELTA_TIMEOUT", "0"),
        ("CONSTRUCT_PUBLIC_URL", "chat.example.com"),
        ("CONSTRUCT_PUBLIC_URL", "ftp://chat.example.com"),
        ("CONSTRUCT_PUBLIC_URL", "https://chat.example.com:port"),
        ("CONSTRUCT_PUBLIC_URL", "https://user:pw@chat.example.com"),
        ("CONSTRUCT_PUBLIC_URL", "https://chat.example.com/?x=1"),
    ],
)
def test_bad_value_fails_fast_naming_the_variable(name, value):
    result = run_django(["-c", SETUP], **{name: value})
    assert result.returncode != 0, result.stdout
    assert name in result.stderr


def test_bad_value_fails_manage_py_check_too():
    result = run_django(["manage.py", "check"], CONSTRUCT_PROVIDER="nope")
    assert result.returncode != 0
    assert "CONSTRUCT_PROVIDER" in result.stderr


def test_defaults_start():
    result = run_django(["manage.py", "check"])
    assert result.returncode == 0, result.stderr


def test_a_model_list_and_a_reasoning_default_start():
    result = run_django(
        ["-c", SETUP + "; from django.conf import settings as s; "
                       "print([m.id for m in s.CONSTRUCT_MODELS], s.CONSTRUCT_REASONING_DEFAULT)"],
        CONSTRUCT_MODELS='[{"id": "a", "provider": "openai"}, {"id": "b", "provider": "anthropic", '
                         '"thinking": true}]',
        CONSTRUCT_REASONING_DEFAULT="High",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['a', 'b'] high"


def test_first_delta_timeout_defaults_to_60_and_takes_fractions():
    show = SETUP + "; from django.conf import settings as s; print(s.CONSTRUCT_FIRST_DELTA_TIMEOUT)"
    assert run_django(["-c", show]).stdout.strip() == "60.0"
    assert run_django(["-c", show], CONSTRUCT_FIRST_DELTA_TIMEOUT="2.5").stdout.strip() == "2.5"


def test_public_url_is_trusted_for_csrf_and_allowed_as_a_host():
    show = SETUP + ("; from django.conf import settings as s; "
                    "print(s.CONSTRUCT_PUBLIC_URL, s.CONSTRUCT_PUBLIC_ORIGIN, s.CSRF_TRUSTED_ORIGINS, "
                    "s.ALLOWED_HOSTS)")
    result = run_django(["-c", show], CONSTRUCT_PUBLIC_URL="https://Chat.Example.com:8443/gw/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "https://Chat.Example.com:8443/gw https://chat.example.com:8443 "
        "['https://chat.example.com:8443'] ['localhost', '127.0.0.1', '[::1]', 'chat.example.com']"
    )
    default_port = run_django(["-c", show], CONSTRUCT_PUBLIC_URL="https://chat.example.com:443")
    assert "https://chat.example.com ['https://chat.example.com']" in default_port.stdout
    unset = run_django(["-c", show])
    assert unset.stdout.strip() == "None None [] ['localhost', '127.0.0.1', '[::1]']"
