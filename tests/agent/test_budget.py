"""The daily budget: a warning from 80 %, BUDGET_EXCEEDED from 100 %; the cost summary."""

from datetime import timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import budget
from sessions_app.models import ChatSession, Message, UsageRecord
from tests.chat.conftest import frames_until, open_socket, send
from tests.factories import make_session

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def spend(cost, *, days_ago=0, session_id=None, model="mock-model"):
    record = UsageRecord.objects.create(session_id=session_id, model=model, input_tokens=10,
                                        output_tokens=5, cost_usd=Decimal(cost))
    if days_ago:
        UsageRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(days=days_ago))


@database_sync_to_async
def messages(session_id="s1"):
    return list(Message.objects.filter(session_id=session_id).values_list("role", flat=True))


async def test_a_spent_budget_refuses_new_turns(gateway, token, mock_llm):
    gateway.CONSTRUCT_DAILY_BUDGET_USD = 1.0
    await spend("0.6")
    await spend("0.4")
    mock_llm.clear()
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="one more please", client_id="c-1")
    frames = await frames_until(comm)
    assert frames[0] == {"type": "ack", "client_id": "c-1", "duplicate": False}
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "BUDGET_EXCEEDED"
    assert "daily budget of $1.00 is spent" in error["message"]
    assert await messages() == []  # refused before the message was saved
    assert mock_llm.requests() == []
    assert (await database_sync_to_async(ChatSession.objects.get)(pk="s1")).state == "idle"

    # A raised budget lets the same message (same client_id) through.
    gateway.CONSTRUCT_DAILY_BUDGET_USD = 5.0
    await send(comm, type="message", content="one more please", client_id="c-1")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert await messages() == ["user", "assistant"]
    await comm.disconnect()


async def test_yesterdays_spending_does_not_count(gateway, token):
    gateway.CONSTRUCT_DAILY_BUDGET_USD = 1.0
    await spend("5", days_ago=1)
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hi")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert not [f for f in frames if f.get("phase") == "budget"]
    await comm.disconnect()


async def test_a_warning_from_80_percent(gateway, token):
    gateway.CONSTRUCT_DAILY_BUDGET_USD = 2.0
    await spend("1.7")
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hi")
    frames = await frames_until(comm)
    assert frames[0] == {"type": "operator_status", "phase": "budget",
                         "detail": "85% of the daily budget used ($1.7000 of $2.00)"}
    assert frames[-1]["type"] == "done"
    await comm.disconnect()


async def test_turns_spend_the_budget_until_it_refuses(gateway, token):
    gateway.CONSTRUCT_PRICES = {"mock-model": {"input": 1_000_000, "output": 1_000_000}}  # $1 a token
    gateway.CONSTRUCT_DAILY_BUDGET_USD = 1.0
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="expensive")
    done = (await frames_until(comm))[-1]
    assert done["type"] == "done" and done["usage"]["cost_usd"] > 1
    await send(comm, type="message", content="and again")
    assert (await frames_until(comm))[-1]["code"] == "BUDGET_EXCEEDED"
    await comm.disconnect()


def test_no_budget_means_no_limit(settings):
    settings.CONSTRUCT_DAILY_BUDGET_USD = None
    UsageRecord.objects.create(model="m", cost_usd=Decimal("1000"))
    assert budget.limits(user_id=None) == []
    assert budget.budget_check(user_id=None) == []


def test_a_zero_budget_refuses_everything(settings):
    settings.CONSTRUCT_DAILY_BUDGET_USD = 0.0
    with pytest.raises(budget.BudgetExceeded):
        budget.budget_check(user_id=None)


def test_today_starts_at_midnight_utc():
    from datetime import datetime, timezone as tz

    late = datetime(2026, 3, 1, 23, 30, tzinfo=tz(timedelta(hours=-5)))  # 04:30 UTC on March 2
    assert budget.day_start(late) == datetime(2026, 3, 2, tzinfo=tz.utc)


def test_cost_summary(settings):
    settings.CONSTRUCT_DAILY_BUDGET_USD = 4.0
    make_session(session_id="a")
    make_session(session_id="b")
    UsageRecord.objects.create(session_id="a", model="gpt", input_tokens=100, output_tokens=50,
                               cost_usd=Decimal("1.5"))
    UsageRecord.objects.create(session_id="b", model="claude", input_tokens=10, output_tokens=5,
                               cost_usd=Decimal("0.5"))
    old = UsageRecord.objects.create(session_id="a", model="gpt", input_tokens=1, output_tokens=1,
                                     cost_usd=Decimal("3"))
    UsageRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))

    summary = budget.cost_summary(user_id=None)
    assert (summary["total_tokens"], summary["input_tokens"], summary["output_tokens"]) == (167, 111, 56)
    assert (summary["request_count"], summary["cost_usd"]) == (3, pytest.approx(5.0))
    assert summary["today"]["cost_usd"] == pytest.approx(2.0) and summary["today"]["request_count"] == 2
    assert summary["by_model"]["gpt"]["cost_usd"] == pytest.approx(4.5)
    assert summary["by_model"]["claude"]["total_tokens"] == 15
    assert summary["by_session"]["a"]["request_count"] == 2
    assert summary["daily_budget_usd"] == 4.0
    assert summary["daily_budget_used"] == pytest.approx(0.5)
