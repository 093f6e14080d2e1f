"""Per-user quotas: daily and monthly USD, daily tokens; enforced before a turn, per user.

A user past a limit gets BUDGET_EXCEEDED naming the limit and when it resets,
while another user still chats. Days and months are those of the gateway's time
zone (CONSTRUCT_TIME_ZONE), across midnight and daylight-saving changes alike.
"""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app import budget
from sessions_app.models import UsageRecord, UserQuota
from tests.chat.conftest import frames_until, open_socket, send
from tests.factories import make_device, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def spend(user, cost="0", *, at=None, input_tokens=0, output_tokens=0):
    record = UsageRecord.objects.create(user=user, model="m", cost_usd=Decimal(cost),
                                        input_tokens=input_tokens, output_tokens=output_tokens)
    if at is not None:
        UsageRecord.objects.filter(pk=record.pk).update(created_at=at)


@database_sync_to_async
def two_users_with_tokens():
    alice, bob = make_user(username="alice"), make_user(username="bob")
    return alice, make_device(user=alice)[1], bob, make_device(user=bob)[1]


async def test_a_user_over_the_daily_budget_is_refused_while_another_chats(gateway):
    alice, alice_token, _bob, bob_token = await two_users_with_tokens()
    await database_sync_to_async(UserQuota.objects.create)(user=alice, daily_budget_usd=Decimal("1"))
    await database_sync_to_async(spend)(alice, "1.5")

    comm, _ = await open_socket(alice_token, query="session_id=alice-s")
    await send(comm, type="message", content="one more")
    refused = (await frames_until(comm))[-1]
    assert refused["code"] == "BUDGET_EXCEEDED" and refused["limit"] == "daily_usd"
    assert "your daily budget of $1.00 is spent" in refused["message"].lower()
    resets = datetime.fromisoformat(refused["resets_at"])
    assert resets == budget.next_day_start()
    await comm.disconnect()

    comm, _ = await open_socket(bob_token, query="session_id=bob-s")
    await send(comm, type="message", content="still here")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_the_defaults_apply_to_users_without_a_quota_of_their_own(gateway):
    gateway.CONSTRUCT_USER_DAILY_TOKENS = 100
    alice, alice_token, bob, bob_token = await two_users_with_tokens()
    # Bob's own quota lifts his token limit; Alice has only the default.
    await database_sync_to_async(UserQuota.objects.create)(user=bob, daily_tokens=1_000_000)
    await database_sync_to_async(spend)(alice, input_tokens=80, output_tokens=30)
    await database_sync_to_async(spend)(bob, input_tokens=80, output_tokens=30)

    comm, _ = await open_socket(alice_token, query="session_id=alice-t")
    await send(comm, type="message", content="tokens")
    refused = (await frames_until(comm))[-1]
    assert (refused["code"], refused["limit"]) == ("BUDGET_EXCEEDED", "daily_tokens")
    await comm.disconnect()
    comm, _ = await open_socket(bob_token, query="session_id=bob-t")
    await send(comm, type="message", content="tokens")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_a_warning_from_80_percent_of_a_user_limit(gateway):
    alice, alice_token, _bob, _ = await two_users_with_tokens()
    await database_sync_to_async(UserQuota.objects.create)(user=alice, monthly_budget_usd=Decimal("10"))
    await database_sync_to_async(spend)(alice, "8.5")
    comm, _ = await open_socket(alice_token, query="session_id=alice-w")
    await send(comm, type="message", content="careful")
    frames = await frames_until(comm)
    assert {"type": "operator_status", "phase": "budget",
            "detail": "85% of your monthly budget used ($8.5000 of $10.00)"} in frames
    assert frames[-1]["type"] == "done"
    await comm.disconnect()


