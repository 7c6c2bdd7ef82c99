"""Retry keeps the dice, over HTTP (CONTRACTS §7): `POST /api/campaigns/<id>/narrations/<seq>/
retry` (GM) takes back the latest narration and the DM answers the same actions again with
the same rolls. 202 with the appended events; 409 in plain words once a player acted after
it, when it is not the latest, or when it was retried already; 403 for players and
outsiders; 404 for what does not exist. The fake DM plays the turns (inline: no event loop
runs in these tests)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.services import budget_set
from campaigns.models import Event, Snapshot
from tests.reads import api_as, events_seen_by, snapshot_seen_by
from tests.test_money_privacy import CAP, no_money_in, spent_today

pytestmark = pytest.mark.django_db(transaction=True)

ACTION = "I attack the goblin and pick up the crown"


def retry_url(campaign: Any, seq: int) -> str:
    return f"/api/campaigns/{campaign.id}/narrations/{seq}/retry"


def act(campaign: Any, user: Any, text: str) -> None:
    """A player's action over HTTP; the fake DM answers it before the call returns."""
    response = api_as(user).post(
        f"/api/campaigns/{campaign.id}/actions",
        {"action_id": str(uuid.uuid4()), "text": text},
        format="json",
    )
    assert response.status_code == 202, response.content


def of_type(campaign: Any, type_name: str) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign.id, type=type_name).order_by("seq"))


def inventory_of(campaign: Any, user: Any) -> list[str]:
    state = snapshot_seen_by(campaign, user)["state"]
    [character] = [c for c in state["characters"].values() if c["owner_user_id"] == str(user.id)]
    return character["inventory"]


def test_the_gm_retries_the_latest_narration_and_the_dm_answers_again_with_the_same_dice(
    campaign, gm, alice, bob
):
    act(campaign, alice, ACTION)
    [old] = of_type(campaign, "dm_narration")
    [rolled] = of_type(campaign, "roll_result")
    assert inventory_of(campaign, alice) == ["crown"]
    total = str(rolled.payload["total"])
    assert total in old.payload["text"]

    response = api_as(gm).post(retry_url(campaign, old.seq))
    assert response.status_code == 202, response.content
    retracted, *compensation = response.json()["events"]
    assert retracted["type"] == "dm_narration_retracted"
    assert retracted["payload"]["narration_seq"] == old.seq
    assert retracted["payload"]["turn_id"] == old.payload["turn_id"]
    assert retracted["payload"]["by_user_id"] == str(gm.id)
    assert retracted["actor"] == {"kind": "gm", "user_id": str(gm.id)}
    # The crown the turn gave is taken back by a GM patch (public: nothing hidden in it).
    assert [e["type"] for e in compensation] == ["state_patch_requested", "state_patch_applied"]
    assert all(e["visibility"] == {"kind": "all"} for e in compensation)
    assert compensation[-1]["payload"]["patches"][0]["op"] == "remove"

    # The new answer has come (the turn ran inline on commit): another turn, after the
    # retraction, told the same roll, which was not rolled again.
    old_narration, new = of_type(campaign, "dm_narration")
    assert old_narration.seq == old.seq
    assert new.seq > max(e["seq"] for e in response.json()["events"])
    assert new.payload["turn_id"] != old.payload["turn_id"]
    assert [e.seq for e in of_type(campaign, "roll_result")] == [rolled.seq]
    assert total in new.payload["text"]
    assert inventory_of(campaign, alice) == ["crown"]  # taken back, then given again

    # The whole table sees the retraction (the room collapses the old narration).
    for reader in (alice, bob):
        seen = events_seen_by(campaign, reader)
        assert retracted["seq"] in {e["seq"] for e in seen}
        assert new.seq in {e["seq"] for e in seen}


