"""Start-up: the pairing announcement and the Redis check."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from construct_site.startup import announce_pairing, check_redis, guess_base_url, redact_url
from sessions_app.pairing import device_pair
from tests.factories import make_device
from tests.support import services

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_announces_a_working_code_when_nothing_is_paired():
    out = io.StringIO()

    code = announce_pairing(stdout=out, base_url="http://127.0.0.1:8765")

    text = out.getvalue()
    assert len(code) == 6 and code.isdigit()
    assert code in text
    assert f'curl -X POST -H "X-Pairing-Code: {code}" http://127.0.0.1:8765/pair' in text
    assert "open http://127.0.0.1:8765/" in text
    assert "python manage.py pairing_code" in text
    assert device_pair(code=code, client="a")


@pytest.mark.django_db
def test_the_announcement_shows_the_public_url_when_set(settings):
    settings.CONSTRUCT_PUBLIC_URL = "https://chat.example.com:8443/gw"
    out = io.StringIO()

    code = announce_pairing(stdout=out)

    text = out.getvalue()
    assert "open https://chat.example.com:8443/gw/ and enter the code" in text
    assert f'-H "X-Pairing-Code: {code}" https://chat.example.com:8443/gw/pair' in text
    assert "127.0.0.1" not in text


@pytest.mark.django_db
def test_no_announcement_once_a_device_is_paired():
    make_device()
    out = io.StringIO()

    assert announce_pairing(stdout=out) is None
    assert out.getvalue() == ""


@pytest.mark.django_db
def test_no_announcement_when_pairing_is_not_required(settings):
    settings.CONSTRUCT_REQUIRE_PAIRING = False
    out = io.StringIO()

    assert announce_pairing(stdout=out) is None
    assert out.getvalue() == ""


def test_an_unmigrated_database_gets_a_hint_not_a_crash(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        DJANGO_SETTINGS_MODULE="construct_site.settings",
        CONSTRUCT_REQUIRE_PAIRING="true",
    )
    script = (
        "import django; django.setup()\n"
        "from construct_site.startup import announce_pairing\n"
        "print('returned', announce_pairing())\n"
    )

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "run `python manage.py migrate`" in lines[0]
    assert lines[1] == "returned None"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["daphne", "-b", "0.0.0.0", "-p", "9000", "construct_site.asgi:application"],
         "http://127.0.0.1:9000"),
        (["daphne", "--bind", "example.org", "construct_site.asgi:application"],
         "http://example.org:8000"),
        (["manage.py", "runserver", "8001"], "http://127.0.0.1:8001"),
        (["manage.py", "runserver", "--noreload", "10.1.2.3:8002"], "http://10.1.2.3:8002"),
        (["daphne", "-b", "::1", "-p", "8003", "x:y"], "http://[::1]:8003"),
        (["pytest"], "http://127.0.0.1:8000"),
    ],
)
def test_guess_base_url(argv, expected):
    assert guess_base_url(argv) == expected


def test_redact_url_hides_the_password_only():
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://user:s3cret@cache:6379/0") == "redis://user:***@cache:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_check_redis_accepts_a_live_server():
    url = os.environ.get("REDIS_URL") or services.DEFAULT_REDIS_URL
    reason = services.redis_error(url)
    if reason:
        services.missing(f"Redis at {url} is not usable: {reason}")

    check_redis(url)


def test_check_redis_names_the_variable_and_hides_the_password():
    port = services.free_port()

    with pytest.raises(ImproperlyConfigured) as failure:
        check_redis(f"redis://:hunter2secret@127.0.0.1:{port}/0")

    message = str(failure.value)
    assert message.startswith(f"REDIS_URL redis://:***@127.0.0.1:{port}/0 is unreachable: ")
    assert "hunter2secret" not in message


def test_check_redis_wrong_password_does_not_leak_it():
    url = services.DEFAULT_REDIS_URL
    reason = services.redis_error(url)
    if reason:
        services.missing(f"Redis at {url} is not usable: {reason}")
    bad = url.replace("redis://", "redis://nobody:hunter2secret@", 1)

    with pytest.raises(ImproperlyConfigured) as failure:
        check_redis(bad)

    assert "hunter2secret" not in str(failure.value)
    assert "REDIS_URL" in str(failure.value)


def test_importing_the_asgi_module_has_no_side_effects(tmp_path):
    """No Redis ping, no output, no pairing code written: the start-up waits for the server."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=f"redis://127.0.0.1:{services.free_port()}/0",  # nothing listens there
        DJANGO_SETTINGS_MODULE="construct_site.settings",
        CONSTRUCT_REQUIRE_PAIRING="true",
        CONSTRUCT_BWRAP="/nonexistent/bwrap",  # the start-up would say the shell is not offered
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env,
                   capture_output=True, check=True, timeout=120)
    script = (
        "import construct_site.asgi\n"
        "from sessions_app.models import PairingCode\n"
        "print('pairing codes:', PairingCode.objects.count())\n"
    )

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "pairing codes: 0\n"
    assert result.stderr == ""


WARM_PROBE = """
import json, sys
import django
django.setup()
from construct_site import startup
before = {m: m in sys.modules for m in ("openai", "anthropic", "rest_framework.views")}
loaded = startup.imports_warm()
after = {m: m in sys.modules for m in ("openai", "anthropic", "rest_framework.views")}
print(json.dumps({"before": before, "after": after, "loaded": loaded}))
"""


@pytest.mark.parametrize(("models", "sdks"), [
    (None, {"openai"}),  # the one model of CONSTRUCT_PROVIDER
    ('[{"id": "c", "provider": "anthropic"}, {"id": "g", "provider": "openai"}]', {"openai", "anthropic"}),
])
def test_start_up_imports_what_the_first_request_and_turn_would(tmp_path, models, sdks):
    """The views and the listed providers' SDKs are imported before the process freezes its
    start-up objects (construct_core.heap), in a fresh interpreter; an SDK no model uses is not."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "construct_site.settings",
           "CONSTRUCT_DATA_DIR": str(tmp_path), "CONSTRUCT_PROVIDER": "openai"}
    env.pop("CONSTRUCT_MODELS", None)
    if models:
        env["CONSTRUCT_MODELS"] = models
    out = subprocess.run([sys.executable, "-c", WARM_PROBE], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(seen["before"].values()), seen  # nothing imported them at Django's set-up
    assert seen["after"]["rest_framework.views"]
    assert {sdk for sdk in ("openai", "anthropic") if seen["after"][sdk]} == sdks
    assert len(seen["loaded"]) == len(sdks)
