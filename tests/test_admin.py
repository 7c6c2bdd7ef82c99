"""The Django admin for GMs and operators: mostly read-only, deletes through the service."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.text import capfirst

from billing.models import ModelUsage
from billing.selectors import budget_status, usd_str
from billing.services import budget_reserve, budget_set
from campaigns import services
from campaigns.admin import CappedCountPaginator
from campaigns.models import Campaign, Event, Membership, Snapshot
from orchestrator.models import TurnLock
from orchestrator.services import turn_lock_acquire
from realtime.models import RoomPresence
from realtime.services import presence_enter

pytestmark = pytest.mark.django_db


@pytest.fixture
def table(campaign, join, make_user) -> Campaign:
    """A campaign with a player, an action, someone in the room and a turn lock."""
    membership = join(make_user("alice"), "Alice")
    services.player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I wave")
    presence_enter(channel_name="specific.test!alice", membership=membership)
    assert turn_lock_acquire(campaign_id=campaign.id, holder="worker-1")
    return campaign


def admin_urls(campaign: Campaign) -> list[str]:
    event = Event.objects.filter(campaign=campaign).order_by("seq").first()
    presence = RoomPresence.objects.get(campaign=campaign)
    return [
        reverse("admin:index"),
        reverse("admin:campaigns_campaign_changelist"),
        reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
        reverse("admin:campaigns_campaign_delete", args=[campaign.pk]),
        reverse("admin:campaigns_event_changelist"),
        reverse("admin:campaigns_event_change", args=[event.pk]),
        reverse("admin:campaigns_snapshot_changelist"),
        reverse("admin:campaigns_snapshot_change", args=[campaign.pk]),
        reverse("admin:realtime_roompresence_changelist"),
        reverse("admin:realtime_roompresence_change", args=[presence.pk]),
        reverse("admin:orchestrator_turnlock_changelist"),
        reverse("admin:orchestrator_turnlock_change", args=[campaign.pk]),
    ]


def test_superuser_opens_every_changelist_and_change_page(admin_client, table):
    for url in admin_urls(table):
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_campaign_pages_show_counts_members_and_the_snapshot(admin_client, table):
    changelist = admin_client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    events = Event.objects.filter(campaign=table).count()
    assert "The Sunken Crown" in changelist
    assert f'?campaign__id__exact={table.pk}">{events}</a>' in changelist
    assert '<td class="field-member_count">2</td>' in changelist

    found = admin_client.get(
        reverse("admin:campaigns_campaign_changelist"), {"q": table.invite_code.lower()}
    )
    assert "The Sunken Crown" in found.content.decode()
    assert (
        "The Sunken Crown"
        not in admin_client.get(
            reverse("admin:campaigns_campaign_changelist"), {"q": "no such thing"}
        ).content.decode()
    )

    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[table.pk]))
    html = page.content.decode()
    snapshot = Snapshot.objects.get(campaign=table)
    assert "The Drowned Lantern inn" in html  # the pretty-printed state
    assert f'<div class="readonly">{snapshot.version}</div>' in html
    assert "Alice" in html  # the read-only membership inline
    inline = page.context["inline_admin_formsets"][0]
    assert inline.has_add_permission is False
    assert inline.has_change_permission is False
    assert inline.has_delete_permission is False
    # A valid POST (the turn settings are editable) still cannot rename the campaign
    # behind the log's back: the name is read-only.
    data = {"turn_mode": "free", "round_seconds": 120, "name": "Renamed"}
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({management.add_prefix(k): v for k, v in management.initial.items()})
    saved = admin_client.post(reverse("admin:campaigns_campaign_change", args=[table.pk]), data)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    table.refresh_from_db()
    assert table.name == "The Sunken Crown"
    assert admin_client.get(reverse("admin:campaigns_campaign_add")).status_code == 403


def test_event_admin_is_read_only(admin_client, admin_user, rf, table):
    event = Event.objects.filter(campaign=table).order_by("seq").first()
    model_admin = admin.site.get_model_admin(Event)
    request = rf.get("/admin/")
    request.user = admin_user
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request, event) is False
    assert model_admin.has_delete_permission(request, event) is False

    assert admin_client.get(reverse("admin:campaigns_event_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:campaigns_event_delete", args=[event.pk])).status_code
        == 403
    )
    assert (
        admin_client.post(reverse("admin:campaigns_event_delete", args=[event.pk]), {"post": "yes"})
    ).status_code == 403
    changed = admin_client.post(
        reverse("admin:campaigns_event_change", args=[event.pk]), {"type": "dm_narration"}
    )
    assert changed.status_code == 403
    response = admin_client.post(
        reverse("admin:campaigns_event_changelist"),
        {"action": "delete_selected", "_selected_action": [str(event.pk)], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert Event.objects.get(pk=event.pk).type == "campaign_created"

    detail = admin_client.get(reverse("admin:campaigns_event_change", args=[event.pk]))
    assert "Save" not in detail.content.decode()
    assert "The Sunken Crown" in detail.content.decode()


def test_event_changelist_filters_and_stays_cheap(
    admin_client, table, django_assert_max_num_queries
):
    url = reverse("admin:campaigns_event_changelist")
    html = admin_client.get(url, {"campaign__id__exact": table.pk, "type": "player_action"})
    rows = html.context["cl"].result_list
    assert [e.type for e in rows] == ["player_action"]
    assert "I wave" in html.content.decode()  # the payload preview

    # More events must not mean more queries (campaign is select_related).
    for _ in range(30):
        services.events_append(
            campaign_id=table.id,
            events=[
                services.NewEvent(
                    "turn_failed", {"turn_id": str(uuid.uuid4()), "code": "model_error"}
                )
            ],
        )
    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    seqs = [(e.campaign_id, e.seq) for e in response.context["cl"].result_list]
    assert seqs == sorted(seqs)
    assert response.context["cl"].show_full_result_count is False

    # The paginator never counts past its cap (a full COUNT(*) scans the whole log).
    class SmallCap(CappedCountPaginator):
        COUNT_CAP = 7

    everything = Event.objects.order_by("campaign_id", "seq")
    assert everything.count() > 30
    assert SmallCap(everything, 5).count == 7
    assert CappedCountPaginator(everything, 5).count == everything.count()


def test_campaign_changelist_queries_do_not_grow_with_campaigns(
    admin_client, table, make_user, django_assert_max_num_queries
):
    url = reverse("admin:campaigns_campaign_changelist")
    for n in range(5):
        services.campaign_create(name=f"Table {n}", creator=make_user())
    with django_assert_max_num_queries(10):
        response = admin_client.get(url)
    assert len(response.context["cl"].result_list) == 6


def test_deleting_a_campaign_from_admin_removes_it_and_its_log(admin_client, table, gm):
    other = services.campaign_create(name="Other table", creator=gm)
    other_events = Event.objects.filter(campaign=other).count()
    delete_url = reverse("admin:campaigns_campaign_delete", args=[table.pk])
    confirm = admin_client.get(delete_url)
    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]
    events = Event.objects.filter(campaign=table).count()
    assert dict(confirm.context["model_count"])["events"] == events

    response = admin_client.post(delete_url, {"post": "yes"})

    assert response.status_code == 302
    assert not Campaign.objects.filter(pk=table.pk).exists()
    assert not Event.objects.filter(campaign_id=table.pk).exists()
    assert not Snapshot.objects.filter(campaign_id=table.pk).exists()
    assert not Membership.objects.filter(campaign_id=table.pk).exists()
    assert not RoomPresence.objects.filter(campaign_id=table.pk).exists()
    assert not TurnLock.objects.filter(campaign_id=table.pk).exists()
    assert Event.objects.filter(campaign=other).count() == other_events  # untouched


def test_bulk_delete_action_goes_through_the_service(admin_client, table, gm):
    other = services.campaign_create(name="Other table", creator=gm)
    keep = services.campaign_create(name="Keep me", creator=gm)
    response = admin_client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(table.pk), str(other.pk)],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert list(Campaign.objects.values_list("pk", flat=True)) == [keep.pk]
    assert set(Event.objects.values_list("campaign_id", flat=True)) == {keep.pk}


def test_rebuild_action_fixes_a_drifted_snapshot(admin_client, table):
    healthy = Snapshot.objects.get(campaign=table).state
    Snapshot.objects.filter(campaign=table).update(state={**healthy, "flags": {"bad": True}})
    response = admin_client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "rebuild_snapshots", "_selected_action": [str(table.pk)]},
        follow=True,
    )
    assert "Fixed drift in 1" in response.content.decode()
    assert Snapshot.objects.get(campaign=table).state == healthy


@pytest.mark.parametrize("staff", [False, True])
def test_non_staff_and_anonymous_are_sent_to_the_admin_login(client, table, make_user, staff):
    # Anonymous first, then a logged-in player who is not staff.
    urls = admin_urls(table)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url
    player = make_user("not-staff")
    if staff:
        # Staff without any model permission sees no campaign data at all.
        player.is_staff = True
        player.save(update_fields=["is_staff"])
    client.force_login(player)
    for url in urls[1:]:
        response = client.get(url)
        if staff:
            assert response.status_code == 403, url
        else:
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login")), url


# --- Usage, budgets and event counts per campaign (billing adds its columns) ---------------


def record_usage(campaign: Campaign, cost: str, *, hours_ago: float = 0) -> None:
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        cost_usd=Decimal(cost),
        created_at=timezone.now() - timedelta(hours=hours_ago),
    )


@pytest.fixture
def spending(table, gm) -> tuple[Campaign, Campaign]:
    """Two campaigns: one with its own budget, spend in and out of the 24 h window and a
    call in flight; one on the default budget with a little spend."""
    other = services.campaign_create(name="Ashen Road", creator=gm)
    budget_set(campaign_id=table.id, daily_cap_usd="2.00", hard_stop=False)
    record_usage(table, "0.25")
    record_usage(table, "0.125", hours_ago=2)
    record_usage(table, "0.50", hours_ago=30)  # outside the window: all-time spend only
    budget_reserve(
        campaign_id=table.id, key="in-flight", purpose="dm_turn", amount_usd=Decimal("0.1")
    )
    record_usage(other, "0.05")
    return table, other


def test_campaign_changelist_shows_events_spend_and_budget_of_each_campaign(admin_client, spending):
    response = admin_client.get(reverse("admin:campaigns_campaign_changelist"))
    assert response.status_code == 200
    cl = response.context["cl"]
    html = response.content.decode()
    for header in (
        "events",
        "spent, all time (USD)",
        "spent, last 24 h (USD)",
        "daily cap (USD)",
        "left today (USD)",
    ):
        assert f">{capfirst(header)}</a>" in html, header  # a sortable column
    rows = {c.pk: c for c in cl.result_list}
    assert set(rows) == {c.pk for c in spending}
    model_admin = cl.model_admin
    for campaign in spending:
        row = rows[campaign.pk]
        status = budget_status(campaign_id=campaign.id)
        everything = ModelUsage.objects.filter(campaign_id=campaign.id)
        all_time = sum((u.cost_usd for u in everything), Decimal(0))
        # The annotations agree with billing's own selectors.
        assert model_admin.spent_24h(row) == usd_str(status.spent_usd)
        assert model_admin.remaining(row) == usd_str(status.remaining_usd)
        assert usd_str(status.daily_cap_usd) in model_admin.daily_cap(row)
        assert usd_str(all_time) in model_admin.spent_total(row)
        assert model_admin.hard_stop(row) is status.hard_stop
        assert (
            f'?campaign__id__exact={campaign.pk}">{Event.objects.filter(campaign=campaign).count()}</a>'
            in html
        )
    table, other = spending
    assert model_admin.spent_24h(rows[table.pk]) == "0.375"
    assert model_admin.spent_total(rows[table.pk]).endswith(">0.875</a>")
    assert model_admin.remaining(rows[table.pk]) == "1.525"  # 2.00 - 0.375 - 0.1 in flight
    assert reverse("admin:billing_campaignbudget_change", args=[table.pk]) in model_admin.daily_cap(
        rows[table.pk]
    )
    assert model_admin.spent_24h(rows[other.pk]) == "0.05"
    # The spend links to that campaign's usage rows.
    usage = admin_client.get(reverse("admin:billing_modelusage_changelist"), {"q": str(table.pk)})
    assert len(usage.context["cl"].result_list) == 3


def test_campaign_changelist_sorts_by_spend_and_by_what_is_left(admin_client, spending):
    table, other = spending
    url = reverse("admin:campaigns_campaign_changelist")
    columns = admin_client.get(url).context["cl"].list_display
    # table: 0.375 spent in 24 h, 1.525 left of 2.00; other: 0.05 spent, 0.95 left of 1.00.
    for column in ("spent_24h", "remaining", "spent_total", "daily_cap"):
        index = columns.index(column)
        ascending = admin_client.get(url, {"o": str(index)}).context["cl"].result_list
        descending = admin_client.get(url, {"o": f"-{index}"}).context["cl"].result_list
        assert [c.pk for c in ascending] == [other.pk, table.pk], column
        assert [c.pk for c in descending] == [table.pk, other.pk], column


def test_spend_columns_cost_no_query_per_campaign(admin_client, spending, gm):
    url = reverse("admin:campaigns_campaign_changelist")
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for n in range(6):
        more = services.campaign_create(name=f"Table {n}", creator=gm)
        record_usage(more, "0.01")
        budget_set(campaign_id=more.id, daily_cap_usd="3.00")
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(url)
    assert len(response.context["cl"].result_list) == 8
    assert len(many) == len(few), [q["sql"] for q in many]

    budgets = reverse("admin:billing_campaignbudget_changelist")
    with CaptureQueriesContext(connection) as listed:
        response = admin_client.get(budgets)
    rows = response.context["cl"].result_list
    assert len(rows) >= 7
    model_admin = response.context["cl"].model_admin
    for row in rows:
        status = budget_status(campaign_id=row.campaign_id)
        assert model_admin.spent_24h(row) == usd_str(status.spent_usd)
        assert model_admin.percent(row) == status.percent
    assert len(listed) <= 10, [q["sql"] for q in listed]
