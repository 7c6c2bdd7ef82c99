"""Django admin for GMs and operators: campaigns, their log and snapshots, mostly read-only.

The admin never writes the log or the snapshot itself. Campaigns are created through the
site (`campaign_create`), members join with invite codes (`campaign_join`), and the one
write offered here, deleting a campaign, goes through `campaign_delete`, the only path
the database's event triggers let through.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import router
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.deletion import Collector, ProtectedError, RestrictedError
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode

from rpgai.errors import DomainError

from . import services
from .events import EVENT_TYPES
from .models import Campaign, Event, Membership, Snapshot

PAYLOAD_PREVIEW_CHARS = 80
PREVIEW_FIRST = ("text", "formula", "total", "name", "display_name", "role", "code", "cue")
PREVIEW_RANK = {key: rank for rank, key in enumerate(PREVIEW_FIRST)}


def pretty_json(value: Any) -> str:
    """JSON as an indented <pre> block (escaped by format_html)."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


class ReadOnlyAdminMixin:
    """View-only: no add, change or delete from the admin (view permission still applies)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _count_of(model: type, **filters: Any) -> Coalesce:
    """A correlated COUNT(*) subquery: two plain Count() joins would multiply each other."""
    counted = (
        model.objects.filter(**filters)
        .order_by()
        .values("campaign_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


class MembershipInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Members are shown, never edited here: joining and leaving append events."""

    model = Membership
    fields = ("user", "role", "display_name", "joined_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "edition",
        "created_by",
        "created_at",
        "event_count",
        "member_count",
    )
    list_select_related = ("created_by",)
    search_fields = ("name", "=invite_code")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    inlines = (MembershipInline,)
    fields = (
        "id",
        "name",
        "edition",
        "invite_code",
        "created_by",
        "created_at",
        "forked_from",
        "forked_at_seq",
        "turn_mode",
        "round_seconds",
        "event_count",
        "snapshot_version",
        "snapshot_state",
    )
    # Only the turn settings are editable (they are settings, not story: no event).
    readonly_fields = tuple(f for f in fields if f not in ("turn_mode", "round_seconds"))
    actions = ("rebuild_snapshots",)

    # Created on the site (campaign_create opens the log); renaming here would bypass
    # the log too, so the rest of the change page is read-only. Deleting is allowed, via
    # the service.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        from .rounds import campaign_turns_update

        campaign_turns_update(
            campaign=obj,
            turn_mode=form.cleaned_data.get("turn_mode"),
            round_seconds=form.cleaned_data.get("round_seconds"),
        )

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        # No select_related here: the changelist then applies list_select_related (it
        # skips it for a queryset that already has one), and the list never needs the
        # snapshot's state, which may be large.
        return (
            super()
            .get_queryset(request)
            .annotate(
                _event_count=_count_of(Event, campaign_id=OuterRef("pk")),
                _member_count=_count_of(Membership, campaign_id=OuterRef("pk")),
            )
        )

    @admin.display(description="events", ordering="_event_count")
    def event_count(self, obj: Campaign) -> str:
        url = (
            reverse("admin:campaigns_event_changelist")
            + "?"
            + urlencode({"campaign__id__exact": obj.pk})
        )
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "_event_count", 0))

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Campaign) -> int:
        return getattr(obj, "_member_count", 0)

    @admin.display(description="snapshot version")
    def snapshot_version(self, obj: Campaign) -> int | str:
        snapshot = Snapshot.objects.filter(campaign=obj).only("version").first()
        return snapshot.version if snapshot else "-"

    @admin.display(description="snapshot state")
    def snapshot_state(self, obj: Campaign) -> str:
        snapshot = Snapshot.objects.filter(campaign=obj).first()
        return pretty_json(snapshot.state) if snapshot else "-"

    # --- Deleting: the event triggers allow it only through campaign_delete ---------------

    def delete_model(self, request: HttpRequest, obj: Campaign) -> None:
        services.campaign_delete(campaign_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign_id in queryset.values_list("pk", flat=True):
            services.campaign_delete(campaign_id=campaign_id)

    def get_deleted_objects(
        self, objs: Iterable[Campaign], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """What the confirmation page lists: counts per kind, not one row per event.

        Django's default lists every related row (a long log is thousands of events) and
        asks for delete permission on each related model, which the read-only event
        admin never grants; `campaign_delete` is the sanctioned removal of a whole log.
        """
        objs = list(objs)
        collector = Collector(using=router.db_for_write(Campaign), origin=objs)
        protected: list[Any] = []
        try:
            collector.collect(objs)
        except ProtectedError as exc:
            protected = [str(o) for o in exc.protected_objects]
        except RestrictedError as exc:
            protected = [str(o) for o in exc.restricted_objects]
        counts: Counter[str] = Counter()
        for model, instances in collector.data.items():
            counts[str(model._meta.verbose_name_plural)] += len(instances)
        for qs in collector.fast_deletes:
            counts[str(qs.model._meta.verbose_name_plural)] += qs.count()
        deleted = [f"Campaign: {obj} ({obj.pk})" for obj in objs]
        return deleted, {k: v for k, v in counts.items() if v}, set(), protected

    @admin.action(
        description="Re-fold the snapshots of the selected campaigns", permissions=["rebuild"]
    )
    def rebuild_snapshots(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        drifted: list[str] = []
        ids = list(queryset.values_list("pk", flat=True))
        for campaign_id in ids:
            _, drifts = services.snapshots_rebuild(campaign_id=campaign_id, fix=True)
            drifted += [
                f"{d.campaign_id} ({', '.join(d.differing_keys) or 'version'})" for d in drifts
            ]
        if drifted:
            self.message_user(
                request, f"Fixed drift in {len(drifted)}: {'; '.join(drifted)}", messages.WARNING
            )
        else:
            self.message_user(request, f"{len(ids)} snapshot(s) match their events.")


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows: a plain COUNT(*) over a long log scans all of it.

    Beyond the cap the changelist shows COUNT_CAP results and pages; filter by campaign
    or sort by seq descending to reach the newest events of a huge log.
    """

    COUNT_CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.COUNT_CAP].count()


class EventTypeFilter(admin.SimpleListFilter):
    """The registered event types: no SELECT DISTINCT over a long log to build the list."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(EVENT_TYPES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        value = self.value()
        return queryset.filter(type=value) if value else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("seq", "campaign", "type", "actor_kind", "created_at", "payload_preview")
    list_display_links = ("seq",)
    list_filter = ("campaign", EventTypeFilter)
    list_select_related = ("campaign",)
    # campaign_id, not campaign: ordering by the relation would follow Campaign's own
    # ordering through a join; (campaign_id, seq) is the unique index.
    ordering = ("campaign_id", "seq")
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100
    fields = (
        "id",
        "campaign",
        "seq",
        "type",
        "actor_kind",
        "actor_user_id",
        "visibility_pretty",
        "payload_pretty",
        "request_id",
        "dedupe_key",
        "created_at",
    )
    readonly_fields = fields
    actions = ("fork_at_event",)

    def has_fork_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    @admin.action(
        description="Fork the campaign at the selected event (one event)",
        permissions=["fork"],
    )
    def fork_at_event(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        from .forks import campaign_fork

        events = list(queryset[:2])
        if len(events) != 1:
            self.message_user(request, "Select exactly one event to fork at.", messages.ERROR)
            return
        event = events[0]
        try:
            fork = campaign_fork(
                campaign_id=event.campaign_id,
                at_seq=event.seq,
                by_user=request.user,
                request_id="admin",
                as_operator=True,
            )
        except DomainError as exc:
            self.message_user(request, f"Not forked: {exc.detail}", messages.ERROR)
            return
        url = reverse("admin:campaigns_campaign_change", args=[fork.pk])
        self.message_user(
            request, format_html('Forked at seq {} as <a href="{}">{}</a>.', event.seq, url, fork)
        )

    @admin.display(description="payload")
    def payload_preview(self, obj: Event) -> str:
        # What people read first (a player's text, a roll), before the ids.
        payload = obj.payload if isinstance(obj.payload, dict) else {"": obj.payload}
        keys = sorted(payload, key=lambda k: (PREVIEW_RANK.get(k, len(PREVIEW_RANK)), k))
        text = json.dumps({k: payload[k] for k in keys}, ensure_ascii=False)
        if len(text) > PAYLOAD_PREVIEW_CHARS:
            text = text[: PAYLOAD_PREVIEW_CHARS - 1] + "…"
        return text

    @admin.display(description="payload")
    def payload_pretty(self, obj: Event) -> str:
        return pretty_json(obj.payload)

    @admin.display(description="visibility")
    def visibility_pretty(self, obj: Event) -> str:
        return pretty_json(obj.visibility)


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("campaign", "version", "updated_at")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name",)
    fields = ("campaign", "version", "updated_at", "state_pretty")
    readonly_fields = fields

    @admin.display(description="state")
    def state_pretty(self, obj: Snapshot) -> str:
        return pretty_json(obj.state)
