"""Admin for operators and GMs: usage (read-only, with totals of what is listed),
budgets (changed through the services), reservations in flight (read-only), and the
campaign list with each campaign's spend and budget beside its event count.

`campaigns` imports no other app of ours (DESIGN.md), so the spend columns of the
campaign list are added here: billing re-registers the campaign admin as a subclass.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import (
    BooleanField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from campaigns.admin import CampaignAdmin, ReadOnlyAdminMixin
from campaigns.models import Campaign

from . import selectors, services
from .models import MONEY, CampaignBudget, ModelUsage, Reservation, UserBudget
from .selectors import usd_str

MONEY_FIELD = DecimalField(**MONEY)
ZERO = Decimal(0)


def spend_annotations(key: str = "pk") -> dict[str, Any]:
    """Spend, budget and what is left of it, per campaign, as annotations: one query for
    a whole changelist. `key` names the campaign id on the annotated model."""
    now = timezone.now()
    default_cap, default_hard_stop = selectors.budget_defaults()
    budget = CampaignBudget.objects.filter(campaign_id=OuterRef(key))

    def per_campaign(queryset: QuerySet[Any], field: str) -> Coalesce:
        summed = (
            queryset.filter(campaign_id=OuterRef(key))
            .order_by()
            .values("campaign_id")
            .annotate(total=Sum(field))
            .values("total")
        )
        return Coalesce(
            Subquery(summed, output_field=MONEY_FIELD), Value(ZERO), output_field=MONEY_FIELD
        )

    return {
        "_spent_total": per_campaign(ModelUsage.objects.all(), "cost_usd"),
        "_spent_24h": per_campaign(
            ModelUsage.objects.filter(created_at__gt=selectors.window_start(now)), "cost_usd"
        ),
        "_reserved": per_campaign(Reservation.objects.filter(expires_at__gt=now), "amount_usd"),
        "_has_budget": Exists(budget),
        "_cap": Coalesce(
            Subquery(budget.values("daily_cap_usd")[:1], output_field=MONEY_FIELD),
            Value(default_cap),
            output_field=MONEY_FIELD,
        ),
        "_hard_stop": Coalesce(
            Subquery(budget.values("hard_stop")[:1], output_field=BooleanField()),
            Value(default_hard_stop),
            output_field=BooleanField(),
        ),
    }


def _remaining(obj: Any) -> Decimal:
    """What the campaign may still spend in the window, as budget_status computes it."""
    return max(Decimal(obj._cap) - Decimal(obj._spent_24h) - Decimal(obj._reserved), ZERO)


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


def is_operator(request: HttpRequest) -> bool:
    """Staff run the server and pay for it: in /admin/ they may set a campaign's cap above
    BILLING_MAX_DAILY_CAP_USD. Anyone else (a GM in their own admin) may not."""
    return bool(getattr(request.user, "is_staff", False))


class CampaignBudgetForm(forms.ModelForm):
    """The cap a non-operator may set stops at BILLING_MAX_DAILY_CAP_USD, said as a form
    error rather than a failed save (the service refuses it as well)."""

    operator = False  # set per request by CampaignBudgetAdmin.get_form

    class Meta:
        model = CampaignBudget
        fields = ("campaign", "daily_cap_usd", "hard_stop")

    def clean_daily_cap_usd(self) -> Decimal:
        cap: Decimal = self.cleaned_data["daily_cap_usd"]
        ceiling = selectors.max_daily_cap()
        current = self.instance.daily_cap_usd if self.instance.pk else ZERO
        if not self.operator and cap > ceiling and cap > current:
            raise forms.ValidationError(
                f"The most a campaign may spend a day on this server is ${usd_str(ceiling)}.",
                code="cap_too_high",
            )
        return cap


@admin.register(CampaignBudget)
class CampaignBudgetAdmin(admin.ModelAdmin):
    form = CampaignBudgetForm
    list_display = ("campaign", "daily_cap_usd", "hard_stop", "spent_24h", "percent", "degraded")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name",)
    list_filter = ("hard_stop",)
    fields = ("campaign", "daily_cap_usd", "hard_stop", "warned_percent", "warned_at")
    readonly_fields = ("warned_percent", "warned_at")
    raw_id_fields = ("campaign",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("campaign", *self.readonly_fields) if obj is not None else self.readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"operator": is_operator(request)})

    def get_queryset(self, request: HttpRequest) -> QuerySet[CampaignBudget]:
        # The spend of each listed budget from annotations: no query per row.
        annotations = spend_annotations(key="campaign_id")
        return (
            super()
            .get_queryset(request)
            .annotate(_spent_24h=annotations["_spent_24h"], _reserved=annotations["_reserved"])
        )

    def _status(self, obj: CampaignBudget) -> selectors.BudgetStatus:
        if not hasattr(obj, "_spent_24h"):
            return selectors.budget_status(campaign_id=obj.campaign_id)
        return selectors.BudgetStatus(
            campaign_id=str(obj.campaign_id),
            daily_cap_usd=obj.daily_cap_usd,
            hard_stop=obj.hard_stop,
            spent_usd=Decimal(obj._spent_24h),
            reserved_usd=Decimal(obj._reserved),
        )

    @admin.display(description="spent, last 24 h (USD)", ordering="_spent_24h")
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
            campaign_id=obj.campaign_id,
            daily_cap_usd=obj.daily_cap_usd,
            hard_stop=obj.hard_stop,
            by_operator=is_operator(request),
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


# --- The campaign list: events, spend and budget per campaign --------------------------------


admin.site.unregister(Campaign)


@admin.register(Campaign)
class CampaignSpendAdmin(CampaignAdmin):
    """The campaign admin with each campaign's usage and budget, all from annotations:
    the changelist makes as many queries for 100 campaigns as for 1."""

    list_display = (
        *CampaignAdmin.list_display,
        "spent_total",
        "spent_24h",
        "daily_cap",
        "remaining",
        "hard_stop",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        annotations = spend_annotations()
        queryset = super().get_queryset(request).annotate(**annotations)
        # Sortable by what is left: the same arithmetic as BudgetStatus.remaining_usd.
        return queryset.annotate(
            _remaining=ExpressionWrapper(
                Greatest(F("_cap") - F("_spent_24h") - F("_reserved"), Value(ZERO)),
                output_field=MONEY_FIELD,
            )
        )

    @admin.display(description="spent, all time (USD)", ordering="_spent_total")
    def spent_total(self, obj: Campaign) -> str:
        url = reverse("admin:billing_modelusage_changelist") + "?" + urlencode({"q": obj.pk})
        return format_html('<a href="{}">{}</a>', url, usd_str(getattr(obj, "_spent_total", 0)))

    @admin.display(description="spent, last 24 h (USD)", ordering="_spent_24h")
    def spent_24h(self, obj: Campaign) -> str:
        return usd_str(getattr(obj, "_spent_24h", 0))

    @admin.display(description="daily cap (USD)", ordering="_cap")
    def daily_cap(self, obj: Campaign) -> str:
        cap = usd_str(getattr(obj, "_cap", 0))
        if getattr(obj, "_has_budget", False):
            url = reverse("admin:billing_campaignbudget_change", args=[obj.pk])
            return format_html('<a href="{}">{}</a>', url, cap)
        return format_html("{} <small>(default)</small>", cap)

    @admin.display(description="left today (USD)", ordering="_remaining")
    def remaining(self, obj: Campaign) -> str:
        return usd_str(_remaining(obj))

    @admin.display(description="hard stop", boolean=True, ordering="_hard_stop")
    def hard_stop(self, obj: Campaign) -> bool:
        return bool(getattr(obj, "_hard_stop", False))
