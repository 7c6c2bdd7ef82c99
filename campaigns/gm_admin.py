"""The GM admin (`/gm/`, rpgai/gm_site.py) for campaigns: setup, members and bans, the
event log (read-only), invite codes, archiving and forks. Every write goes through
`campaigns.services` (and `rounds`, `forks`); the scope (only the user's own campaigns)
comes from `GmScopedAdmin`."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.db.models import OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from rpgai.errors import DomainError
from rpgai.gm_site import (
    GmCampaignFilter,
    GmScopedAdmin,
    domain_detail,
    gm_campaigns,
    gm_label_of,
    gm_site,
    request_id_of,
    service_call,
)

from . import selectors, services
from .admin import (
    PAYLOAD_PREVIEW_CHARS,
    PREVIEW_RANK,
    CappedCountPaginator,
    EventAdmin,
    EventTypeFilter,
    _count_of,
    pretty_json,
)
from .events import PREMISE_MAX_CHARS, TONE_MAX_CHARS
from .forks import campaign_fork
from .models import Campaign, CampaignBan, Event, Membership
from .rounds import ROUND_SECONDS_MAX, ROUND_SECONDS_MIN, campaign_turn_mode_set

FORMER_MEMBER = "a former member"


def gm_url(site: admin.AdminSite, name: str, *args: Any, **query: Any) -> str:
    url = reverse(f"{site.name}:{name}", args=args)
    return f"{url}?{urlencode(query)}" if query else url


# --- Campaigns: setup, status, invite code, forks --------------------------------------------


def _items(text: Any) -> list[str]:
    """Lines or veils typed one per line."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


