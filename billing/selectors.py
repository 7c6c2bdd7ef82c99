"""Reads of billing: spend in the rolling window, budget status, usage reports."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import CampaignBudget, ModelUsage, Reservation, UserBudget

WINDOW_HOURS = 24
ZERO = Decimal(0)


def usd_str(value: Decimal | int | None) -> str:
    """Money as CONTRACTS wants it: a decimal string in USD, exact (up to the stored 10
    places) and with at least 2 decimals: "1.00", "0.0009", "0.00012345"."""
    amount = Decimal(value or 0).quantize(Decimal("0.0000000001"))
    text = format(amount, "f").rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def window_start(now: datetime | None = None) -> datetime:
    """The rolling window: spend counts for 24 hours after it was recorded."""
    return (now or timezone.now()) - timedelta(hours=WINDOW_HOURS)


def _total(queryset: QuerySet[Any], field: str) -> Decimal:
    return queryset.aggregate(total=Sum(field))["total"] or ZERO


def campaign_spent(*, campaign_id: uuid.UUID | str, now: datetime | None = None) -> Decimal:
    return _total(
        ModelUsage.objects.filter(campaign_id=campaign_id, created_at__gt=window_start(now)),
        "cost_usd",
    )


def campaign_reserved(*, campaign_id: uuid.UUID | str, now: datetime | None = None) -> Decimal:
    return _total(
        Reservation.objects.filter(campaign_id=campaign_id, expires_at__gt=now or timezone.now()),
        "amount_usd",
    )


def user_spent(*, user_id: uuid.UUID | str, now: datetime | None = None) -> Decimal:
    return _total(
        ModelUsage.objects.filter(user_id=user_id, created_at__gt=window_start(now)), "cost_usd"
    )


def user_reserved(*, user_id: uuid.UUID | str, now: datetime | None = None) -> Decimal:
    return _total(
        Reservation.objects.filter(user_id=user_id, expires_at__gt=now or timezone.now()),
        "amount_usd",
    )


@dataclass(frozen=True)
class SpendTotals:
    campaign_spent: Decimal
    campaign_reserved: Decimal
    user_spent: Decimal
    user_reserved: Decimal


def spend_totals(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str | None, now: datetime
) -> SpendTotals:
    """What the four selectors above give for a campaign and a user, in two queries (one
    per table): a reservation checks both caps, and its queries come before every model
    call (issue 17: the CPU before the call bounds the turns a process keeps in flight)."""
    if user_id is None:
        return SpendTotals(
            campaign_spent(campaign_id=campaign_id, now=now),
            campaign_reserved(campaign_id=campaign_id, now=now),
            ZERO,
            ZERO,
        )
    ours, theirs = Q(campaign_id=campaign_id), Q(user_id=user_id)
    spent = ModelUsage.objects.filter(ours | theirs, created_at__gt=window_start(now)).aggregate(
        campaign=Sum("cost_usd", filter=ours), user=Sum("cost_usd", filter=theirs)
    )
    held = Reservation.objects.filter(ours | theirs, expires_at__gt=now).aggregate(
        campaign=Sum("amount_usd", filter=ours), user=Sum("amount_usd", filter=theirs)
    )
    return SpendTotals(
        spent["campaign"] or ZERO,
        held["campaign"] or ZERO,
        spent["user"] or ZERO,
        held["user"] or ZERO,
    )


def user_cap_default() -> Decimal | None:
    """The BILLING_USER_DAILY_CAP_USD setting: every user's cap unless their own is set."""
    default = str(settings.BILLING_USER_DAILY_CAP_USD or "").strip()
    return Decimal(default) if default else None


def user_cap(*, user_id: uuid.UUID | str | None) -> Decimal | None:
    """The user's own daily cap, else the BILLING_USER_DAILY_CAP_USD setting, else None."""
    if user_id is None:
        return None
    own = UserBudget.objects.filter(user_id=user_id).values_list("daily_cap_usd", flat=True)
    for cap in own:
        if cap is not None:
            return cap
    return user_cap_default()


# --- Budget status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    campaign_id: str
    daily_cap_usd: Decimal
    hard_stop: bool
    spent_usd: Decimal  # settled in the last 24 hours
    reserved_usd: Decimal  # set aside for calls in flight

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.daily_cap_usd - self.spent_usd - self.reserved_usd, ZERO)

    @property
    def percent(self) -> float:
        """Settled spend as a percentage of the cap (a cap of 0 is always 100% used)."""
        if self.daily_cap_usd <= 0:
            return 100.0
        return round(float(self.spent_usd / self.daily_cap_usd * 100), 2)

    @property
    def degraded(self) -> bool:
        """Without hard stop, past BILLING_DEGRADE_AT_PERCENT the campaign runs degraded."""
        return not self.hard_stop and self.percent >= settings.BILLING_DEGRADE_AT_PERCENT


def budget_defaults() -> tuple[Decimal, bool]:
    return Decimal(str(settings.BILLING_DEFAULT_DAILY_CAP_USD)), bool(
        settings.BILLING_DEFAULT_HARD_STOP
    )


def max_daily_cap() -> Decimal:
    """The most a GM may set as a campaign's daily cap (BILLING_MAX_DAILY_CAP_USD)."""
    return Decimal(str(settings.BILLING_MAX_DAILY_CAP_USD).strip())


