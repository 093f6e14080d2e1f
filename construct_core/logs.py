"""What a log line knows of where it was written: the session and turn, and the JSON format.

The socket sets `session_id` for everything its task logs; a turn sets both
for everything it logs (contextvars, so a task started from there inherits
them). `ContextFilter` copies them onto each record; `JsonFormatter` writes
one JSON object per line (CONSTRUCT_LOG_FORMAT=json), redacted like the text
lines are (construct_core.redaction).
"""

import contextlib
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from construct_core.redaction import redact

LOG_FORMATS = ("text", "json")

session_id_var: ContextVar[str | None] = ContextVar("construct_session_id", default=None)
turn_id_var: ContextVar[str | None] = ContextVar("construct_turn_id", default=None)


@contextlib.contextmanager
def log_context(*, session_id: str | None = None, turn_id: str | None = None):
    """Inside it, log lines carry this session and turn (those not given are left as they are)."""
    tokens = []
    if session_id is not None:
        tokens.append((session_id_var, session_id_var.set(session_id)))
    if turn_id is not None:
        tokens.append((turn_id_var, turn_id_var.set(turn_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def log_format_parse(raw: str | None) -> str:
    """CONSTRUCT_LOG_FORMAT's value: "text" (the default) or "json"; ValueError for anything else."""
    value = (raw or "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"must be 'text' or 'json', not {raw!r}")
    return value


class ContextFilter(logging.Filter):
    """Puts the session and turn of the code that logs on each record (None where not known)."""

    def filter(self, record):
        record.session_id = session_id_var.get()
        record.turn_id = turn_id_var.get()
        return True


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per record: time, level, logger, message, session_id and turn_id when known.

    Anything a record adds (`extra=`, a traceback) comes along, redacted: the
    library formats tracebacks itself, past the RedactingFilter's `exc_text`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(self, log_data, record, message_dict):
        log_data["time"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
            timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)
        for key in ("session_id", "turn_id"):
            if log_data.get(key) is None:
                log_data.pop(key, None)

    def process_log_record(self, log_data):
        return {key: redact(value) if isinstance(value, str) else value
                for key, value in log_data.items()}