class CampaignSetupForm(forms.ModelForm):
    """The setup lives in the log (campaign_created / campaign_updated), not in columns:
    its fields are read from the snapshot and written by `campaign_update`."""

    # show_hidden_initial: "changed" means changed on this page, not since it was opened.
    premise = forms.CharField(
        required=False,
        max_length=PREMISE_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 5}),
        show_hidden_initial=True,
    )
    tone = forms.CharField(required=False, max_length=TONE_MAX_CHARS, show_hidden_initial=True)
    lines = forms.CharField(
        required=False,
        show_hidden_initial=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: content the DM never includes.",
    )
    veils = forms.CharField(
        required=False,
        show_hidden_initial=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: content the DM keeps offscreen.",
    )
    round_seconds = forms.IntegerField(
        min_value=ROUND_SECONDS_MIN,
        max_value=ROUND_SECONDS_MAX,
        help_text="In rounds, how long the DM waits after a round's first action.",
    )

    class Meta:
        model = Campaign
        fields = ("name", "archived", "turn_mode", "round_seconds")
        help_texts = {
            "archived": "An archived campaign is read-only: no actions and no DM turns until "
            "you bring it back. It leaves the players' campaign lists."
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            snapshot = selectors.snapshot_get(campaign_id=self.instance.pk)
            setup = selectors.campaign_setup(snapshot.state if snapshot else {})
            self.initial["premise"] = setup["premise"]
            self.initial["tone"] = setup["tone"]
            self.initial["lines"] = "\n".join(setup["lines"])
            self.initial["veils"] = "\n".join(setup["veils"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # The service's own rules, as form errors (what is typed stays on the page).
        try:
            data["setup"] = services.campaign_setup_clean(
                premise=data.get("premise") or "",
                tone=data.get("tone") or "",
                turn_mode=data.get("turn_mode") or "free",
                lines=_items(data.get("lines")),
                veils=_items(data.get("veils")),
            )
        except services.SetupInvalid as exc:
            raise forms.ValidationError(domain_detail(exc), code=exc.code) from None
        return data


class ForkedFromFilter(admin.SimpleListFilter):
    """Forks of one of the user's campaigns."""

    title = "forks of"
    parameter_name = "forked_from"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return sorted(gm_campaigns(request).items(), key=lambda item: item[1].lower())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> QuerySet[Campaign]:
        value = self.value()
        return queryset.filter(forked_from_id=value) if value else queryset


class GmCampaignAdmin(GmScopedAdmin, admin.ModelAdmin):
    campaign_field = "pk"
    campaign_params = ("campaign", "id", "pk", "forked_from")
    gm_can_change = True
    form = CampaignSetupForm
    change_form_template = "gm_admin/campaigns/campaign/change_form.html"
    list_display = ("name", "archived", "member_count", "event_count", "created_at", "forked")
    list_filter = ("archived", ForkedFromFilter)
    search_fields = ("name",)
    ordering = ("-created_at",)
    fieldsets = (
        (None, {"fields": ("name", "premise", "tone", "lines", "veils")}),
        ("Turns", {"fields": ("turn_mode", "round_seconds")}),
        (
            "Status",
            {
                "fields": (
                    "archived",
                    "invite_code",
                    "members",
                    "edition",
                    "created_at",
                    "forked",
                    "forks",
                )
            },
        ),
    )
    readonly_fields = ("invite_code", "members", "edition", "created_at", "forked", "forks")
    actions = ("invite_code_new", "archive", "unarchive", "fork_at_latest")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return (
            super()
            .get_queryset(request)
            .select_related("forked_from")
            .annotate(
                _event_count=_count_of(Event, campaign_id=OuterRef("pk")),
                _member_count=_count_of(Membership, campaign_id=OuterRef("pk")),
            )
        )

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Campaign) -> str:
        url = gm_url(self.admin_site, "campaigns_membership_changelist", campaign=obj.pk)
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "_member_count", 0))

    @admin.display(description="events", ordering="_event_count")
    def event_count(self, obj: Campaign) -> str:
        url = gm_url(self.admin_site, "campaigns_event_changelist", campaign=obj.pk)
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "_event_count", 0))

    @admin.display(description="forked from")
    def forked(self, obj: Campaign) -> str:
        if obj.forked_from_id is None:
            return "-"
        # A fork's log copies its original's opening, name included: no secret here.
        url = gm_url(self.admin_site, "campaigns_campaign_change", obj.forked_from_id)
        name = obj.forked_from.name if obj.forked_from else "an earlier campaign"
        return format_html('<a href="{}">{}</a> after event #{}', url, name, obj.forked_at_seq)

    @admin.display(description="forks")
    def forks(self, obj: Campaign) -> str:
        url = gm_url(self.admin_site, "campaigns_campaign_changelist", forked_from=obj.pk)
        return format_html(
            '<a href="{}">Forks of this campaign</a> (make one from the campaign list, or at '
            "any event of the log)",
            url,
        )

    @admin.display(description="members")
    def members(self, obj: Campaign) -> str:
        rows = selectors.members_of(campaign_id=obj.pk)
        return format_html_join(
            ", ", "{} ({})", ((m.display_name, m.get_role_display()) for m in rows)
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        campaign = self.get_object(request, unquote(object_id))
        links = [
            (
                gm_label_of(ma),
                gm_url(
                    self.admin_site,
                    f"{ma.opts.app_label}_{ma.opts.model_name}_changelist",
                    campaign=campaign.pk,
                ),
            )
            for ma in self.admin_site._registry.values()
            if ma is not self
            and getattr(ma, "campaign_field", "pk") != "pk"
            and ma.has_view_permission(request)
        ]
        extra_context = {**(extra_context or {}), "gm_links": links}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        # Only the fields edited on this page: another GM's change since the page was
        # opened stays (campaign_update then appends only what really changed).
        changed = set(form.changed_data)
        setup = form.cleaned_data["setup"]
        changes: dict[str, Any] = {
            key: form.cleaned_data[key] for key in ("name", "archived") if key in changed
        }
        changes.update(
            {key: setup[key] for key in ("premise", "tone", "lines", "veils") if key in changed}
        )
        with service_call():
            if changes:
                services.campaign_update(
                    campaign_id=obj.pk,
                    by_user=request.user,
                    changes=changes,
                    request_id=request_id_of(request),
                )
            if changed & {"turn_mode", "round_seconds"}:
                campaign_turn_mode_set(
                    campaign_id=obj.pk,
                    by_user=request.user,
                    turn_mode=form.cleaned_data["turn_mode"],
                    round_seconds=form.cleaned_data["round_seconds"],
                )

    # --- Actions ---------------------------------------------------------------------------

    @admin.action(description="New invite code (the old one stops working)")
    def invite_code_new(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                code = services.invite_code_rotate(campaign_id=campaign.pk)
            except DomainError as exc:
                self.message_user(request, f"{campaign}: {domain_detail(exc)}", "error")
            else:
                self.message_user(request, f"New invite code for {campaign}: {code}")

    def _archive(self, request: HttpRequest, queryset: QuerySet[Campaign], value: bool) -> None:
        self.each_through_service(
            request,
            list(queryset),
            lambda campaign: services.campaign_update(
                campaign_id=campaign.pk,
                by_user=request.user,
                changes={"archived": value},
                request_id=request_id_of(request),
            ),
            done="Archived" if value else "Brought back",
            failed="Not changed:",
        )

    @admin.action(description="Archive (read-only until brought back)")
    def archive(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._archive(request, queryset, True)

    @admin.action(description="Bring back from the archive")
    def unarchive(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._archive(request, queryset, False)

    @admin.action(description="Fork at the latest event")
    def fork_at_latest(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            snapshot = selectors.snapshot_get(campaign_id=campaign.pk)
            try:
                fork = campaign_fork(
                    campaign_id=campaign.pk,
                    at_seq=snapshot.version if snapshot else 0,
                    by_user=request.user,
                    request_id=request_id_of(request),
                )
            except DomainError as exc:
                self.message_user(request, f"{campaign} not forked: {domain_detail(exc)}", "error")
                continue
            url = gm_url(self.admin_site, "campaigns_campaign_change", fork.pk)
            self.message_user(
                request, format_html('Forked {} as <a href="{}">{}</a>.', campaign, url, fork)
            )


# --- Members and bans ---------------------------------------------------------------------------


class GmMembershipAdmin(GmScopedAdmin, admin.ModelAdmin):
    """Who is at the table. Removing a member bans them (`member_kick`)."""

    gm_label = "Members"
    list_display = ("display_name", "role", "campaign", "joined_at")
    list_filter = (GmCampaignFilter, "role")
    list_select_related = ("campaign",)
    search_fields = ("display_name",)
    ordering = ("campaign_id", "joined_at")
    fields = ("campaign", "display_name", "role", "joined_at")
    readonly_fields = fields
    actions = ("kick_and_ban",)

    @admin.action(description="Remove and ban (they cannot join again until unbanned)")
    def kick_and_ban(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        members = list(queryset.select_related("campaign"))
        for membership in [m for m in members if m.user_id == request.user.id]:
            self.message_user(
                request,
                f"You cannot remove yourself from {membership.campaign}; hand the GM role to "
                "someone else and leave from the campaign's page.",
                "error",
            )
        self.each_through_service(
            request,
            [m for m in members if m.user_id != request.user.id],
            lambda m: services.member_kick(
                campaign_id=m.campaign_id,
                user_id=m.user_id,
                by_user=request.user,
                request_id=request_id_of(request),
            ),
            done="Removed and banned",
            failed="Not removed:",
            label=lambda m: f"{m.display_name} ({m.campaign})",
        )


class GmCampaignBanAdmin(GmScopedAdmin, admin.ModelAdmin):
    """Who was removed and may not join again. Deleting a ban lifts it (`ban_lift`)."""

    gm_label = "Bans"
    gm_can_delete = True
    list_display = ("display_name", "campaign", "banned_at", "banned_by_name")
    list_filter = (GmCampaignFilter,)
    list_select_related = ("campaign",)
    search_fields = ("display_name",)
    ordering = ("campaign_id", "banned_at")
    fields = ("campaign", "display_name", "banned_at", "banned_by_name")
    readonly_fields = fields
    actions = ("lift",)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "lift" says what it does
        return actions

    @admin.display(description="banned by")
    def banned_by_name(self, obj: CampaignBan) -> str:
        if obj.banned_by_id is None:
            return "-"
        membership = selectors.membership_get(campaign_id=obj.campaign_id, user_id=obj.banned_by_id)
        return membership.display_name if membership else "a former GM"

    def _lift(self, ban: CampaignBan) -> None:
        services.ban_lift(campaign_id=ban.campaign_id, user_id=ban.user_id)

    @admin.action(description="Lift the ban (they may join again with the invite code)")
    def lift(self, request: HttpRequest, queryset: QuerySet[CampaignBan]) -> None:
        self.each_through_service(
            request,
            list(queryset.select_related("campaign")),
            self._lift,
            done="Ban lifted",
            failed="Not lifted:",
            label=lambda ban: f"{ban.display_name} ({ban.campaign})",
        )

    def delete_model(self, request: HttpRequest, obj: CampaignBan) -> None:
        with service_call("Not lifted"):
            self._lift(obj)
        request._gm_lifted = f"{obj.display_name} ({obj.campaign})"  # type: ignore[attr-defined]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        lifted = getattr(request, "_gm_lifted", None)
        if lifted is None or IS_POPUP_VAR in request.POST:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(
            request, f"Ban lifted: {lifted}. They may join again with the invite code.", "success"
        )
        return HttpResponseRedirect(gm_url(self.admin_site, "campaigns_campaignban_changelist"))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CampaignBan]) -> None:
        for ban in queryset:
            self.delete_model(request, ban)


# --- The log, read-only --------------------------------------------------------------------


class GmEventAdmin(GmScopedAdmin, EventAdmin):
    """The campaign's log as it is stored, GM-only events included; never changed here."""

    list_display = (
        "seq",
        "campaign",
        "type",
        "actor",
        "visible_to",
        "created_at",
        "payload_preview",
    )
    list_filter = (GmCampaignFilter, EventTypeFilter)
    ordering = ("campaign_id", "-seq")
    paginator = CappedCountPaginator
    fields = (
        "campaign",
        "seq",
        "type",
        "actor",
        "visible_to",
        "payload_pretty",
        "request_id",
        "created_at",
    )
    readonly_fields = fields
    actions = ("fork_at_event",)

    def has_fork_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            # Names for the page's actors, one read per campaign on the page.
            names: dict[str, dict[str, str]] = {}
            for event in context["cl"].result_list:
                key = str(event.campaign_id)
                if key not in names:
                    names[key] = self._names(event.campaign_id)
                event._names = names[key]
        return response

    @staticmethod
    def _names(campaign_id: Any) -> dict[str, str]:
        names = {str(b.user_id): b.display_name for b in selectors.bans_of(campaign_id=campaign_id)}
        names.update(
            {str(m.user_id): m.display_name for m in selectors.members_of(campaign_id=campaign_id)}
        )
        # A deleted account's name is withheld wherever the log is shown.
        names.update(selectors.names_withheld(campaign_id=campaign_id))
        return names

    def _names_of(self, obj: Event) -> dict[str, str]:
        if not hasattr(obj, "_names"):
            obj._names = self._names(obj.campaign_id)  # type: ignore[attr-defined]
        return obj._names  # type: ignore[attr-defined,no-any-return]

    @admin.display(description="actor")
    def actor(self, obj: Event) -> str:
        if obj.actor_user_id is None:
            return "the DM" if obj.actor_kind == "dm" else obj.actor_kind
        name = self._names_of(obj).get(str(obj.actor_user_id), FORMER_MEMBER)
        return f"{name} ({obj.actor_kind})"

    @admin.display(description="seen by")
    def visible_to(self, obj: Event) -> str:
        kind = (obj.visibility or {}).get("kind", "all")
        if kind == "users":
            names = self._names_of(obj)
            users = (obj.visibility or {}).get("user_ids") or []
            return "GMs and " + ", ".join(names.get(str(u), FORMER_MEMBER) for u in users)
        return {"all": "everyone", "gm": "GMs only"}.get(kind, kind)

    def _payload(self, obj: Event) -> Any:
        payload = obj.payload
        if obj.type in ("player_joined", "player_left") and isinstance(payload, dict):
            withheld = selectors.names_withheld(campaign_id=obj.campaign_id)
            envelope = selectors.envelope_withheld({"type": obj.type, "payload": payload}, withheld)
            payload = envelope["payload"]
        return payload

    @admin.display(description="payload")
    def payload_preview(self, obj: Event) -> str:
        payload = self._payload(obj)
        payload = payload if isinstance(payload, dict) else {"": payload}
        keys = sorted(payload, key=lambda k: (PREVIEW_RANK.get(k, len(PREVIEW_RANK)), k))
        text = json.dumps({k: payload[k] for k in keys}, ensure_ascii=False)
        if len(text) > PAYLOAD_PREVIEW_CHARS:
            text = text[: PAYLOAD_PREVIEW_CHARS - 1] + "…"
        return text

    @admin.display(description="payload")
    def payload_pretty(self, obj: Event) -> str:
        return pretty_json(self._payload(obj))

    @admin.action(
        description="Fork the campaign at the selected event (one event)", permissions=["fork"]
    )
    def fork_at_event(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        events = list(queryset[:2])
        if len(events) != 1:
            self.message_user(request, "Select exactly one event to fork at.", "error")
            return
        event = events[0]
        try:
            fork = campaign_fork(
                campaign_id=event.campaign_id,
                at_seq=event.seq,
                by_user=request.user,
                request_id=request_id_of(request),
            )
        except DomainError as exc:
            self.message_user(request, f"Not forked: {domain_detail(exc)}", "error")
            return
        url = gm_url(self.admin_site, "campaigns_campaign_change", fork.pk)
        self.message_user(
            request,
            format_html('Forked at event #{} as <a href="{}">{}</a>.', event.seq, url, fork),
        )


gm_site.register(Campaign, GmCampaignAdmin)
gm_site.register(Membership, GmMembershipAdmin)
gm_site.register(CampaignBan, GmCampaignBanAdmin)
gm_site.register(Event, GmEventAdmin)
