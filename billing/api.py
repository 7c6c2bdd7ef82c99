"""The GM's view of spend (CONTRACTS §4): `GET /api/campaigns/<id>/usage` and
`GET, PUT /api/campaigns/<id>/budget`. Money is a decimal string in USD."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api import _valid, membership_required
from campaigns.selectors import budget_stop_get

from . import selectors, services
from .selectors import usd_str

USAGE_DAYS_DEFAULT = 30
USAGE_DAYS_MAX = 366
SUM_KEYS = ("calls", "input_tokens", "output_tokens", "characters", "cost_usd")

_SUMS = {
    "calls": serializers.IntegerField(),
    "input_tokens": serializers.IntegerField(),
    "output_tokens": serializers.IntegerField(),
    "characters": serializers.IntegerField(),
    "cost_usd": serializers.CharField(help_text='USD as a decimal string, e.g. "0.0123"'),
}

BudgetOutput = inline_serializer(
    "Budget",
    {
        "campaign_id": serializers.UUIDField(),
        "daily_cap_usd": serializers.CharField(),
        "hard_stop": serializers.BooleanField(),
        "window_hours": serializers.IntegerField(),
        "spent_usd": serializers.CharField(help_text="settled in the last 24 hours"),
        "reserved_usd": serializers.CharField(help_text="held for calls in flight"),
        "remaining_usd": serializers.CharField(),
        "percent": serializers.FloatField(help_text="spent_usd of daily_cap_usd, in percent"),
        "degraded": serializers.BooleanField(),
        "warn_at_percent": serializers.ListField(child=serializers.IntegerField()),
        # The GM's meter in whole cents (rounded half up), beside the exact figures.
        "spent_today_cents": serializers.IntegerField(help_text="spent_usd in cents"),
        "reserved_cents": serializers.IntegerField(help_text="reserved_usd in cents"),
        "daily_cap_cents": serializers.IntegerField(help_text="daily_cap_usd in cents"),
        "remaining_cents": serializers.IntegerField(help_text="remaining_usd in cents"),
        "dm_stopped": serializers.BooleanField(
            help_text="the DM stopped for budget and nothing has answered since: a raise "
            "that makes room (or hard_stop off) resumes it (`turn_reopened`)"
        ),
        "stopped_by": serializers.ChoiceField(
            choices=["campaign", "user"],
            allow_null=True,
            help_text="whose cap stopped the DM: this campaign's, or a player's own "
            "allowance (only staff change that)",
        ),
    },
)

UsageOutput = inline_serializer(
    "Usage",
    {
        "campaign_id": serializers.UUIDField(),
        "days": serializers.IntegerField(),
        "since": serializers.DateTimeField(),
        "budget": BudgetOutput,
        "total": inline_serializer("UsageTotal", _SUMS),
        "by_day": inline_serializer(
            "UsageDay",
            {
                "day": serializers.DateField(),
                **_SUMS,
                "items": inline_serializer(
                    "UsageItem",
                    {
                        "provider": serializers.CharField(),
                        "model": serializers.CharField(),
                        "purpose": serializers.CharField(),
                        **_SUMS,
                    },
                    many=True,
                ),
            },
            many=True,
        ),
        "by_user": inline_serializer(
            "UsageUser", {"user_id": serializers.UUIDField(allow_null=True), **_SUMS}, many=True
        ),
    },
)


def _sums(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "calls": row["calls"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "characters": row["characters"],
        "cost_usd": usd_str(row["cost_usd"]),
    }


def cents(value: Decimal) -> int:
    """USD as whole cents for a meter, rounded half up (the exact figure stays beside it)."""
    return int((Decimal(value) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def budget_data(campaign_id: uuid.UUID | str) -> dict[str, Any]:
    status = selectors.budget_status(campaign_id=campaign_id)
    stop = budget_stop_get(campaign_id=campaign_id)
    return {
        "campaign_id": str(campaign_id),
        "daily_cap_usd": usd_str(status.daily_cap_usd),
        "hard_stop": status.hard_stop,
        "window_hours": selectors.WINDOW_HOURS,
        "spent_usd": usd_str(status.spent_usd),
        "reserved_usd": usd_str(status.reserved_usd),
        "remaining_usd": usd_str(status.remaining_usd),
        "percent": status.percent,
        "degraded": status.degraded,
        "warn_at_percent": list(settings.BILLING_WARN_AT_PERCENT),
        "spent_today_cents": cents(status.spent_usd),
        "reserved_cents": cents(status.reserved_usd),
        "daily_cap_cents": cents(status.daily_cap_usd),
        "remaining_cents": cents(status.remaining_usd),
        "dm_stopped": stop is not None,
        "stopped_by": stop.scope if stop is not None else None,
    }


class UsageApi(APIView):
    """Spend and tokens by UTC day, then by provider, model and purpose; and per user."""

    class FilterSerializer(serializers.Serializer):
        days = serializers.IntegerField(
            min_value=1, max_value=USAGE_DAYS_MAX, default=USAGE_DAYS_DEFAULT
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "days", int, description=f"the last N days, today included (1..{USAGE_DAYS_MAX})"
            )
        ],
        responses={200: UsageOutput},
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        days: int = query.validated_data["days"]

        by_day: dict[date, dict[str, Any]] = {}
        for row in selectors.usage_by_day(campaign_id=campaign_id, days=days):
            day = by_day.setdefault(
                row["day"],
                {"day": row["day"].isoformat(), **dict.fromkeys(SUM_KEYS, 0), "items": []},
            )
            for key in SUM_KEYS:
                day[key] += row[key]
            item = {"provider": row["provider"], "model": row["model"], "purpose": row["purpose"]}
            day["items"].append({**item, **_sums(dict(row))})
        days_out = [{**day, "cost_usd": usd_str(day["cost_usd"])} for day in by_day.values()]
        since: datetime = selectors.days_start(days)
        return Response(
            {
                "campaign_id": str(campaign_id),
                "days": days,
                "since": since.isoformat().replace("+00:00", "Z"),
                "budget": budget_data(campaign_id),
                "total": _sums(selectors.usage_totals(campaign_id=campaign_id, days=days)),
                "by_day": days_out,
                "by_user": [
                    {"user_id": str(r["user_id"]) if r["user_id"] else None, **_sums(r)}
                    for r in selectors.usage_by_user(campaign_id=campaign_id, days=days)
                ],
            }
        )


class BudgetApi(APIView):
    """The campaign's daily cap (rolling 24 hours) and hard stop, with what is spent."""

    class InputSerializer(serializers.Serializer):
        daily_cap_usd = serializers.DecimalField(
            max_digits=10,
            decimal_places=4,
            min_value=0,
            max_value=services.CAP_MAX_USD,
            required=False,
            help_text='USD, a decimal string such as "2.50"; at most the server\'s '
            "BILLING_MAX_DAILY_CAP_USD (above it: 400 `cap_too_high`)",
        )
        hard_stop = serializers.BooleanField(required=False)

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            if not data:
                raise serializers.ValidationError("give daily_cap_usd, hard_stop, or both")
            return data

    @extend_schema(responses={200: BudgetOutput})
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        return Response(budget_data(campaign_id))

    @extend_schema(request=InputSerializer, responses={200: BudgetOutput})
    def put(self, request: Request, campaign_id: uuid.UUID) -> Response:
        """Change the cap and/or hard stop. When the DM had stopped for budget and the
        change makes room, the DM resumes: `turn_reopened`, then one turn answers what
        was waiting (sending the same change again resumes nothing more)."""
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        services.budget_set(
            campaign_id=campaign_id,
            daily_cap_usd=data.get("daily_cap_usd"),
            hard_stop=data.get("hard_stop"),
        )
        return Response(budget_data(campaign_id))
