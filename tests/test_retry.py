"""Retry keeps the dice (CONTRACTS §7): a GM asks the DM for another answer to the latest
narration; the turn's changes are undone, its actions answered again with the same rolls,
and what the retracted answer said leaves the DM's prompt and the summaries."""

from __future__ import annotations

import json

import pytest

from campaigns.retractions import narration_retract
from campaigns.selectors import events_after, snapshot_get
from memory.summaries import story_lines
from orchestrator.receivers import turns_deferred
from orchestrator.selectors import turn_context_get, turn_owed
from orchestrator.services import turn_run
from rpgai.errors import Conflict, PermissionDenied
from tests.openai_server import Answer

pytestmark = pytest.mark.django_db(transaction=True)

ROLL_FIRST = {
    "narration": "",
    "tool_calls": [
        {"name": "roll", "args": {"formula": "1d20+5", "reason": "Alice's attack", "dc": 12}}
    ],
    "options": [],
}


def narrate(text: str, character_id: str | None = None, hp: int | None = None) -> dict:
    calls = []
    if character_id is not None:
        calls.append(
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "the goblin's counterblow",
                    "patches": [
                        {"op": "replace", "path": f"/characters/{character_id}/hp", "value": hp}
                    ],
                },
            }
        )
    return {"narration": text, "tool_calls": calls, "options": ["Fight on", "Flee"]}


def character_of(campaign, user) -> tuple[str, dict]:
    state = snapshot_get(campaign_id=campaign.id).state
    return next(
        (cid, c) for cid, c in state["characters"].items() if c["owner_user_id"] == str(user.id)
    )


def narrations(campaign) -> list:
    return [
        e for e in events_after(campaign_id=campaign.id, limit=1000) if e.type == "dm_narration"
    ]


def test_a_retry_undoes_the_turn_and_answers_again_with_the_same_rolls(
    campaign, gm, alice, openai_server, act
):
    character_id, character = character_of(campaign, alice)
    hp = character["hp"]
    openai_server.script(
        Answer(ROLL_FIRST),
        Answer(narrate("The goblin's club cracks your ribs.", character_id, hp - 4)),
    )
    act(campaign, alice, "I attack the goblin")
    first = turn_run(campaign_id=campaign.id)
    assert character_of(campaign, alice)[1]["hp"] == hp - 4
    [old] = narrations(campaign)
    [rolled] = [e for e in events_after(campaign_id=campaign.id) if e.type == "roll_result"]

    with turns_deferred():  # the test runs the new turn itself
        retracted, *compensation = narration_retract(
            campaign_id=campaign.id, by_user=gm, narration_seq=old.seq
        )
    assert retracted.type == "dm_narration_retracted"
    assert retracted.payload["turn_id"] == first.turn_id
    assert character_of(campaign, alice)[1]["hp"] == hp  # restored before the new turn
    assert [e.type for e in compensation] == ["state_patch_requested", "state_patch_applied"]
    assert turn_owed(campaign_id=campaign.id) is not None  # the same action is owed again

    openai_server.script(Answer(narrate("You duck the club and drive the goblin back.")))
    retried = turn_run(campaign_id=campaign.id)
    assert retried.turn_id != first.turn_id and retried.steps == 2
    # No new roll: the new answer was told the same result, as a rolling step's.
    assert [
        e.seq for e in events_after(campaign_id=campaign.id, limit=1000) if e.type == "roll_result"
    ] == [rolled.seq]
    body = openai_server.requests[-1].body
    assert str(rolled.payload["total"]) in body["messages"][-1]["content"]
    assert "cracks your ribs" not in json.dumps(body)  # the retracted answer is gone
    latest = narrations(campaign)[-1]
    assert latest.payload["text"] == "You duck the club and drive the goblin back."

    # Later turns, and the summaries, do not tell the retracted answer either; nor do
    # they take its rolls for their own.
    act(campaign, alice, "I look around")
    openai_server.script(Answer(narrate("Silence returns.")))
    later = turn_run(campaign_id=campaign.id)
    assert later.steps == 1
    assert "cracks your ribs" not in json.dumps(openai_server.requests[-1].body)
    events = events_after(campaign_id=campaign.id, limit=1000)
    story = " ".join(line.text for line in story_lines(events, {}))
    assert "cracks your ribs" not in story and "drive the goblin back" in story
    answered, through = 0, events[-1].seq
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    assert all("cracks your ribs" not in json.dumps(e.payload) for e in context.recent)


def test_only_the_latest_narration_before_any_new_action_and_only_by_a_gm(
    campaign, gm, alice, openai_server, act
):
    openai_server.default = Answer(narrate("The door creaks open."))
    act(campaign, alice, "I open the door")
    turn_run(campaign_id=campaign.id)
    [first] = narrations(campaign)
    with pytest.raises(PermissionDenied):
        narration_retract(campaign_id=campaign.id, by_user=alice, narration_seq=first.seq)

    act(campaign, alice, "I step through")
    with pytest.raises(Conflict, match="a player acted"):
        narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=first.seq)
    turn_run(campaign_id=campaign.id)
    with pytest.raises(Conflict):
        narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=first.seq)

    latest = narrations(campaign)[-1]
    with turns_deferred():
        narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=latest.seq)
    with pytest.raises(Conflict, match="already"):
        narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=latest.seq)


def test_a_turn_that_set_the_first_hidden_flag_and_took_hp_can_be_retried(
    campaign, gm, alice, openai_server, act
):
    """Its undo removes the flag (not /hidden, which no GM patch may remove), for the GMs
    only, and restores the hit points in a patch every player sees."""
    from tests.reads import events_seen_by

    character_id, character = character_of(campaign, alice)
    answer = narrate("A shadow watches you; the dart stings.", character_id, character["hp"] - 2)
    answer["tool_calls"].append(
        {
            "name": "apply_state_patch",
            "args": {
                "reason": "the watcher",
                "patches": [{"op": "add", "path": "/hidden/flags", "value": {"watcher": "Vex"}}],
            },
        }
    )
    openai_server.script(Answer(answer))
    act(campaign, alice, "I step into the alley")
    turn_run(campaign_id=campaign.id)
    [old] = narrations(campaign)
    with turns_deferred():
        events = narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=old.seq)
    state = snapshot_get(campaign_id=campaign.id).state
    assert "watcher" not in json.dumps(state.get("hidden", {}))
    assert state["characters"][character_id]["hp"] == character["hp"]
    applied = [e for e in events if e.type == "state_patch_applied"]
    assert sorted(e.visibility["kind"] for e in applied) == ["all", "gm"]
    seen = json.dumps(events_seen_by(campaign, alice))
    assert "Vex" not in seen and f"/characters/{character_id}/hp" in seen


def test_a_retry_of_the_fake_dm_tells_the_same_dice_another_way(campaign, gm, alice, settings, act):
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10**6
    act(campaign, alice, "I attack the goblin")
    turn_run(campaign_id=campaign.id)
    [first] = narrations(campaign)
    [roll] = [e for e in events_after(campaign_id=campaign.id) if e.type == "roll_result"]
    told = f"{roll.payload['total']} against AC {roll.payload['dc']}"
    with turns_deferred():
        narration_retract(campaign_id=campaign.id, by_user=gm, narration_seq=first.seq)
    turn_run(campaign_id=campaign.id)
    second = narrations(campaign)[-1]
    assert second.payload["text"] != first.payload["text"]
    assert told in first.payload["text"] and told in second.payload["text"]
