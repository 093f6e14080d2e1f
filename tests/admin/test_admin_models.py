"""The admin shows the model of each session (a column and a filter) and of each usage row."""

import json
from decimal import Decimal

import pytest

from construct_core.model_choices import models_parse
from sessions_app.models import UsageRecord
from tests.factories import make_message, make_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_models(settings):
    settings.CONSTRUCT_MODELS = models_parse(json.dumps([
        {"id": "gpt-x", "provider": "openai", "label": "GPT X"},
        {"id": "claude-x", "provider": "anthropic", "label": "Claude X", "thinking": True},
    ]))


def _rows(html: str) -> list[str]:
    return [row for row in html.split("<tr") if "field-title" in row]


def test_the_session_list_shows_and_filters_by_model(admin_client, two_models):
    make_session(session_id="chose-claude", name="CHOSE CLAUDE", model="claude-x", message_count=1)
    make_session(session_id="chose-none", name="CHOSE NONE", message_count=1)
    make_session(session_id="chose-gone", name="CHOSE GONE", model="unlisted-now", message_count=1)
    make_session(session_id="chose-gpt", name="CHOSE GPT", model="gpt-x", message_count=1)

    page = admin_client.get("/admin/sessions_app/chatsession/").content.decode()
    rows = {row.split("field-title")[1].split("</")[0].split(">")[-1]: row for row in _rows(page)}
    assert "claude-x" in rows["CHOSE CLAUDE"]
    assert "gpt-x (default)" in rows["CHOSE NONE"] and "gpt-x (default)" in rows["CHOSE GONE"]
    assert "gpt-x" in rows["CHOSE GPT"] and "(default)" not in rows["CHOSE GPT"]
    assert "Claude X" in page  # the filter offers the listed models by label

    claude = admin_client.get("/admin/sessions_app/chatsession/", {"model": "claude-x"}).content.decode()
    assert "CHOSE CLAUDE" in claude and "CHOSE NONE" not in claude and "CHOSE GPT" not in claude
    default = admin_client.get("/admin/sessions_app/chatsession/", {"model": "gpt-x"}).content.decode()
    assert all(name in default for name in ("CHOSE NONE", "CHOSE GONE", "CHOSE GPT"))
    assert "CHOSE CLAUDE" not in default


def test_a_session_page_names_the_model_of_each_answer(admin_client, two_models):
    session = make_session(session_id="conv", model="claude-x")
    make_message(session=session, role="user", content="question")
    make_message(session=session, role="assistant", content="answer",
                 data={"model": "claude-x", "reasoning": "high",
                       "usage": {"input_tokens": 12, "output_tokens": 34, "cost_usd": 0.5}})
    page = admin_client.get("/admin/sessions_app/chatsession/conv/change/").content.decode()
    assert "claude-x, reasoning high" in page
    assert "12 in, 34 out, $0.500000" in page


def test_the_usage_list_shows_and_filters_by_model(admin_client, two_models):
    session = make_session(session_id="paid")
    for model in ("gpt-x", "claude-x"):
        UsageRecord.objects.create(session=session, user=session.user, model=model, input_tokens=1,
                                   output_tokens=1, cost_usd=Decimal("0.01"))
    page = admin_client.get("/admin/sessions_app/usagerecord/", {"model": "claude-x"}).content.decode()
    assert "claude-x" in page and page.count("field-model") == 1
