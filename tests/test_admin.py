"""The Django admin for GMs and operators: mostly read-only, deletes through the service."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.urls import reverse

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
    # View-only: a POST cannot rename the campaign behind the log's back.
    admin_client.post(
        reverse("admin:campaigns_campaign_change", args=[table.pk]), {"name": "Renamed"}
    )
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
