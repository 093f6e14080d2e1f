"""The JSON log format (construct_core.logs): its fields, the turn's ids, and redaction."""

import io
import json
import logging

import pytest

from construct_core.logs import ContextFilter, JsonFormatter, log_context, log_format_parse
from construct_core.redaction import RedactingFilter, register_secret

KEY = "sk-logs-UNIT-9f8e7d6c5b4a"


@pytest.fixture
def logged():
    """A logger wired as settings.LOGGING wires the console in json mode; its lines, parsed."""
    register_secret(KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.core.json_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_fields_and_the_ids_where_known(logged):
    logger, lines = logged
    logger.info("outside %s", "any turn")
    with log_context(session_id="s1"):
        logger.warning("on a socket")
        with log_context(turn_id="t1"):
            logger.info("in a turn", extra={"outcome": "done"})
        logger.info("after the turn")
    outside, socket, turn, after = lines()
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert outside["message"] == "outside any turn" and outside["level"] == "INFO"
    assert outside["logger"] == "tests.core.json_logs"
    assert outside["time"].endswith("+00:00")
    assert (socket["level"], socket["session_id"]) == ("WARNING", "s1") and "turn_id" not in socket
    assert (turn["session_id"], turn["turn_id"], turn["outcome"]) == ("s1", "t1", "done")
    assert after["session_id"] == "s1" and "turn_id" not in after


def test_secrets_are_redacted_in_the_message_the_extras_and_the_traceback(logged):
    logger, lines = logged
    try:
        raise RuntimeError(f"provider said {KEY}")
    except RuntimeError:
        logger.exception("failed with %s", KEY, extra={"detail": f"key={KEY}"})
    [line] = lines()
    assert KEY not in json.dumps(line)
    assert "[REDACTED]" in line["message"] and "[REDACTED]" in line["exc_info"]
    assert "RuntimeError" in line["exc_info"]


@pytest.mark.parametrize("raw, parsed", [(None, "text"), ("", "text"), ("json", "json"),
                                         (" JSON ", "json"), ("text", "text")])
def test_log_format_values(raw, parsed):
    assert log_format_parse(raw) == parsed


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="'yaml'"):
        log_format_parse("yaml")
