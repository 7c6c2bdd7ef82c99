"""The GM admin (`/gm/`, rpgai/gm_site.py) for money: each campaign's daily cap and hard
stop (written by `budget_set`, never as an operator: the server's ceiling holds), and its
usage with a chart of spend by day and the exact figures. Only the user's own campaigns
(`GmScopedAdmin`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from campaigns.gm_admin import GmCampaignAdmin, gm_url
from campaigns.models import Campaign
from rpgai.gm_site import GmCampaignFilter, GmScopedAdmin, gm_campaigns, gm_site, service_call

from . import selectors, services
from .admin import CampaignBudgetAdmin, ModelUsageAdmin, _remaining, spend_annotations
from .models import CampaignBudget, ModelUsage
from .selectors import usd_str

CHART_DAYS = 30
CHART_WIDTH = 600
CHART_HEIGHT = 120
ZERO = Decimal(0)


# --- Budgets -------------------------------------------------------------------------------------


class GmCampaignBudgetAdmin(GmScopedAdmin, CampaignBudgetAdmin):
    """The campaign's cap on spend over the last 24 hours. A GM is never the operator
    here (not even a staff GM): a cap above BILLING_MAX_DAILY_CAP_USD is refused."""

    gm_label = "Budgets"
    gm_can_add = True
    gm_can_change = True
    autocomplete_fields = ("campaign",)
    list_display = (
        "campaign",
        "daily_cap_usd",
        "hard_stop",
        "spent_24h",
        "percent",
        "degraded",
        "usage",
    )
    list_filter = (GmCampaignFilter, "hard_stop")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        ceiling = usd_str(selectors.max_daily_cap())
        form = type(form.__name__, (form,), {"operator": False})
        if "daily_cap_usd" in form.base_fields:
            form.base_fields["daily_cap_usd"].help_text = (
                f"USD over any 24 hours; at most ${ceiling} on this server. Raising it lets "
                "a DM stopped by the cap go on."
            )
        if "hard_stop" in form.base_fields:
            form.base_fields["hard_stop"].help_text = (
                "On: the DM stops at the cap. Off: past the cap the campaign runs on a "
                "cheaper setup and you are warned."
            )
        return form

    @admin.display(description="usage")
    def usage(self, obj: CampaignBudget) -> str:
        url = gm_url(self.admin_site, "billing_modelusage_changelist", campaign=obj.campaign_id)
        return format_html('<a href="{}">Usage and chart</a>', url)

    def save_model(self, request: HttpRequest, obj: CampaignBudget, form: Any, change: Any) -> None:
        with service_call():
            services.budget_set(
                campaign_id=obj.campaign_id,
                daily_cap_usd=obj.daily_cap_usd,
                hard_stop=obj.hard_stop,
                by_operator=False,
            )


# --- Usage, with spend by day ---------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    day: date
    calls: int
    input_tokens: int
    output_tokens: int
    characters: int
    cost_usd: Decimal


def spend_by_day(campaign_ids: list[str], days: int = CHART_DAYS) -> list[Day]:
    """Every UTC day of the last `days` (today included, empty days too) with the sums of
    the campaigns' usage, from `selectors.usage_by_day`."""
    sums: dict[date, dict[str, Any]] = {}
    for campaign_id in campaign_ids:
        for row in selectors.usage_by_day(campaign_id=campaign_id, days=days):
            day = sums.setdefault(
                row["day"],
                {"calls": 0, "input_tokens": 0, "output_tokens": 0, "characters": 0, "cost": ZERO},
            )
            day["calls"] += row["calls"]
            day["input_tokens"] += row["input_tokens"]
            day["output_tokens"] += row["output_tokens"]
            day["characters"] += row["characters"]
            day["cost"] += row["cost_usd"]
    first = selectors.days_start(days).date()
    out: list[Day] = []
    for n in range(days):
        when = first + timedelta(days=n)
        day = sums.get(when, {})
        out.append(
            Day(
                day=when,
                calls=day.get("calls", 0),
                input_tokens=day.get("input_tokens", 0),
                output_tokens=day.get("output_tokens", 0),
                characters=day.get("characters", 0),
                cost_usd=day.get("cost", ZERO),
            )
        )
    return out


def chart_bars(days: list[Day]) -> dict[str, Any]:
    """An inline SVG bar chart's geometry: one bar per day, its height the day's spend."""
    top = max((d.cost_usd for d in days), default=ZERO)
    step = CHART_WIDTH / max(len(days), 1)
    bars = []
    for n, day in enumerate(days):
        height = float(day.cost_usd / top * CHART_HEIGHT) if top > 0 else 0.0
        if day.cost_usd > 0:
            height = max(height, 1.0)  # a cent-less day still shows
        bars.append(
            {
                "x": round(n * step + 1, 2),
                "y": round(CHART_HEIGHT - height, 2),
                "width": round(max(step - 2, 1), 2),
                "height": round(height, 2),
                "day": day.day.isoformat(),
                "cost": usd_str(day.cost_usd),
                "calls": day.calls,
            }
        )
    return {
        "bars": bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "top": usd_str(top),
        "first": days[0].day.isoformat() if days else "",
        "last": days[-1].day.isoformat() if days else "",
    }


