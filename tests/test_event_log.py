"""The event log: gapless seq, the fold kept in step, dedupe of repeated actions."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connections

from campaigns import selectors, services
from campaigns.events import InvalidEvent, NewEvent
from campaigns.models import Event, Snapshot
from rpgai.errors import Conflict, NotFound

pytestmark = pytest.mark.django_db


def test_campaign_opens_its_log_and_snapshot(campaign, gm):
    events = selectors.events_after(campaign_id=campaign.id)
    assert [e.type for e in events][:1] == ["campaign_created"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    snapshot = selectors.snapshot_get(campaign_id=campaign.id)
    assert snapshot.version == events[-1].seq
    assert snapshot.state["scene"]["location"] == "The Drowned Lantern inn"
    assert snapshot.state["members"][str(gm.id)]["role"] == "gm"


def test_join_adds_member_and_character(campaign, join, make_user):
    alice = make_user("alice")
    membership = join(alice, "Alice the Bold")
    assert membership.role == "player"
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    [character] = [c for c in state["characters"].values() if c["owner_user_id"] == str(alice.id)]
    assert character["name"] == "Alice the Bold"
    assert character["hp"] == character["max_hp"] == 10
    # Joining again changes nothing.
    version = selectors.snapshot_get(campaign_id=campaign.id).version
    assert join(alice).id == membership.id
    assert selectors.snapshot_get(campaign_id=campaign.id).version == version


def test_repeated_action_id_is_appended_once(campaign, join, make_user):
    membership = join(make_user())
    action_id = uuid.uuid4()
    first = services.player_action_submit(
        membership=membership, action_id=action_id, text="I knock"
    )
    again = services.player_action_submit(
        membership=membership, action_id=action_id, text="I knock"
    )
    assert first.id == again.id and first.seq == again.seq
    assert Event.objects.filter(campaign=campaign, type="player_action").count() == 1


def test_seq_is_per_campaign(campaign, gm, join, make_user):
    other = services.campaign_create(name="Other", creator=gm)
    membership = join(make_user())
    services.player_action_submit(membership=membership, action_id=uuid.uuid4(), text="hello")
    # campaign_created, dice_seed_committed, player_joined
    assert [e.seq for e in selectors.events_after(campaign_id=other.id)] == [1, 2, 3]


def test_unknown_type_and_bad_payload_append_nothing(campaign):
    version = Snapshot.objects.get(campaign=campaign).version
    with pytest.raises(InvalidEvent):
        services.events_append(campaign_id=campaign.id, events=[NewEvent("made_up", {})])
    with pytest.raises(InvalidEvent):
        services.events_append(
            campaign_id=campaign.id,
            events=[NewEvent("player_action", {"action_id": "not-a-uuid", "text": "x"})],
        )
    assert Snapshot.objects.get(campaign=campaign).version == version


def test_precondition_failure_appends_nothing(campaign):
    version = Snapshot.objects.get(campaign=campaign).version

    def refuse(state):
        raise Conflict("no")

    with pytest.raises(Conflict):
        services.events_append(
            campaign_id=campaign.id,
            precondition=refuse,
            events=[
                NewEvent(
                    "player_left",
                    {"user_id": str(uuid.uuid4()), "display_name": "x", "role": "player"},
                )
            ],
        )
    assert Snapshot.objects.get(campaign=campaign).version == version


def test_append_to_unknown_campaign_is_not_found():
    with pytest.raises(NotFound):
        services.events_append(campaign_id=uuid.uuid4(), events=[])


def test_events_after_pages_in_order(campaign, join, make_user):
    membership = join(make_user())
    for i in range(30):
        services.player_action_submit(
            membership=membership, action_id=uuid.uuid4(), text=f"step {i}"
        )
    total = selectors.snapshot_get(campaign_id=campaign.id).version
    page1 = selectors.events_after(campaign_id=campaign.id, after_seq=0, limit=10)
    page2 = selectors.events_after(campaign_id=campaign.id, after_seq=page1[-1].seq, limit=1000)
    assert [e.seq for e in page1 + page2] == list(range(1, total + 1))


def _append_many(campaign_id, writer: int, count: int, errors: list[BaseException]) -> None:
    try:
        for i in range(count):
            services.events_append(
                campaign_id=campaign_id,
                events=[
                    NewEvent(
                        "player_left",
                        {
                            "user_id": str(uuid.uuid4()),
                            "display_name": f"w{writer}-{i}",
                            "role": "player",
                        },
                    )
                ],
            )
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gapless_unique_seqs(gm):
    writers, per_writer = 8, 200
    campaign = services.campaign_create(name="Busy", creator=gm)
    start = selectors.snapshot_get(campaign_id=campaign.id).version
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_append_many, args=(campaign.id, w, per_writer, errors))
        for w in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = list(
        Event.objects.filter(campaign=campaign).order_by("seq").values_list("seq", flat=True)
    )
    # Gapless and unique, whatever else listeners appended meanwhile (memory summarizes
    # every few dozen events).
    assert seqs == list(range(1, len(seqs) + 1))
    written = Event.objects.filter(campaign=campaign, type="player_left", seq__gt=start)
    assert written.count() == writers * per_writer
    snapshot = Snapshot.objects.get(campaign=campaign)
    assert snapshot.version == len(seqs)
    assert snapshot.state == services.fold_events(
        Event.objects.filter(campaign=campaign).order_by("seq")
    )


def test_a_removed_member_cannot_act_with_a_stale_membership(campaign, join, make_user):
    from rpgai.errors import PermissionDenied

    membership = join(make_user())
    services.membership_leave(campaign_id=campaign.id, user_id=membership.user_id)
    with pytest.raises(PermissionDenied):
        services.player_action_submit(membership=membership, action_id=uuid.uuid4(), text="hi")
    assert not Event.objects.filter(campaign=campaign, type="player_action").exists()
