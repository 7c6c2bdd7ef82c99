"""Two-step turns (CONTRACTS §7): the DM rolls first, reads the results, then narrates.

Against a scripted OpenAI-compatible server over real HTTP (tests/openai_server.py), in
the structured-output and the tool output modes; a turn cut short after its rolls goes on
with them; the fake DM's wording follows `success` every time."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from asgiref.sync import async_to_sync

from campaigns.selectors import events_after
from orchestrator.services import aturn_run, turn_lock_release, turn_run
from tests.openai_server import Answer

pytestmark = pytest.mark.django_db(transaction=True)

NARRATION = "The blade finds the gap in the goblin's armour; it staggers back, howling."
ROLL_FIRST = {
    "narration": "",
    "tool_calls": [
        {"name": "roll", "args": {"formula": "1d20+5", "reason": "Alice's attack", "dc": 15}}
    ],
    "options": [],
}
NARRATE = {
    "narration": NARRATION,
    "tool_calls": [],
    "options": ["Press the attack", "Fall back"],
}


def turn_events(campaign, after_seq: int):
    return [e for e in events_after(campaign_id=campaign.id, after_seq=after_seq)]


def roll_results(message: str) -> list[dict]:
    """The rolls in the ROLL RESULTS block of a message (one JSON object per line)."""
    block = re.search(r"BEGIN ROLL RESULTS>>>\n(.*?)\n<<<", message, re.DOTALL)
    assert block, message
    return [json.loads(line) for line in block.group(1).split("\n")]


def last_user_message(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize("mode", ["auto", "tool"])
def test_a_roll_first_answer_gets_its_results_and_the_narration_follows_them(
    campaign, alice, openai_server, settings, mode, act
):
    settings.DM_OUTPUT_MODE = mode
    openai_server.script(Answer(ROLL_FIRST), Answer(NARRATE))
    action = act(campaign, alice, "I attack the goblin")
    deltas: list[str] = []
    outcome = turn_run(campaign_id=campaign.id, on_delta=deltas.append)
    assert outcome.failed_code is None and not outcome.fallback and outcome.steps == 2
    assert "".join(deltas) == NARRATION  # only the narrating step streams

    events = turn_events(campaign, action.seq)
    types = [e.type for e in events]
    assert types.index("roll_result") < types.index("dm_narration")
    [roll] = [e for e in events if e.type == "roll_result"]
    [narration] = [e for e in events if e.type == "dm_narration"]
    assert narration.payload["text"] == NARRATION  # the second answer's
    assert roll.payload["turn_id"] == narration.payload["turn_id"] == outcome.turn_id
    assert roll.payload["dc"] == 15 and roll.payload["success"] is (roll.payload["total"] >= 15)

    # The second request carries the first answer as plain assistant text, then the results.
    first, second = openai_server.requests
    assert mode != "tool" or "tools" in second.body
    replay = second.body["messages"][-2]
    assert replay["role"] == "assistant" and "tool_calls" not in replay
    assert json.loads(replay["content"])["tool_calls"][0]["args"]["dc"] == 15
    [told] = roll_results(last_user_message(second.body))
    assert (told["formula"], told["total"], told["dc"], told["success"]) == (
        "1d20+5",
        roll.payload["total"],
        15,
        roll.payload["success"],
    )
    assert told["detail"] == roll.payload["detail"]
    assert len(first.body["messages"]) + 2 == len(second.body["messages"])


def test_a_model_that_never_narrates_ends_in_a_fallback_after_the_last_step(
    campaign, alice, openai_server, settings, act
):
    settings.DM_MAX_STEPS = 3
    openai_server.default = Answer(ROLL_FIRST)  # every answer only rolls
    action = act(campaign, alice, "I attack the goblin")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.fallback and outcome.failed_code is None
    events = turn_events(campaign, action.seq)
    # Two rolling steps rolled; the last step had to narrate, could not (nor its repair).
    assert [e.type for e in events].count("roll_result") == 2
    assert events[-1].type == "dm_narration" and events[-1].payload["fallback"] is True
    assert len(openai_server.requests) == 4  # 3 steps + the last step's repair
    assert "last step" in last_user_message(openai_server.requests[2].body)


def test_state_changes_wait_for_the_narrating_answer(campaign, alice, openai_server, act):
    """Tool calls other than `roll` in a rolling answer are refused into tool_errors."""
    patch = {
        "name": "apply_state_patch",
        "args": {
            "reason": "the door",
            "patches": [{"op": "add", "path": "/flags/door_open", "value": True}],
        },
    }
    openai_server.script(
        Answer({**ROLL_FIRST, "tool_calls": [*ROLL_FIRST["tool_calls"], patch]}), Answer(NARRATE)
    )
    action = act(campaign, alice, "I shoulder the door")
    turn_run(campaign_id=campaign.id)
    events = turn_events(campaign, action.seq)
    assert not any(e.type == "state_patched" for e in events)
    narration = events[-1]
    assert [e["name"] for e in narration.payload["tool_errors"]] == ["apply_state_patch"]


def test_a_turn_cut_short_after_its_rolls_goes_on_with_them(campaign, alice, openai_server, act):
    """As when its worker dies: the turn is cancelled after rolling, before narrating. The
    next run narrates with the same rolls under the same turn_id and rolls nothing new."""
    openai_server.script(Answer(ROLL_FIRST), Answer(NARRATE, delay=5.0))
    action = act(campaign, alice, "I attack the goblin")

    async def cut_short() -> None:
        task = asyncio.ensure_future(aturn_run(campaign_id=campaign.id))
        while len(openai_server.requests) < 2:  # noqa: ASYNC110 (another thread appends)
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async_to_sync(cut_short)()
    [rolled] = [e for e in turn_events(campaign, action.seq) if e.type == "roll_result"]
    assert not any(e.type in ("dm_narration", "turn_failed") for e in turn_events(campaign, 0))

    openai_server.script(Answer(NARRATE))
    turn_lock_release(campaign_id=campaign.id, holder="nobody")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.turn_id == rolled.payload["turn_id"]
    events = turn_events(campaign, action.seq)
    assert [e.seq for e in events if e.type == "roll_result"] == [rolled.seq]  # none new
    assert events[-1].type == "dm_narration" and events[-1].payload["text"] == NARRATION
    # Its one call (no rolling step again) was told the logged roll's result.
    resumed = openai_server.requests[-1].body
    [told] = roll_results(last_user_message(resumed))
    assert told["total"] == rolled.payload["total"]
    assert json.loads(resumed["messages"][-2]["content"])["narration"] == ""


def test_a_turn_that_fails_after_rolling_keeps_its_rolls(campaign, alice, openai_server, act):
    from tests.openai_server import Fail

    openai_server.script(Answer(ROLL_FIRST), Fail(401, "invalid api key"))
    action = act(campaign, alice, "I attack the goblin")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.failed_code is not None
    types = [e.type for e in turn_events(campaign, action.seq)]
    assert "roll_result" in types and types[-1] == "turn_failed"


CHECKS = [
    "I attack the goblin",
    "I sneak past the guard",
    "I search the old chest",
    "I climb the wall",
    "I try to persuade the innkeeper",
    "I pick the lock",
]


def test_the_fake_dm_narrates_what_its_dice_decided_every_time(campaign, alice, settings, act):
    """50 fake turns with rolls: each roll has a dc, comes before the narration, and the
    narration tells its total with success or failure wording matching `success`."""
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10**6  # faster than any table plays
    # A climb is the climber's own roll: nobody clicks here, so the server rolls it for
    # them at once.
    settings.DM_PLAYER_ROLL_SECONDS = 0
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10**6
    seen = {True: 0, False: 0}
    for turn in range(50):
        action = act(campaign, alice, f"{CHECKS[turn % len(CHECKS)]} (try {turn})")
        outcome = turn_run(campaign_id=campaign.id)
        assert outcome.steps == 2, turn
        events = turn_events(campaign, action.seq)
        rolls = [e.payload for e in events if e.type == "roll_result"]
        [narration] = [e.payload["text"] for e in events if e.type == "dm_narration"]
        types = [e.type for e in events]
        assert rolls and types.index("roll_result") < types.index("dm_narration")
        for roll in rolls:
            assert roll["dc"] is not None and roll["success"] is (roll["total"] >= roll["dc"])
            told = re.search(rf"\b{roll['total']} against (?:DC|AC) {roll['dc']}\b", narration)
            assert told, (turn, roll, narration)
            sentence = narration[: told.end()].rsplit(".", 1)[-1] + narration[told.end() :]
            sentence = sentence.split(".")[0]
            failed = re.search(
                r"goes wide|glances off|clatters|stumbles|finds nothing|nothing more|fails|"
                r"grip slips|fall flat|resists",
                sentence,
            )
            assert (failed is None) is roll["success"], (turn, roll, sentence)
            seen[roll["success"]] += 1
    assert seen[True] and seen[False]  # both outcomes were told


def test_the_fake_dm_adds_the_characters_own_modifiers(campaign, alice, act):
    """With a sheet (CONTRACTS §7 characters) a check adds its ability modifier, and the
    proficiency bonus where a class has it: a human fighter by standard array attacks
    with STR 16 (+3) and proficiency +2, and listens with WIS 13 (+1)."""
    from tests.reads import api_as

    response = api_as(alice).post(
        f"/api/campaigns/{campaign.id}/characters",
        {
            "name": "Brienne",
            "class": "fighter",
            "ancestry": "human",
            "ability_method": "standard_array",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    for text, formula in (("I attack the goblin", "1d20+5"), ("I listen at the door", "1d20+1")):
        action = act(campaign, alice, text)
        turn_run(campaign_id=campaign.id)
        [roll] = [e for e in turn_events(campaign, action.seq) if e.type == "roll_result"]
        assert roll.payload["formula"] == formula


def test_a_refused_roll_is_told_as_refused_not_as_a_result(campaign, alice, openai_server, act):
    bad = {
        "narration": "",
        "tool_calls": [{"name": "roll", "args": {"formula": "1d20+banana", "reason": "luck"}}],
        "options": [],
    }
    openai_server.script(Answer(bad), Answer(NARRATE))
    action = act(campaign, alice, "I attack the goblin")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.failed_code is None and outcome.steps == 2
    [told] = roll_results(last_user_message(openai_server.requests[1].body))
    assert told["formula"] == "1d20+banana" and told["refused"] and "total" not in told
    assert not [e for e in turn_events(campaign, action.seq) if e.type == "roll_result"]


def test_an_answer_that_echoes_the_prompts_data_is_never_told(campaign, alice, openai_server, act):
    # gemma-3-270m behind llama-cpp-python answered its narrating step with the prompt's
    # ROLL RESULTS block, where secret rolls are: nothing from its marker on is streamed,
    # the answer is refused and repaired, and no event carries the block.
    openai_server.script(
        Answer(ROLL_FIRST), Answer(NARRATE, echo_block="ROLL RESULTS"), Answer(NARRATE)
    )
    action = act(campaign, alice, "I attack the goblin")
    deltas: list[str] = []
    outcome = turn_run(campaign_id=campaign.id, on_delta=deltas.append)
    assert outcome.failed_code is None and not outcome.fallback

    nonce = re.search(r"<<<([0-9a-f]{16}) BEGIN", last_user_message(openai_server.requests[1].body))
    assert nonce
    told = "".join(deltas)
    assert "The dice have fallen." in told  # what came before the marker
    assert nonce.group(1) not in told and "ROLL RESULTS" not in told
    events = turn_events(campaign, action.seq)
    assert not any(nonce.group(1) in json.dumps(e.payload) for e in events)
    [narration] = [e for e in events if e.type == "dm_narration"]
    assert narration.payload["text"] == NARRATION  # the repaired answer's
    # The repair request says why.
    assert "repeats the data blocks" in json.dumps(openai_server.requests[2].body["messages"])