class GmModelUsageAdmin(GmScopedAdmin, ModelUsageAdmin):
    """Every model and speech call of the user's campaigns, with the exact cost; above the
    list, the budget of the campaign chosen and its spend by day."""

    gm_label = "Usage and spend"
    campaign_field = "campaign_id"
    change_list_template = "gm_admin/billing/modelusage/change_list.html"
    list_display = (
        "created_at",
        "campaign_name",
        "purpose",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "characters",
        "cost",
        "estimated",
    )
    list_filter = (GmCampaignFilter, "purpose", "model", "estimated", "created_at")
    search_fields = ("model", "request_id")
    fields = (*list_display, "turn_id", "request_id")
    readonly_fields = fields

    @admin.display(description="campaign")
    def campaign_name(self, obj: ModelUsage) -> str:
        return str(getattr(obj, "_campaign_name", "") or obj.campaign_id)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        obj._campaign_name = gm_campaigns(request).get(str(obj.campaign_id), "")
        return obj

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if not context or "cl" not in context:
            return response
        names = gm_campaigns(request)
        for usage in context["cl"].result_list:
            usage._campaign_name = names.get(str(usage.campaign_id), "")
        chosen = request.GET.get("campaign", "")
        campaign_ids = [chosen] if chosen in names else sorted(names)
        days = spend_by_day(campaign_ids)
        context["spend_chart"] = chart_bars(days)
        context["spend_days"] = [
            {**d.__dict__, "cost_usd": usd_str(d.cost_usd)} for d in reversed(days) if d.calls
        ]
        context["spend_total"] = usd_str(sum((d.cost_usd for d in days), ZERO))
        context["spend_scope"] = names.get(chosen, "all your campaigns")
        context["chart_days"] = CHART_DAYS
        if chosen in names:
            status = selectors.budget_status(campaign_id=chosen)
            has_row = CampaignBudget.objects.filter(campaign_id=chosen).exists()
            context["budget"] = {
                "campaign": names[chosen],
                "daily_cap_usd": usd_str(status.daily_cap_usd),
                "hard_stop": status.hard_stop,
                "spent_usd": usd_str(status.spent_usd),
                "reserved_usd": usd_str(status.reserved_usd),
                "remaining_usd": usd_str(status.remaining_usd),
                "percent": status.percent,
                "degraded": status.degraded,
                "window_hours": selectors.WINDOW_HOURS,
                "url": gm_url(self.admin_site, "billing_campaignbudget_change", chosen)
                if has_row
                else gm_url(self.admin_site, "billing_campaignbudget_add", campaign=chosen),
            }
        return response


# --- The campaign list, with each campaign's spend and cap ------------------------------------


class GmCampaignSpendAdmin(GmCampaignAdmin):
    """The GM's campaign list with today's spend and the cap beside each campaign."""

    list_display = (*GmCampaignAdmin.list_display, "spent_24h", "daily_cap", "left_today")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return super().get_queryset(request).annotate(**spend_annotations())

    @admin.display(description="spent, last 24 h (USD)", ordering="_spent_24h")
    def spent_24h(self, obj: Campaign) -> str:
        url = gm_url(self.admin_site, "billing_modelusage_changelist", campaign=obj.pk)
        return format_html('<a href="{}">{}</a>', url, usd_str(getattr(obj, "_spent_24h", 0)))

    @admin.display(description="daily cap (USD)", ordering="_cap")
    def daily_cap(self, obj: Campaign) -> str:
        cap = usd_str(getattr(obj, "_cap", 0))
        if getattr(obj, "_has_budget", False):
            url = gm_url(self.admin_site, "billing_campaignbudget_change", obj.pk)
            return format_html('<a href="{}">{}</a>', url, cap)
        url = gm_url(self.admin_site, "billing_campaignbudget_add", campaign=obj.pk)
        return format_html('<a href="{}">{}</a> <small>(default)</small>', url, cap)

    @admin.display(description="left today (USD)")
    def left_today(self, obj: Campaign) -> str:
        return usd_str(_remaining(obj))


gm_site.register(CampaignBudget, GmCampaignBudgetAdmin)
gm_site.register(ModelUsage, GmModelUsageAdmin)
gm_site.unregister(Campaign)
gm_site.register(Campaign, GmCampaignSpendAdmin)
