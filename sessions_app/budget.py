"""What the provider calls cost, against the optional daily budget (CONSTRUCT_DAILY_BUDGET_USD).

A day is a UTC day. At 80 % of the budget a turn starts with a warning; at 100 %
new turns are refused with BUDGET_EXCEEDED until the next UTC day.
"""

from dataclasses import dataclass
from datetime import datetime, time, timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import DecimalField, Sum, Value
from django.db.models.functions import Coalesce

from construct_core.errors import BudgetExceeded
from sessions_app import selectors
from sessions_app.models import UsageRecord

WARN_AT = 0.8


def today_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of the current day."""
    now = now or datetime.now(timezone.utc)
    return datetime.combine(now.astimezone(timezone.utc).date(), time.min, tzinfo=timezone.utc)


def spent_today() -> Decimal:
    total = UsageRecord.objects.filter(created_at__gte=today_start()).aggregate(
        total=Coalesce(Sum("cost_usd"), Value(Decimal(0)),
                       output_field=DecimalField(max_digits=14, decimal_places=8))
    )["total"]
    return Decimal(total)


@dataclass(frozen=True)
class BudgetStatus:
    limit_usd: float | None
    spent_usd: float

    @property
    def used(self) -> float | None:
        """The share of today's budget spent (1.0 is all of it); None without a budget."""
        if self.limit_usd is None:
            return None
        if self.limit_usd <= 0:
            return 1.0  # a budget of nothing is always spent
        return self.spent_usd / self.limit_usd

    @property
    def exceeded(self) -> bool:
        return self.used is not None and self.used >= 1.0

    @property
    def warning(self) -> str | None:
        """A line for the operator once 80 % is spent, else None."""
        if self.used is None or self.used < WARN_AT:
            return None
        return (f"{self.used * 100:.0f}% of the daily budget used "
                f"(${self.spent_usd:.4f} of ${self.limit_usd:.2f})")


def budget_status() -> BudgetStatus:
    limit = settings.CONSTRUCT_DAILY_BUDGET_USD
    if limit is None:
        return BudgetStatus(None, 0.0)
    return BudgetStatus(float(limit), float(spent_today()))


def budget_check() -> BudgetStatus:
    """Today's status; raises BudgetExceeded once the daily budget is spent."""
    status = budget_status()
    if status.exceeded:
        raise BudgetExceeded(
            f"The daily budget of ${status.limit_usd:.2f} is spent (${status.spent_usd:.4f} today); "
            "new messages are refused until midnight UTC"
        )
    return status


def cost_summary() -> dict:
    """GET /api/cost/: tokens, requests and cost in all, today (UTC), by model and by session,
    with the daily budget and the share of it spent today (`daily_budget_used`, 0.5 is half)."""
    summary = selectors.usage_summary()
    status = budget_status()
    summary["daily_budget_usd"] = status.limit_usd
    summary["daily_budget_used"] = status.used
    return summary
