"""Admin for operators and GMs: usage (read-only, with totals of what is listed),
budgets (changed through the services), reservations in flight (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse

from campaigns.admin import ReadOnlyAdminMixin

from . import selectors, services
from .models import CampaignBudget, ModelUsage, Reservation, UserBudget
from .selectors import usd_str


@admin.register(ModelUsage)
class ModelUsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every model and speech call with its cost; the totals under the title are those
    of the rows the filters select (all pages)."""

    change_list_template = "admin/billing/modelusage/change_list.html"
    list_display = (
        "created_at",
        "campaign_id",
        "user_id",
        "purpose",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "characters",
        "cost",
        "estimated",
    )
    list_filter = ("purpose", "provider", "model", "estimated", "created_at")
    search_fields = ("=campaign_id", "=user_id", "model", "request_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: ModelUsage) -> str:
        return usd_str(obj.cost_usd)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            totals = context["cl"].queryset.aggregate(
                calls=Count("id"),
                input=Sum("input_tokens"),
                output=Sum("output_tokens"),
                chars=Sum("characters"),
                cost=Sum("cost_usd"),
            )
            context["usage_totals"] = {
                "calls": totals["calls"] or 0,
                "input_tokens": totals["input"] or 0,
                "output_tokens": totals["output"] or 0,
                "characters": totals["chars"] or 0,
                "cost_usd": usd_str(totals["cost"]),
            }
        return response


@admin.register(CampaignBudget)
class CampaignBudgetAdmin(admin.ModelAdmin):
    list_display = ("campaign", "daily_cap_usd", "hard_stop", "spent_24h", "percent", "degraded")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name",)
    list_filter = ("hard_stop",)
    fields = ("campaign", "daily_cap_usd", "hard_stop", "warned_percent", "warned_at")
    readonly_fields = ("warned_percent", "warned_at")
    raw_id_fields = ("campaign",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("campaign", *self.readonly_fields) if obj is not None else self.readonly_fields

    def _status(self, obj: CampaignBudget) -> selectors.BudgetStatus:
        return selectors.budget_status(campaign_id=obj.campaign_id)

    @admin.display(description="spent, last 24 h (USD)")
    def spent_24h(self, obj: CampaignBudget) -> str:
        return usd_str(self._status(obj).spent_usd)

    @admin.display(description="% of cap")
    def percent(self, obj: CampaignBudget) -> float:
        return self._status(obj).percent

    @admin.display(description="degraded", boolean=True)
    def degraded(self, obj: CampaignBudget) -> bool:
        return self._status(obj).degraded

    def save_model(self, request: HttpRequest, obj: CampaignBudget, form: Any, change: Any) -> None:
        services.budget_set(
            campaign_id=obj.campaign_id, daily_cap_usd=obj.daily_cap_usd, hard_stop=obj.hard_stop
        )


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    list_display = ("user", "daily_cap_usd", "spent_24h")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    fields = ("user", "daily_cap_usd")
    raw_id_fields = ("user",)

    @admin.display(description="spent, last 24 h (USD)")
    def spent_24h(self, obj: UserBudget) -> str:
        return usd_str(selectors.user_spent(user_id=obj.user_id))

    def save_model(self, request: HttpRequest, obj: UserBudget, form: Any, change: Any) -> None:
        services.user_budget_set(user_id=obj.user_id, daily_cap_usd=obj.daily_cap_usd)


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("key", "campaign", "user_id", "purpose", "amount_usd", "expires_at")
    list_select_related = ("campaign",)
    list_filter = ("purpose",)
    ordering = ("-created_at",)
