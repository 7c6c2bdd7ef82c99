"""Forks: a GM forks a campaign at a seq; the fork has exactly the first N events' effect,
the same members, a fresh dice seed and a link back; the original is untouched."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns import selectors, services
from campaigns.forks import campaign_fork
from campaigns.models import Campaign, DiceSeed, Event, Membership, Snapshot
from campaigns.tools import gm_set_value, roll_make
from rpgai.errors import DomainError, PermissionDenied

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def story(campaign, join, make_user, gm):
    """A short campaign: a player joins, acts (the fake DM answers), the GM changes a value."""
    alice = make_user("alice")
    alice_m = join(alice, "Alice")
    services.player_action_submit(
        membership=alice_m, action_id=uuid.uuid4(), text="I open the door"
    )
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    [character_id] = [
        cid for cid, c in state["characters"].items() if c["owner_user_id"] == str(alice.id)
    ]
    fork_point = selectors.snapshot_get(campaign_id=campaign.id).version
    gm_set_value(
        campaign_id=campaign.id, by_user=gm, path=f"/characters/{character_id}/hp", value=3
    )
    return {"alice": alice, "alice_m": alice_m, "character_id": character_id, "at": fork_point}


def _log(campaign_id) -> list[tuple]:
    return [
        (e.seq, e.type, e.payload, e.visibility, e.actor_kind, e.actor_user_id)
        for e in Event.objects.filter(campaign_id=campaign_id).order_by("seq")
    ]


def _without_dice(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "dice"}


def test_a_fork_at_seq_n_has_exactly_the_first_n_events_effect(campaign, gm, story):
    at = story["at"]
    original_log = _log(campaign.id)
    original_snapshot = Snapshot.objects.get(campaign=campaign)
    assert any(e.type == "dm_narration" for e in Event.objects.filter(campaign=campaign))

    fork = campaign_fork(campaign_id=campaign.id, at_seq=at, by_user=gm)

    assert fork.id != campaign.id
    assert (fork.forked_from_id, fork.forked_at_seq) == (campaign.id, at)
    fork_log = _log(fork.id)
    assert fork_log[:at] == original_log[:at]  # same seqs, types, payloads, visibility, actors
    assert set(Event.objects.filter(campaign=fork).values_list("id", flat=True)).isdisjoint(
        Event.objects.filter(campaign=campaign).values_list("id", flat=True)
    )
    assert [e[1] for e in fork_log[at:]] == ["dice_seed_committed", "campaign_forked"]
    assert fork_log[-1][2] == {"forked_from": str(campaign.id), "forked_at_seq": at}

    expected = services.fold_events(Event.objects.filter(campaign=campaign, seq__lte=at))
    fork_state = Snapshot.objects.get(campaign=fork).state
    assert _without_dice(fork_state) == _without_dice(expected)
    # The GM's later change is not in the fork; it is in the original.
    cid = story["character_id"]
    assert fork_state["characters"][cid]["hp"] != 3
    assert Snapshot.objects.get(campaign=campaign).state["characters"][cid]["hp"] == 3
    # A fresh seed: a new commitment, and the original's secret is nowhere in the fork.
    assert fork_state["dice"]["seed_hash"] not in {
        e[2].get("seed_hash") for e in original_log if e[1] == "dice_seed_committed"
    }
    original_secrets = set(
        DiceSeed.objects.filter(campaign=campaign).values_list("secret", flat=True)
    )
    fork_secrets = set(DiceSeed.objects.filter(campaign=fork).values_list("secret", flat=True))
    assert len(fork_secrets) == 1 and fork_secrets.isdisjoint(original_secrets)
    # The same members, with the same roles.
    members = lambda c: set(  # noqa: E731
        Membership.objects.filter(campaign=c).values_list("user_id", "role", "display_name")
    )
    assert members(fork) == members(campaign)
    # The original is untouched, and its re-fold still matches.
    assert _log(campaign.id) == original_log
    after = Snapshot.objects.get(campaign=campaign)
    assert (after.version, after.state) == (original_snapshot.version, original_snapshot.state)
    assert services.snapshots_rebuild(campaign_id=fork.id, fix=False)[1] == []


def test_the_fork_rolls_with_its_own_seed_and_goes_its_own_way(campaign, gm, story):
    fork = campaign_fork(campaign_id=campaign.id, at_seq=story["at"], by_user=gm)
    [_, result] = roll_make(
        campaign_id=fork.id,
        formula="1d20",
        reason="luck",
        requested_by="player",
        actor_kind="player",
        actor_user_id=story["alice"].id,
    )
    fork_seed = DiceSeed.objects.get(campaign=fork)
    assert result.payload["seed_id"] == str(fork_seed.seed_id)
    original_version = Snapshot.objects.get(campaign=campaign).version
    fork_m = selectors.membership_get(campaign_id=fork.id, user_id=story["alice"].id)
    services.player_action_submit(membership=fork_m, action_id=uuid.uuid4(), text="I go left")
    assert Snapshot.objects.get(campaign=campaign).version == original_version


def test_only_a_gm_forks_and_only_within_the_log(campaign, gm, story):
    with pytest.raises(PermissionDenied):
        campaign_fork(campaign_id=campaign.id, at_seq=1, by_user=story["alice"])
    version = Snapshot.objects.get(campaign=campaign).version
    for bad in (0, -1, version + 1, "3", True):
        with pytest.raises(DomainError):
            campaign_fork(campaign_id=campaign.id, at_seq=bad, by_user=gm)
    assert Campaign.objects.count() == 1


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def test_the_fork_api(campaign, gm, story, make_user):
    url = f"/api/campaigns/{campaign.id}/fork"
    response = _client(gm).post(url, {"at_seq": story["at"]}, format="json")
    assert response.status_code == 201, response.content
    fork = Campaign.objects.get(id=response.json()["id"])
    assert fork.forked_from_id == campaign.id and fork.forked_at_seq == story["at"]
    # The GM (and the player) can open the fork at once.
    assert _client(story["alice"]).get(f"/api/campaigns/{fork.id}/snapshot").status_code == 200

    version = Snapshot.objects.get(campaign=campaign).version
    for bad in ({"at_seq": 0}, {"at_seq": version + 1}, {"at_seq": "x"}, {}, ["x"]):
        response = _client(gm).post(url, bad, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert "code" in response.json()
    assert _client(story["alice"]).post(url, {"at_seq": 1}, format="json").status_code == 403
    assert _client(make_user("mallory")).post(url, {"at_seq": 1}, format="json").status_code in (
        403,
        404,
    )
    assert _client().post(url, {"at_seq": 1}, format="json").status_code == 401
    assert _client(gm).post(f"/api/campaigns/{uuid.uuid4()}/fork", {"at_seq": 1}).status_code in (
        403,
        404,
    )
    assert Campaign.objects.count() == 2


def test_the_admin_forks_at_the_selected_event(admin_client, campaign, story):
    event = Event.objects.get(campaign=campaign, seq=story["at"])
    response = admin_client.post(
        reverse("admin:campaigns_event_changelist"),
        {"action": "fork_at_event", "_selected_action": [str(event.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    fork = Campaign.objects.get(forked_from=campaign)
    assert fork.forked_at_seq == story["at"]
    assert "Forked at seq" in response.content.decode()