def budget_status(*, campaign_id: uuid.UUID | str, now: datetime | None = None) -> BudgetStatus:
    now = now or timezone.now()
    budget = CampaignBudget.objects.filter(campaign_id=campaign_id).first()
    cap, hard_stop = (
        (budget.daily_cap_usd, budget.hard_stop) if budget is not None else budget_defaults()
    )
    return BudgetStatus(
        campaign_id=str(campaign_id),
        daily_cap_usd=cap,
        hard_stop=hard_stop,
        spent_usd=campaign_spent(campaign_id=campaign_id, now=now),
        reserved_usd=campaign_reserved(campaign_id=campaign_id, now=now),
    )


@dataclass(frozen=True)
class Degradation:
    """How a campaign past its cap (without hard stop) saves money, as configured by the
    BILLING_DEGRADE_* settings. Not `active`: everything as usual."""

    active: bool
    provider: str = ""  # the cheaper model's provider ("" = the campaign's own)
    model: str = ""  # the cheaper model ("" = keep the campaign's model)
    summary_factor: float = 1.0  # multiply a summary's token budget by this
    voice_off: bool = False


def budget_degradation(*, campaign_id: uuid.UUID | str) -> Degradation:
    if not budget_status(campaign_id=campaign_id).degraded:
        return Degradation(active=False)
    return Degradation(
        active=True,
        provider=settings.BILLING_DEGRADE_PROVIDER,
        model=settings.BILLING_DEGRADE_MODEL,
        summary_factor=float(settings.BILLING_DEGRADE_SUMMARY_FACTOR),
        voice_off=bool(settings.BILLING_DEGRADE_VOICE_OFF),
    )


def budget_model_choice(
    *, campaign_id: uuid.UUID | str, provider: str, model: str
) -> tuple[str, str]:
    """The provider and model a turn should use: the campaign's own, or the cheaper one
    configured for degrading once the campaign is past its cap without hard stop."""
    if not (settings.BILLING_DEGRADE_PROVIDER or settings.BILLING_DEGRADE_MODEL):
        return provider, model  # no cheaper model configured: no need to read the budget
    degradation = budget_degradation(campaign_id=campaign_id)
    if not degradation.active or not (degradation.provider or degradation.model):
        return provider, model
    return degradation.provider or provider, degradation.model or model


# --- Reports ----------------------------------------------------------------------------------


# Aggregates named apart from the model's fields (an annotation may not shadow a field).
_SUMS = {
    "n_calls": Count("id"),
    "n_input": Sum("input_tokens"),
    "n_output": Sum("output_tokens"),
    "n_characters": Sum("characters"),
    "cost": Sum("cost_usd"),
}


def _sums_of(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "calls": row["n_calls"] or 0,
        "input_tokens": row["n_input"] or 0,
        "output_tokens": row["n_output"] or 0,
        "characters": row["n_characters"] or 0,
        "cost_usd": row["cost"] or ZERO,
    }


class UsageRow(TypedDict):
    day: date
    campaign_id: uuid.UUID | None
    provider: str
    model: str
    purpose: str
    calls: int
    input_tokens: int
    output_tokens: int
    characters: int
    cost_usd: Decimal


def days_start(days: int, now: datetime | None = None) -> datetime:
    """00:00 UTC of the first of the last `days` days (today included)."""
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def usage_by_day(
    *,
    campaign_id: uuid.UUID | str | None = None,
    days: int = 30,
    now: datetime | None = None,
) -> list[UsageRow]:
    """Usage per UTC day, campaign, provider, model and purpose over the last `days`
    days (today included), oldest day first; one campaign, or all of them."""
    usage = ModelUsage.objects.filter(created_at__gte=days_start(days, now))
    if campaign_id is not None:
        usage = usage.filter(campaign_id=campaign_id)
    rows = (
        usage.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "campaign_id", "provider", "model", "purpose")
        .annotate(**_SUMS)
        .order_by("day", "campaign_id", "-cost", "provider", "model", "purpose")
    )
    return [
        UsageRow(
            day=row["day"],
            campaign_id=row["campaign_id"],
            provider=row["provider"],
            model=row["model"],
            purpose=row["purpose"],
            **_sums_of(row),  # type: ignore[typeddict-item]
        )
        for row in rows
    ]


def usage_by_user(
    *, campaign_id: uuid.UUID | str, days: int = 30, now: datetime | None = None
) -> list[dict[str, Any]]:
    """A campaign's usage per user (the player whose action the call answered; None for
    calls no player asked for, such as speech) over the last `days` days."""
    rows = (
        ModelUsage.objects.filter(campaign_id=campaign_id, created_at__gte=days_start(days, now))
        .values("user_id")
        .annotate(**_SUMS)
        .order_by("-cost", "user_id")
    )
    return [{"user_id": row["user_id"], **_sums_of(row)} for row in rows]


def usage_totals(
    *, campaign_id: uuid.UUID | str | None = None, days: int = 30, now: datetime | None = None
) -> dict[str, Any]:
    usage = ModelUsage.objects.filter(created_at__gte=days_start(days, now))
    if campaign_id is not None:
        usage = usage.filter(campaign_id=campaign_id)
    return _sums_of(usage.aggregate(**_SUMS))