def test_the_monthly_limit_counts_the_whole_month_and_resets_on_the_first(settings):
    settings.TIME_ZONE = "UTC"
    alice = make_user()
    UserQuota.objects.create(user=alice, monthly_budget_usd=Decimal("5"))
    now = datetime(2026, 11, 20, 12, 0, tzinfo=dt_timezone.utc)
    spend(alice, "3", at=datetime(2026, 11, 2, 9, 0, tzinfo=dt_timezone.utc))
    spend(alice, "2.5", at=datetime(2026, 11, 19, 9, 0, tzinfo=dt_timezone.utc))
    spend(alice, "100", at=datetime(2026, 10, 31, 23, 0, tzinfo=dt_timezone.utc))  # last month
    with pytest.raises(budget.BudgetExceeded) as refused:
        budget.budget_check(user_id=alice.pk, now=now)
    assert refused.value.details == {"limit": "monthly_usd",
                                     "resets_at": "2026-12-01T00:00:00+00:00"}


def test_days_and_months_are_the_configured_time_zone_s(settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9
    alice = make_user()
    UserQuota.objects.create(user=alice, daily_budget_usd=Decimal("1"), monthly_budget_usd=Decimal("100"))
    # 15:30 UTC on 30 November is 00:30 on 1 December in Tokyo: a new day and a new month.
    now = datetime(2026, 11, 30, 15, 30, tzinfo=dt_timezone.utc)
    spend(alice, "5", at=datetime(2026, 11, 30, 14, 50, tzinfo=dt_timezone.utc))  # 23:50 yesterday there
    spend(alice, "0.25", at=datetime(2026, 11, 30, 15, 10, tzinfo=dt_timezone.utc))  # 00:10 today there
    daily, monthly = budget.limits(user_id=alice.pk, now=now)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert (daily.key, daily.used) == ("daily_usd", 0.25)
    assert daily.resets_at == datetime(2026, 12, 2, tzinfo=tokyo)
    assert (monthly.key, monthly.used) == ("monthly_usd", 0.25)
    assert monthly.resets_at == datetime(2027, 1, 1, tzinfo=tokyo)
    assert budget.budget_check(user_id=alice.pk, now=now) == []
    # Ten minutes earlier it was still 30 November in Tokyo: yesterday's 5 dollars counted.
    with pytest.raises(budget.BudgetExceeded) as refused:
        budget.budget_check(user_id=alice.pk, now=now - timedelta(minutes=40))
    assert refused.value.details["resets_at"] == "2026-12-01T00:00:00+09:00"


def test_a_day_across_a_daylight_saving_change_resets_at_local_midnight(settings):
    settings.TIME_ZONE = "America/New_York"
    now = datetime(2026, 3, 8, 12, 0, tzinfo=dt_timezone.utc)  # 08:00 EDT: clocks sprang at 02:00
    new_york = ZoneInfo("America/New_York")
    assert budget.day_start(now) == datetime(2026, 3, 8, tzinfo=new_york)
    assert budget.next_day_start(now) == datetime(2026, 3, 9, tzinfo=new_york)
    # Same tzinfo on both sides subtracts wall times: compare the instants.
    utc = dt_timezone.utc
    assert budget.next_day_start(now).astimezone(utc) - budget.day_start(now).astimezone(utc) \
        == timedelta(hours=23)


def test_the_cost_answer_reports_the_caller_s_spend_and_limits(settings, client):
    settings.CONSTRUCT_USER_DAILY_BUDGET_USD = 2.0
    alice, bob = make_user(), make_user()
    spend(alice, "0.5", input_tokens=10, output_tokens=5)
    spend(bob, "9")
    _device, token = make_device(user=alice)
    body = client.get("/api/cost/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["cost_usd"] == pytest.approx(0.5) and body["total_tokens"] == 15
    limit = body["limits"]["daily_usd"]
    assert (limit["limit"], limit["used"], limit["unit"]) == (2.0, 0.5, "usd")
    assert limit["share"] == pytest.approx(0.25)
    assert datetime.fromisoformat(limit["resets_at"]) == budget.next_day_start(timezone.now())


def test_the_cost_answer_s_today_is_the_configured_time_zone_s(settings, client):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: its day starts 14 hours before UTC's
    alice = make_user()
    local_midnight = budget.day_start()
    spend(alice, "1", at=local_midnight + timedelta(minutes=1))
    spend(alice, "2", at=local_midnight - timedelta(minutes=1))
    _device, token = make_device(user=alice)
    body = client.get("/api/cost/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["today"]["cost_usd"] == pytest.approx(1.0) and body["cost_usd"] == pytest.approx(3.0)