def test_only_the_latest_narration_before_any_new_action_and_only_once(campaign, gm, alice):
    act(campaign, alice, "I open the door")
    [first] = of_type(campaign, "dm_narration")

    # A player acted after it.
    act(campaign, alice, "I step through")
    before = Snapshot.objects.get(campaign=campaign).version
    response = api_as(gm).post(retry_url(campaign, first.seq))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "a player acted after this narration",
        "code": "player_acted",
    }
    assert Snapshot.objects.get(campaign=campaign).version == before

    # Not the latest: the GM's direction got a narration of its own since (no action).
    direction = api_as(gm).post(
        f"/api/campaigns/{campaign.id}/directions", {"text": "The bell tolls."}, format="json"
    )
    assert direction.status_code == 201
    *_, second, third = of_type(campaign, "dm_narration")
    response = api_as(gm).post(retry_url(campaign, second.seq))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "only the latest narration can be retried",
        "code": "not_latest",
    }

    # The latest may be retried, once.
    assert api_as(gm).post(retry_url(campaign, third.seq)).status_code == 202
    before = Snapshot.objects.get(campaign=campaign).version
    again = api_as(gm).post(retry_url(campaign, third.seq))
    assert again.status_code == 409
    assert again.json() == {
        "detail": "this narration was already retried",
        "code": "already_retried",
    }
    assert Snapshot.objects.get(campaign=campaign).version == before


def test_players_outsiders_and_strangers_are_refused(campaign, gm, alice, make_user):
    act(campaign, alice, "I open the door")
    [narration] = of_type(campaign, "dm_narration")
    before = Snapshot.objects.get(campaign=campaign).version

    player = api_as(alice).post(retry_url(campaign, narration.seq))
    assert player.status_code == 403
    assert player["Content-Type"].startswith("application/json")
    assert player.json() == {"detail": "only the campaign's GM may do this", "code": "gm_only"}
    outsider = api_as(make_user()).post(retry_url(campaign, narration.seq))
    assert outsider.status_code == 403
    assert outsider.json()["code"] == "not_a_member"
    anonymous = APIClient().post(retry_url(campaign, narration.seq))
    assert anonymous.status_code in (401, 403)
    # Nothing happened, and the players never learn what does or does not exist.
    assert api_as(alice).post(retry_url(campaign, 10**6)).status_code == 403
    assert Snapshot.objects.get(campaign=campaign).version == before
    assert of_type(campaign, "dm_narration_retracted") == []


def test_what_does_not_exist_is_a_404(campaign, gm, alice):
    act(campaign, alice, "I open the door")
    [action] = of_type(campaign, "player_action")
    client = api_as(gm)
    for url in (
        retry_url(campaign, action.seq),  # an event, not a narration
        retry_url(campaign, 10**6),
        retry_url(campaign, 0),
        retry_url(campaign, 10**30),
        f"/api/campaigns/{uuid.uuid4()}/narrations/1/retry",
    ):
        response = client.post(url)
        assert response.status_code == 404, (url, response.content)
        assert set(response.json()) == {"detail", "code"}
    assert client.get(retry_url(campaign, action.seq)).status_code == 405
    assert of_type(campaign, "dm_narration_retracted") == []


def test_a_retried_turn_stopped_by_the_budget_tells_players_no_figures(
    campaign, gm, alice, bob, settings, tmp_path
):
    act(campaign, alice, ACTION)
    [narration] = of_type(campaign, "dm_narration")
    # Then the day's money runs out: the new answer is refused by the hard cap.
    path = tmp_path / "prices.toml"
    path.write_text('[models."fake-dm"]\ninput = "20.00"\noutput = "80.00"\n')
    settings.PRICES_FILE = str(path)
    budget_set(campaign_id=campaign.id, daily_cap_usd=CAP, hard_stop=True)
    spent_today(campaign, "0.0900")

    response = api_as(gm).post(retry_url(campaign, narration.seq))
    assert response.status_code == 202, response.content
    no_money_in(response.json()["events"])
    [failed] = of_type(campaign, "turn_failed")
    assert failed.payload["code"] == "budget_exceeded"
    for player in (alice, bob):
        seen = events_seen_by(campaign, player)
        assert "dm_narration_retracted" in {e["type"] for e in seen}
        no_money_in(seen)
    # The GM has the figures, where only GMs look.
    gm_seen = events_seen_by(campaign, gm)
    assert "budget_refused" in {e["type"] for e in gm_seen}
