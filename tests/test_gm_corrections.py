"""GM corrections: set a value (a `gm` state patch) or revert an earlier event with a
compensating patch; the log itself never changes. GMs only."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from campaigns import services
from campaigns.models import Event, Snapshot
from campaigns.state_schema import PatchRefused
from campaigns.tools import gm_revert_event, gm_set_value, turn_commit
from rpgai.errors import Conflict, NotFound, PermissionDenied

pytestmark = pytest.mark.django_db


def state_of(campaign) -> dict[str, Any]:
    return Snapshot.objects.get(campaign=campaign).state


@pytest.fixture
def alice(campaign, join, make_user):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def hero(campaign, alice) -> str:
    [cid] = [
        cid
        for cid, c in state_of(campaign)["characters"].items()
        if c["owner_user_id"] == str(alice.id)
    ]
    return cid


def dm_turn(campaign, *calls: dict[str, Any]):
    return turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="It happens.",
        options=["Go on"],
        tool_calls=list(calls),
        through_seq=0,
    )


def dm_patch(campaign, *patches: dict[str, Any]):
    result = dm_turn(
        campaign, {"name": "apply_state_patch", "args": {"reason": "r", "patches": list(patches)}}
    )
    [applied] = [e for e in result.events if e.type == "state_patch_applied"]
    return applied


def test_gm_sets_values_the_dm_may_not(campaign, gm, hero):
    for path, value in (
        (f"/characters/{hero}/max_hp", 25),
        (f"/characters/{hero}/hp", 25),
        (f"/characters/{hero}/name", "Alice the Brave"),
        (f"/characters/{hero}/ac", 15),
        ("/flags/chapter", 2),
    ):
        requested, applied = gm_set_value(
            campaign_id=campaign.id, by_user=gm, path=path, value=value, reason="fix"
        )
        assert (requested.type, applied.type) == ("state_patch_requested", "state_patch_applied")
        assert requested.actor_kind == applied.actor_kind == "gm"
        assert applied.actor_user_id == gm.id
        assert requested.payload["reason"] == "fix"
    character = state_of(campaign)["characters"][hero]
    assert (character["max_hp"], character["hp"], character["name"], character["ac"]) == (
        25,
        25,
        "Alice the Brave",
        15,
    )
    assert state_of(campaign)["flags"]["chapter"] == 2
    assert services.snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("/characters/{hero}/owner_user_id", None, "not allowed"),
        # A GM reads these (plain words, no pointer or id: issue 20).
        ("/characters/{hero}/hp", 11, "hit points cannot be above their maximum"),
        ("/characters/{hero}/max_hp", 0, "maximum hit points must be at least 1"),
        ("/members/{hero}", {"display_name": "x", "role": "gm"}, "not allowed"),
        ("/turn/answered_through_seq", 0, "not allowed"),
        ("/campaign/name", "x", "not allowed"),
        ("characters/{hero}/hp", 5, "JSON pointer"),
        ("/flags/x", float("nan"), "JSON"),
        ("/flags/x", {"a": float("inf")}, "JSON"),
    ],
)
def test_gm_values_are_still_checked(campaign, gm, hero, path, value, message):
    version = Snapshot.objects.get(campaign=campaign).version
    with pytest.raises(PatchRefused, match=message):
        gm_set_value(
            campaign_id=campaign.id, by_user=gm, path=path.format(hero=hero), value=value, reason=""
        )
    assert Snapshot.objects.get(campaign=campaign).version == version


def test_only_gms_correct(campaign, alice, hero, make_user):
    for user in (alice, make_user("stranger")):
        with pytest.raises(PermissionDenied):
            gm_set_value(campaign_id=campaign.id, by_user=user, path="/flags/x", value=1, reason="")
        with pytest.raises(PermissionDenied):
            gm_revert_event(campaign_id=campaign.id, by_user=user, seq=1)
    with pytest.raises(NotFound):
        gm_set_value(campaign_id=uuid.uuid4(), by_user=alice, path="/flags/x", value=1)


def test_revert_a_dm_patch_restores_the_values(campaign, gm, hero):
    applied = dm_patch(
        campaign,
        {"op": "replace", "path": f"/characters/{hero}/hp", "value": 2},
        {"op": "add", "path": f"/characters/{hero}/conditions/-", "value": "cursed"},
        {"op": "add", "path": "/flags/doom", "value": {"level": 3}},
    )
    before_count = Event.objects.filter(campaign=campaign).count()
    requested, compensating = gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=applied.seq)
    assert compensating.payload["reverts_seq"] == applied.seq
    assert compensating.actor_kind == "gm"
    assert f"#{applied.seq}" in requested.payload["reason"]
    character = state_of(campaign)["characters"][hero]
    assert character["hp"] == 10 and character["conditions"] == []
    assert "doom" not in state_of(campaign)["flags"]
    # The log only grew: the reverted event is still there, unchanged.
    assert Event.objects.filter(campaign=campaign).count() == before_count + 2
    assert Event.objects.get(id=applied.id).payload == applied.payload
    assert services.snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []
    with pytest.raises(Conflict, match="already reverted"):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=applied.seq)


def test_revert_an_entity_and_a_gm_value(campaign, gm, hero):
    result = dm_turn(campaign, {"name": "create_entity", "args": {"kind": "npc", "name": "Mara"}})
    created = result.events[0]
    gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=created.seq)
    assert state_of(campaign)["entities"] == {}

    _, set_event = gm_set_value(
        campaign_id=campaign.id, by_user=gm, path=f"/characters/{hero}/ac", value=18
    )
    gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=set_event.seq)
    assert state_of(campaign)["characters"][hero]["ac"] == 12


def test_what_cannot_be_reverted_is_refused_clearly(campaign, gm, alice, hero):
    joined = Event.objects.get(campaign=campaign, type="player_joined", actor_user_id=alice.id)
    with pytest.raises(Conflict, match="cannot be reverted"):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=joined.seq)
    roll = dm_turn(campaign, {"name": "roll", "args": {"formula": "1d20"}}).events[1]
    with pytest.raises(Conflict, match="changed nothing"):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=roll.seq)
    with pytest.raises(NotFound):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=9999)
    with pytest.raises(Exception, match="positive integer"):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=0)


def test_revert_refuses_when_a_later_event_changed_the_same_value(campaign, gm, hero):
    first = dm_patch(campaign, {"op": "replace", "path": f"/characters/{hero}/hp", "value": 6})
    dm_patch(campaign, {"op": "replace", "path": f"/characters/{hero}/hp", "value": 3})
    version = Snapshot.objects.get(campaign=campaign).version
    with pytest.raises(Conflict, match="changed since"):
        gm_revert_event(campaign_id=campaign.id, by_user=gm, seq=first.seq)
    assert Snapshot.objects.get(campaign=campaign).version == version
    assert state_of(campaign)["characters"][hero]["hp"] == 3
