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


def test_the_console_handler_uses_the_filter_from_construct_core():
    from django.conf import settings

    assert settings.LOGGING["filters"]["redact"]["()"] == "construct_core.redaction.RedactingFilter"


def test_scrub_value_walks_keys_and_values_and_copies_nothing_clean():
    redaction.register_secret("sk-core-WALK-4c2e8a")
    clean = {"content": "plain", "path": "a.txt"}
    assert redaction.scrub_value(clean) is clean
    value = {"sk-core-WALK-4c2e8a": {"list": ["x sk-core-WALK-4c2e8a", 3, None]}, "ok": "yes"}
    assert redaction.scrub_value(value) == {
        redaction.REDACTED: {"list": [f"x {redaction.REDACTED}", 3, None]}, "ok": "yes"}


def test_scrub_fields_checks_values_only_at_the_top_and_everything_below():
    redaction.register_secret("sk-core-FIELDS-9b1d7f")
    chunk = {"content": "hello "}
    assert redaction.scrub_fields(chunk) is chunk  # the streamed-chunk fast path
    assert redaction.scrub_fields({"content": "a sk-core-FIELDS-9b1d7f", "n": 1}) == {
        "content": f"a {redaction.REDACTED}", "n": 1}
    args = {"name": "memory_store", "args": {"sk-core-FIELDS-9b1d7f": "sk-core-FIELDS-9b1d7f"}}
    assert redaction.scrub_fields(args) == {
        "name": "memory_store", "args": {redaction.REDACTED: redaction.REDACTED}}


def test_a_text_cut_inside_a_secret_keeps_no_start_of_it():
    from construct_core.redaction import scrub_cut

    redaction.register_secret("sk-cut-0123456789abcdef")
    assert scrub_cut("output ... sk-cut-0123") == "output ... [REDACTED]"
    assert scrub_cut("whole sk-cut-0123456789abcdef and sk-cut") == "whole [REDACTED] and [REDACTED]"
    assert scrub_cut("nothing secret here sk-") == "nothing secret here sk-"
