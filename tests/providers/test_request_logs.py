"""A provider call writes no log line of its own: the SDKs' HTTP client (httpx2 in the
versions pinned) logs every request at INFO ("HTTP Request: POST ... 200 OK"), one
line per model round and per title, through the redacting filter, on the loop's
thread. The settings keep that client at WARNING, under whichever name it logs.
"""

import logging

import pytest

from tests.providers.helpers import collect, make_provider

pytestmark = pytest.mark.asyncio

CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")


def _client_records(records):
    return [r for r in records if r.name.split(".")[0] in CLIENT_LOGGERS and r.levelno < logging.WARNING]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_provider_call_logs_no_request_line(kind, mock_llm, caplog):
    assert logging.getLogger().isEnabledFor(logging.INFO)  # the gateway's own INFO lines are kept
    events = await collect(make_provider(kind, mock_llm), "hello")
    assert events, "the call answered"
    assert _client_records(caplog.records) == []


async def test_a_failed_call_still_logs_nothing_below_warning(mock_llm, caplog):
    provider = make_provider("openai", mock_llm)
    with pytest.raises(Exception):
        await collect(provider, "[[fail=500]]")
    assert _client_records(caplog.records) == []
