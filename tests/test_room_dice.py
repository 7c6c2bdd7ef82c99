"""Rolls carry their target (CONTRACTS §7): the DM's `roll` tool and a member's own roll
(HTTP and WebSocket) take a `dc`; every `roll_result` says `dc` and `success`; the
`roll_requested` before it never tells the DC; a member's roll may be private. And a DM
turn may roll before it narrates: `turn_rolls_commit` executes only the rolls, under the
turn's `turn_id`, and `turn_rolls_logged` reads them back for a redelivered turn."""

from __future__ import annotations

import json
import uuid

import pytest

from campaigns import selectors, services
from campaigns.dice import roll_compute
from campaigns.events import InvalidEvent, NewEvent, validate_payload
from campaigns.models import DiceSeed, Event, Snapshot
from campaigns.tools import roll_make, turn_commit, turn_rolls_commit
from tests.reads import api_as
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


def _events(campaign, *types):
    return list(Event.objects.filter(campaign=campaign, type__in=types).order_by("seq"))


def _recomputed(campaign, result) -> int:
    seed = DiceSeed.objects.get(campaign=campaign, seed_id=result.payload["seed_id"])
    return roll_compute(
        formula=result.payload["formula"], seed=seed.secret, roll_id=result.payload["roll_id"]
    ).total


# --- The DM's roll tool ------------------------------------------------------------------------


def test_the_dm_tool_roll_takes_a_dc_told_only_with_the_result(campaign):
    turn_id = str(uuid.uuid4())
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=turn_id,
        narration="The lock clicks, or does not.",
        options=["Go on"],
        tool_calls=[
            {"name": "roll", "args": {"formula": "1d20+3", "reason": "Pick the lock", "dc": 15}},
            {"name": "roll", "args": {"formula": "1d6", "reason": "Damage"}},
        ],
        through_seq=0,
    )
    assert result.rejections == []
    requested = [e for e in result.events if e.type == "roll_requested"]
    results = [e for e in result.events if e.type == "roll_result"]
    assert len(requested) == len(results) == 2
    for event in requested:
        assert "dc" not in event.payload and "success" not in event.payload
        assert "15" not in json.dumps(event.payload["reason"])
    check, damage = (r.payload for r in results)
    assert check["dc"] == 15 and check["success"] is (check["total"] >= 15)
    assert check["total"] == _recomputed(campaign, results[0])
    assert damage["dc"] is None and damage["success"] is None
    # Every event of the turn carries its turn_id, the narration last.
    assert [e.type for e in result.events][-1] == "dm_narration"
    assert {e.payload.get("turn_id") for e in result.events} == {turn_id}


@pytest.mark.parametrize("dc", [0, 41, -3, "15", 15.5, True, None])
def test_a_dc_out_of_range_or_not_a_number_refuses_only_that_roll(campaign, dc):
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="Something happens.",
        options=["Go on"],
        tool_calls=[{"name": "roll", "args": {"formula": "1d20", "dc": dc}}],
        through_seq=0,
    )
    rolled = [e for e in result.events if e.type == "roll_result"]
    if dc is None:
        assert len(rolled) == 1 and rolled[0].payload["dc"] is None
        return
    assert rolled == []
    [rejection] = result.rejections
    assert rejection.name == "roll" and "dc" in rejection.reason
    narration = result.events[-1]
    assert narration.type == "dm_narration"
    assert narration.payload["tool_errors"][0]["reason"] == rejection.reason


def test_success_is_total_at_least_dc_over_many_rolls(campaign):
    calls = [{"name": "roll", "args": {"formula": "1d20", "dc": 1 + i % 20}} for i in range(16)]
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="Dice everywhere.",
        options=["Go on"],
        tool_calls=calls,
        through_seq=0,
    )
    results = [e.payload for e in result.events if e.type == "roll_result"]
    assert len(results) == 16
    assert all(p["success"] is (p["total"] >= p["dc"]) for p in results)
    assert {p["success"] for p in results} == {True, False}


# --- The payload: old events still replay, a wrong success is refused --------------------------


def test_a_roll_result_logged_before_dcs_existed_still_folds_imports_and_verifies(campaign, gm):
    seed = DiceSeed.objects.get(campaign=campaign)
    roll_id = uuid.uuid4()
    outcome = roll_compute(formula="1d20+1", seed=seed.secret, roll_id=roll_id)
    old = {
        "roll_id": str(roll_id),
        "seed_id": str(seed.seed_id),
        "formula": outcome.formula,
        "total": outcome.total,
        "detail": outcome.detail,
        "dice": outcome.dice,
    }
    # The shape the code before DCs wrote: no dc, no success. Accepted as it is...
    services.events_append(campaign_id=campaign.id, events=[NewEvent("roll_result", old, "dm")])
    stored = Event.objects.get(campaign=campaign, type="roll_result")
    assert stored.payload["dc"] is None and stored.payload["success"] is None
    assert services.snapshots_rebuild(campaign_id=campaign.id, fix=False) == (1, [])
    # ... and in an export made by the old code (no such keys at all), which imports,
    # folds to the same state, and reads back as a roll without a target.
    raw = [json.loads(line) for line in services.campaign_export(campaign_id=campaign.id)]
    for envelope in raw:
        if envelope["type"] == "roll_result":
            del envelope["payload"]["dc"], envelope["payload"]["success"]
    copy = services.campaign_import(lines=[json.dumps(e) for e in raw], owner=gm)
    [copied] = _events(copy, "roll_result")
    assert copied.payload["total"] == outcome.total and copied.payload["success"] is None
    assert services.snapshots_rebuild(campaign_id=copy.id, fix=False) == (1, [])
    [summary] = selectors.roll_summaries([copied])
    assert (summary["dc"], summary["success"], summary["total"]) == (None, None, outcome.total)


