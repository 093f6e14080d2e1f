"""What the provider calls cost, against the budgets: the gateway's daily one and each user's quotas.

Limits: the gateway's daily budget (CONSTRUCT_DAILY_BUDGET_USD, everyone's spend
together) and each user's daily and monthly budgets in USD and daily tokens (the
user's UserQuota row, else CONSTRUCT_USER_DAILY_BUDGET_USD,
CONSTRUCT_USER_MONTHLY_BUDGET_USD, CONSTRUCT_USER_DAILY_TOKENS). Days and months
are those of the gateway's time zone (CONSTRUCT_TIME_ZONE, UTC by default). From
80 % of a limit a turn starts with a warning; at 100 % new turns are refused with
BUDGET_EXCEEDED, saying which limit and when it resets.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import DecimalField, IntegerField, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from construct_core.errors import BudgetExceeded
from sessions_app import selectors
from sessions_app.models import UsageRecord, UserQuota

WARN_AT = 0.8
_MONEY = DecimalField(max_digits=14, decimal_places=8)


# --- Days and months of the gateway's time zone ------------------------------------


def day_start(now: datetime | None = None) -> datetime:
    """Midnight of the current day, in the gateway's time zone (an aware datetime)."""
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def next_day_start(now: datetime | None = None) -> datetime:
    start = day_start(now)
    # Across a daylight-saving change a day is 23 or 25 hours: normalise on the calendar.
    return timezone.make_aware(datetime.combine(start.date() + timedelta(days=1), datetime.min.time()))


def month_start(now: datetime | None = None) -> datetime:
    return day_start(now).replace(day=1)


def next_month_start(now: datetime | None = None) -> datetime:
    start = month_start(now)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return timezone.make_aware(datetime(year, month, 1))


# --- Limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One limit: how much of it is used, and when it starts again."""

    key: str  # gateway_daily_usd, daily_usd, monthly_usd, daily_tokens
    label: str
    limit: float
    used: float
    unit: str  # "usd" or "tokens"
    resets_at: datetime

    @property
    def share(self) -> float:
        """The share used (1.0 is all of it); a limit of nothing is always spent."""
        return 1.0 if self.limit <= 0 else self.used / self.limit

    @property
    def exceeded(self) -> bool:
        return self.share >= 1.0

    def amount(self, value: float, *, exact: bool = True) -> str:
        """`value` in this limit's unit: dollars to 4 places for spend, to cents for a limit."""
        if self.unit == "tokens":
            return f"{int(value):,} tokens"
        return f"${value:.4f}" if exact else f"${value:.2f}"

    def as_dict(self) -> dict:
        return {"limit": self.limit, "used": self.used, "unit": self.unit, "share": self.share,
                "resets_at": self.resets_at.isoformat()}


def _spent(records, since: datetime) -> Decimal:
    return records.filter(created_at__gte=since).aggregate(
        total=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=_MONEY)
    )["total"]


def _tokens(records, since: datetime) -> int:
    totals = records.filter(created_at__gte=since).aggregate(
        input=Coalesce(Sum("input_tokens"), Value(0), output_field=IntegerField()),
        output=Coalesce(Sum("output_tokens"), Value(0), output_field=IntegerField()),
    )
    return int(totals["input"]) + int(totals["output"])


def user_quota(user_id: int) -> tuple[float | None, float | None, int | None]:
    """(daily USD, monthly USD, daily tokens) of a user: their own, else the defaults; None: no limit."""
    quota = UserQuota.objects.filter(user_id=user_id).first()

    def pick(own, default):
        return own if own is not None else default

    return (
        _float(pick(quota and quota.daily_budget_usd, settings.CONSTRUCT_USER_DAILY_BUDGET_USD)),
        _float(pick(quota and quota.monthly_budget_usd, settings.CONSTRUCT_USER_MONTHLY_BUDGET_USD)),
        pick(quota and quota.daily_tokens, settings.CONSTRUCT_USER_DAILY_TOKENS),
    )


def _float(value) -> float | None:
    return None if value is None else float(value)


def limits(*, user_id: int | None, now: datetime | None = None) -> list[Limit]:
    """The limits that apply to a turn of this user (the gateway's only, with `user_id` None)."""
    now = now or timezone.now()
    found = []
    records = UsageRecord.objects.order_by()
    gateway = settings.CONSTRUCT_DAILY_BUDGET_USD
    if gateway is not None:
        found.append(Limit("gateway_daily_usd", "the daily budget", float(gateway),
                           float(_spent(records, day_start(now))), "usd", next_day_start(now)))
    if user_id is None:
        return found
    daily, monthly, tokens = user_quota(user_id)
    own = records.filter(user_id=user_id)
    if daily is not None:
        found.append(Limit("daily_usd", "your daily budget", daily,
                           float(_spent(own, day_start(now))), "usd", next_day_start(now)))
    if monthly is not None:
        found.append(Limit("monthly_usd", "your monthly budget", monthly,
                           float(_spent(own, month_start(now))), "usd", next_month_start(now)))
    if tokens is not None:
        found.append(Limit("daily_tokens", "your daily token limit", float(tokens),
                           float(_tokens(own, day_start(now))), "tokens", next_day_start(now)))
    return found


def _reset_text(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def budget_check(*, user_id: int | None, now: datetime | None = None) -> list[str]:
    """Warnings for limits past 80 %; raises BudgetExceeded for the first limit that is spent."""
    warnings = []
    for limit in limits(user_id=user_id, now=now):
        if limit.exceeded:
            raise BudgetExceeded(
                f"{limit.label[0].upper()}{limit.label[1:]} of {limit.amount(limit.limit, exact=False)} "
                f"is spent ({limit.amount(limit.used)} used); new messages are refused until it "
                f"resets at {_reset_text(limit.resets_at)}",
                limit=limit.key, resets_at=limit.resets_at.isoformat(),
            )
        if limit.share >= WARN_AT:
            warnings.append(f"{limit.share * 100:.0f}% of {limit.label} used "
                            f"({limit.amount(limit.used)} of {limit.amount(limit.limit, exact=False)})")
    return warnings


def cost_summary(*, user_id: int | None) -> dict:
    """GET /api/cost/: a user's tokens, requests and cost (everyone's with `user_id` None), in all,
    today, by model and by session, with the limits that apply and how much of each is used."""
    summary = selectors.usage_summary(user_id=user_id)
    applied = {limit.key: limit for limit in limits(user_id=user_id)}
    gateway = applied.get("gateway_daily_usd")
    summary["daily_budget_usd"] = gateway.limit if gateway else None
    summary["daily_budget_used"] = gateway.share if gateway else None
    summary["limits"] = {key: limit.as_dict() for key, limit in applied.items()}
    return summary
