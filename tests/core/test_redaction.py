"""construct_core.redaction: the bottom layer, usable with no Django at all."""

import subprocess
import sys
from pathlib import Path

from construct_core import redaction

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_redaction_imports_no_django():
    probe = (
        "import sys, construct_core.redaction as r; "
        "r.register_secret('sk-probe-0123456789'); "
        "assert r.scrub('a sk-probe-0123456789') == 'a ' + r.REDACTED; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'channels'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_chat_errors_names_are_the_same_objects():
    from chat import errors

    for name in ("register_secret", "redact", "scrub", "scrub_value", "sanitize", "RedactingFilter",
                 "REDACTED"):
        assert getattr(errors, name) is getattr(redaction, name), name


def test_the_console_handler_uses_the_filter_from_construct_core():
    from django.conf import settings

    assert settings.LOGGING["filters"]["redact"]["()"] == "construct_core.redaction.RedactingFilter"