@pytest.mark.parametrize(
    ("dc", "success", "ok"),
    [(10, None, True), (None, True, False), (30, True, False), (1, False, False), (1, True, True)],
)
def test_a_roll_result_whose_success_does_not_follow_its_dice_is_refused(dc, success, ok):
    payload = {
        "roll_id": str(uuid.uuid4()),
        "seed_id": str(uuid.uuid4()),
        "formula": "1d20",
        "total": 12,
        "detail": "1d20 (12) = 12",
        "dc": dc,
        "success": success,
    }
    if not ok:
        with pytest.raises(InvalidEvent):
            validate_payload("roll_result", payload)
        return
    stored, _ = validate_payload("roll_result", payload)
    assert stored["success"] is (dc <= 12)


def test_a_roll_requested_never_carries_the_dc():
    payload = {"roll_id": str(uuid.uuid4()), "formula": "1d20", "requested_by": "dm", "dc": 12}
    with pytest.raises(InvalidEvent):
        validate_payload("roll_requested", payload)


# --- A member's own roll -----------------------------------------------------------------------


def test_a_player_rolls_with_a_dc_over_http(campaign, alice):
    response = api_as(alice).post(
        f"/api/campaigns/{campaign.id}/rolls",
        {"formula": "1d20+2", "reason": "Climb", "dc": 12},
        format="json",
    )
    assert response.status_code == 201
    requested, result = response.json()
    assert "dc" not in requested["payload"]
    assert result["payload"]["dc"] == 12
    assert result["payload"]["success"] is (result["payload"]["total"] >= 12)
    assert result["visibility"] == {"kind": "all"}


@pytest.mark.parametrize(
    "body",
    [
        {"formula": "1d20", "dc": 0},
        {"formula": "1d20", "dc": 41},
        {"formula": "1d20", "dc": "15"},
        {"formula": "1d20", "dc": True},
        {"formula": "1d20", "dc": 12.5},
        {"formula": "1d20", "private": "yes"},
    ],
)
def test_a_bad_dc_or_private_is_a_plain_400(campaign, alice, body):
    before = Snapshot.objects.get(campaign=campaign).version
    response = api_as(alice).post(f"/api/campaigns/{campaign.id}/rolls", body, format="json")
    assert response.status_code == 400, response.content
    assert "detail" in response.json()
    assert Snapshot.objects.get(campaign=campaign).version == before


def test_a_private_roll_is_seen_by_its_roller_and_the_gms_only(campaign, gm, alice, bob):
    response = api_as(alice).post(
        f"/api/campaigns/{campaign.id}/rolls",
        {"formula": "1d20", "reason": "Sense motive", "dc": 14, "private": True},
        format="json",
    )
    assert response.status_code == 201
    requested, result = response.json()
    mine = {"kind": "users", "user_ids": [str(alice.id)]}
    assert requested["visibility"] == result["visibility"] == mine

    def seen_by(user) -> set[int]:
        events = api_as(user).get(f"/api/campaigns/{campaign.id}/events?limit=1000").json()
        return {e["seq"] for e in events}

    both = {requested["seq"], result["seq"]}
    assert both <= seen_by(alice) and both <= seen_by(gm)
    assert not both & seen_by(bob)


