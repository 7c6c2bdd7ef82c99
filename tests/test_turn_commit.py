"""turn_commit: a DM turn's tool events then its narration, in one transaction, in the
documented order; bad calls are recorded without breaking the turn; retries of an
answered turn never duplicate it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from campaigns import services
from campaigns.events import InvalidEvent
from campaigns.models import DiceSeed, Event, Snapshot
from campaigns.tools import TurnCommitResult, turn_commit
from rpgai.errors import Conflict

pytestmark = pytest.mark.django_db


def version(campaign) -> int:
    return Snapshot.objects.get(campaign=campaign).version


def commit(campaign, calls: list[Any], **kwargs: Any) -> TurnCommitResult:
    defaults: dict[str, Any] = {
        "campaign_id": campaign.id,
        "turn_id": str(uuid.uuid4()),
        "narration": "The door gives way.",
        "options": ["Enter", "Wait"],
        "tool_calls": calls,
        "through_seq": 0,
    }
    return turn_commit(**{**defaults, **kwargs})


def test_tool_events_come_in_order_each_request_before_its_result_narration_last(campaign):
    start = version(campaign)
    turn_id = str(uuid.uuid4())
    result = commit(
        campaign,
        [
            {"name": "roll", "args": {"formula": "1d20+5", "reason": "Athletics"}},
            {"name": "create_entity", "args": {"kind": "creature", "name": "Rat swarm"}},
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "noise",
                    "patches": [{"op": "add", "path": "/flags/alarm", "value": True}],
                },
            },
            {"name": "trigger_audio", "args": {"cue": "door_creak", "volume": 0.8}},
            {"name": "roll", "args": {"formula": "2d6", "reason": "Damage"}},
        ],
        turn_id=turn_id,
    )
    assert [e.type for e in result.events] == [
        "roll_requested",
        "roll_result",
        "entity_created",
        "state_patch_requested",
        "state_patch_applied",
        "audio_cue",
        "roll_requested",
        "roll_result",
        "dm_narration",
    ]
    assert [e.seq for e in result.events] == list(range(start + 1, start + 10))
    assert all(e.actor_kind == "dm" for e in result.events)
    narration = result.events[-1].payload
    assert narration["turn_id"] == turn_id and narration["options"] == ["Enter", "Wait"]
    assert narration["fallback"] is False and "tool_errors" not in narration
    assert result.events[0].payload["reason"] == "Athletics"
    assert result.events[0].payload["requested_by"] == "dm"
    assert version(campaign) == start + 9
    assert Snapshot.objects.get(campaign=campaign).state["last_options"] == ["Enter", "Wait"]


def test_a_crash_during_the_turn_leaves_no_half_turn(campaign):
    start = version(campaign)
    seeds = DiceSeed.objects.count()
    with pytest.raises(InvalidEvent):
        # The narration is invalid (no options): it fails after the tools have run.
        commit(
            campaign,
            [
                {"name": "roll", "args": {"formula": "1d20", "reason": "x"}},
                {"name": "create_entity", "args": {"kind": "npc", "name": "Ghost"}},
            ],
            options=[],
        )
    assert version(campaign) == start
    assert Event.objects.filter(campaign=campaign).count() == start
    assert DiceSeed.objects.count() == seeds
    assert Snapshot.objects.get(campaign=campaign).state["entities"] == {}


def test_an_answered_turn_is_refused_and_never_duplicated(campaign, join, make_user):
    membership = join(make_user())
    action = services.player_action_submit(
        membership=membership, action_id=uuid.uuid4(), text="I open the door"
    )
    # (In a test transaction nothing commits, so no background turn answers it first.)
    first = commit(campaign, [{"name": "roll", "args": {"formula": "1d4"}}], through_seq=action.seq)
    assert first.events[-1].payload["through_seq"] == action.seq
    count = Event.objects.filter(campaign=campaign).count()
    for _ in range(2):
        with pytest.raises(Conflict):
            commit(campaign, [{"name": "roll", "args": {"formula": "1d4"}}], through_seq=action.seq)
    assert Event.objects.filter(campaign=campaign).count() == count
    assert Event.objects.filter(campaign=campaign, type="dm_narration").count() == 1


def test_through_seq_is_recorded_and_answers_the_turn(campaign):
    result = commit(campaign, [], through_seq=0)
    assert result.events[-1].payload["through_seq"] == 0
    # A turn through a later seq moves the answered mark; the same seq again conflicts.
    seq = version(campaign)
    commit(campaign, [], through_seq=seq)
    assert Snapshot.objects.get(campaign=campaign).state["turn"]["answered_through_seq"] == seq
    with pytest.raises(Conflict):
        commit(campaign, [], through_seq=seq)


@pytest.mark.parametrize(
    ("call", "name", "reason"),
    [
        ({"name": "summon_meteor", "args": {}}, "summon_meteor", "unknown tool"),
        ({"name": "roll", "args": {"formula": 20}}, "roll", "formula"),
        ({"name": "roll", "args": {"formula": "1d20", "reason": ["x"]}}, "roll", "reason"),
        ({"name": "roll", "args": {"formula": "10000d6"}}, "roll", "at most 100"),
        ({"name": "roll", "args": {"formula": "1d6rr<7"}}, "roll", "more than 100 dice"),
        ({"name": "roll", "args": "1d20"}, "roll", "args must be an object"),
        ({"name": "roll"}, "roll", "formula"),
        ({"args": {"formula": "1d20"}}, "", "unknown tool"),
        ("roll 1d20", "", "object with a name"),
        (None, "", "object with a name"),
        ({"name": 42, "args": {}}, "", "unknown tool"),
        (
            {
                "name": "create_entity",
                "args": {"kind": "npc", "name": "A", "data": {"x": "y" * 9000}},
            },
            "create_entity",
            "bytes",
        ),
        (
            {
                "name": "trigger_audio",
                "args": {"cue": "thunder", "volume": 0.5, "extra": float("nan")},
            },
            "trigger_audio",
            "plain JSON",
        ),
    ],
)
def test_a_bad_call_is_recorded_and_the_rest_of_the_turn_proceeds(campaign, call, name, reason):
    result = commit(
        campaign,
        [
            {"name": "roll", "args": {"formula": "1d8"}},
            call,
            {"name": "roll", "args": {"formula": "1d6"}},
        ],
    )
    assert [e.type for e in result.events] == [
        "roll_requested",
        "roll_result",
        "roll_requested",
        "roll_result",
        "dm_narration",
    ]
    [rejection] = result.rejections
    assert rejection.index == 1 and rejection.name == name
    assert reason in rejection.reason, rejection.reason
    [error] = result.events[-1].payload["tool_errors"]
    assert error == {"index": 1, "name": name, "reason": rejection.reason}


def test_the_number_of_calls_per_turn_is_capped(campaign, settings):
    settings.TOOL_CALLS_MAX_PER_TURN = 16
    calls = [{"name": "trigger_audio", "args": {"cue": "thunder", "volume": 0.1}}] * 40
    result = commit(campaign, calls)
    assert sum(1 for e in result.events if e.type == "audio_cue") == 16
    [rejection] = result.rejections
    assert rejection.index == 16 and "24 were ignored" in rejection.reason


def test_narration_extra_and_fallback_reach_the_payload(campaign):
    result = commit(
        campaign,
        [{"name": "nope"}],
        fallback=True,
        narration_extra={
            "model": "fake",
            "tool_errors": [{"index": -1, "name": "", "reason": "x"}],
        },
        request_id="req-123",
    )
    narration = result.events[-1]
    assert narration.payload["fallback"] is True and narration.payload["model"] == "fake"
    assert [e["index"] for e in narration.payload["tool_errors"]] == [-1, 0]
    assert narration.request_id == "req-123"


def test_unknown_campaign_is_not_found(db):
    from rpgai.errors import NotFound

    with pytest.raises(NotFound):
        turn_commit(
            campaign_id=uuid.uuid4(),
            turn_id=str(uuid.uuid4()),
            narration="x",
            options=["a"],
            tool_calls=[],
            through_seq=0,
        )