async def test_a_player_rolls_with_a_dc_privately_over_the_socket(campaign, alice, bob):
    mine, theirs = Room(campaign.id, alice), Room(campaign.id, bob)
    await mine.open()
    await theirs.open()
    await mine.hello(0)
    await theirs.hello(0)
    action_id = str(uuid.uuid4())
    await mine.send(
        {
            "type": "client.roll",
            "formula": "1d20+5",
            "reason": "Perception",
            "dc": 18,
            "private": True,
            "action_id": action_id,
        }
    )
    got: list[dict] = []
    while not (
        any(m["type"] == "server.ack" for m in got)
        and any(e["type"] == "roll_result" for e in events_of(got))
    ):
        got.append(await mine.recv())
    [ack] = [m for m in got if m["type"] == "server.ack"]
    [result] = [e for e in events_of(got) if e["type"] == "roll_result"]
    assert ack["action_id"] == action_id and ack["seq"] == result["seq"]
    assert result["payload"]["dc"] == 18
    assert result["payload"]["success"] is (result["payload"]["total"] >= 18)
    assert result["visibility"] == {"kind": "users", "user_ids": [str(alice.id)]}
    assert await theirs.nothing(0.5)
    # A bad DC: a plain error, naming the roll, and nothing appended.
    await mine.send({"type": "client.roll", "formula": "1d20", "dc": 99, "action_id": action_id})
    error = (await mine.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["action_id"] == action_id
    assert error["detail"] == "the DC is a whole number from 1 to 40"
    await mine.send({"type": "client.roll", "formula": "1d20+", "action_id": action_id})
    error = (await mine.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["code"] == "invalid_message" and "formula" in error["detail"]
    await mine.close()
    await theirs.close()


# --- Rolls before the narration: turn_rolls_commit and turn_rolls_logged -----------------------


def test_turn_rolls_commit_rolls_under_the_turn_and_the_log_reads_them_back(campaign, alice):
    turn_id = str(uuid.uuid4())
    before = Snapshot.objects.get(campaign=campaign).version
    rolled = turn_rolls_commit(
        campaign_id=campaign.id,
        turn_id=turn_id,
        rolls=[
            {"formula": "1d20+4", "reason": "Sneak past the guard", "dc": 13},
            {"formula": "nonsense(", "reason": "bad"},
            {"formula": "1d20", "reason": "Alice's hunch", "dc": 10, "private_to": str(alice.id)},
            {"formula": "2d6", "reason": "no target"},
            {"formula": "1d20", "private_to": str(uuid.uuid4())},
        ],
    )
    assert [r["error"] is None for r in rolled] == [True, False, True, True, False]
    assert "formula" in rolled[1]["error"] and "private_to" in rolled[4]["error"]
    assert rolled[1]["roll_id"] is None and rolled[1]["total"] is None
    events = list(Event.objects.filter(campaign=campaign, seq__gt=before).order_by("seq"))
    # Only rolls: no narration, no state change; each request before its result.
    assert [e.type for e in events] == ["roll_requested", "roll_result"] * 3
    assert all(e.actor_kind == "dm" and e.payload["turn_id"] == turn_id for e in events)
    assert Snapshot.objects.get(campaign=campaign).state["turn"]["answered_through_seq"] == 0
    results = [e for e in events if e.type == "roll_result"]
    good = [r for r in rolled if r["error"] is None]
    for summary, event in zip(good, results, strict=True):
        assert summary["seq"] == event.seq and summary["roll_id"] == event.payload["roll_id"]
        assert summary["total"] == event.payload["total"] == _recomputed(campaign, event)
        assert summary["detail"] == event.payload["detail"]
        assert summary["success"] is event.payload["success"]
    assert good[0]["dc"] == 13 and good[0]["success"] is (good[0]["total"] >= 13)
    assert good[0]["reason"] == "Sneak past the guard" and good[0]["private_to"] is None
    assert good[1]["private_to"] == str(alice.id)
    assert results[1].visibility == {"kind": "users", "user_ids": [str(alice.id)]}
    assert good[2]["dc"] is None and good[2]["success"] is None
    # A redelivered turn reads the same rolls back, in order, and rolls nothing.
    logged = selectors.turn_rolls_logged(campaign_id=campaign.id, turn_id=turn_id)
    assert logged == good
    assert (
        selectors.turn_rolls_logged(
            campaign_id=campaign.id, turn_id=turn_id, after_seq=good[0]["seq"]
        )
        == good[1:]
    )
    assert selectors.turn_rolls_logged(campaign_id=campaign.id, turn_id=str(uuid.uuid4())) == []
    assert selectors.turn_rolls_logged(campaign_id=campaign.id, turn_id="not-a-uuid") == []
    # The narrating answer, committed later under the same turn, does not disturb them.
    turn_commit(
        campaign_id=campaign.id,
        turn_id=turn_id,
        narration="The guard never turns.",
        options=["Go on"],
        tool_calls=[],
        through_seq=0,
    )
    assert selectors.turn_rolls_logged(campaign_id=campaign.id, turn_id=turn_id) == good


def test_turn_rolls_commit_with_only_refused_rolls_appends_nothing(campaign):
    before = Snapshot.objects.get(campaign=campaign).version
    rolled = turn_rolls_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        rolls=[{"formula": "99999d6"}, "not an object", {"formula": "1d20", "dc": 50}],
    )
    assert len(rolled) == 3 and all(r["error"] for r in rolled)
    assert Snapshot.objects.get(campaign=campaign).version == before


def test_roll_make_keeps_its_old_callers(campaign, alice):
    requested, result = roll_make(
        campaign_id=campaign.id,
        formula="1d8",
        reason="",
        requested_by="player",
        actor_kind="player",
        actor_user_id=alice.id,
    )
    assert result.payload["dc"] is None and result.payload["success"] is None
    assert "turn_id" not in result.payload and "turn_id" not in requested.payload
