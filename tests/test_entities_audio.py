"""create_entity (server-made id, validated kind and name, no duplicate of the same kind
and name) and trigger_audio (a catalog of cues in settings, volume 0..1)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from campaigns.models import Snapshot
from campaigns.tools import turn_commit

pytestmark = pytest.mark.django_db


def turn(campaign, *calls: dict[str, Any]):
    return turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="Something happens.",
        options=["Go on"],
        tool_calls=list(calls),
        through_seq=0,
    )


def entities(campaign) -> dict[str, Any]:
    return Snapshot.objects.get(campaign=campaign).state["entities"]


def test_create_entity_gets_a_server_made_id_and_lands_in_the_state(campaign):
    made_up = str(uuid.uuid4())
    result = turn(
        campaign,
        {
            "name": "create_entity",
            "args": {
                "kind": "npc",
                "name": "  Old   Tom ",
                "data": {"mood": "grim"},
                "id": made_up,
            },
        },
    )
    created, narration = result.events
    assert (created.type, narration.type) == ("entity_created", "dm_narration")
    entity = created.payload["entity"]
    assert entity["id"] != made_up and uuid.UUID(entity["id"])
    assert entity["name"] == "Old Tom" and entity["kind"] == "npc"
    assert entities(campaign) == {
        entity["id"]: {"kind": "npc", "name": "Old Tom", "data": {"mood": "grim"}}
    }


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"kind": "dragon-god", "name": "Bob"}, "kind"),
        ({"kind": "npc", "name": ""}, "name"),
        ({"kind": "npc", "name": "   "}, "needs a name"),
        ({"kind": "npc", "name": "x" * 81}, "name"),
        ({"kind": "npc", "name": 7}, "name"),
        ({"kind": "npc", "name": "Tom", "data": ["not", "an", "object"]}, "data"),
        ({"name": "Tom"}, "kind"),
    ],
)
def test_invalid_entities_are_refused_and_the_turn_goes_on(campaign, args, reason):
    result = turn(
        campaign,
        {"name": "create_entity", "args": args},
        {"name": "create_entity", "args": {"kind": "item", "name": "Lantern"}},
    )
    assert [e.type for e in result.events] == ["entity_created", "dm_narration"]
    [rejection] = result.rejections
    assert (rejection.index, rejection.name) == (0, "create_entity")
    assert reason in rejection.reason
    assert result.events[-1].payload["tool_errors"] == [
        {"index": 0, "name": "create_entity", "reason": rejection.reason}
    ]


def test_same_kind_and_name_is_refused_also_within_one_turn(campaign):
    first = turn(campaign, {"name": "create_entity", "args": {"kind": "npc", "name": "Old Tom"}})
    tom_id = first.events[0].payload["entity"]["id"]
    again = turn(
        campaign,
        {"name": "create_entity", "args": {"kind": "npc", "name": "old  TOM"}},
        {"name": "create_entity", "args": {"kind": "location", "name": "Old Tom"}},  # other kind
        {"name": "create_entity", "args": {"kind": "location", "name": "Old Tom"}},  # same turn
    )
    assert [e.type for e in again.events] == ["entity_created", "dm_narration"]
    assert [r.index for r in again.rejections] == [0, 2]
    assert tom_id in again.rejections[0].reason
    kinds = sorted(e["kind"] for e in entities(campaign).values())
    assert kinds == ["location", "npc"]


def test_trigger_audio_plays_a_cue_of_the_catalog(campaign, settings):
    settings.AUDIO_CUES = {"thunder": "/static/audio/thunder.ogg", "rain": None}
    result = turn(
        campaign,
        {"name": "trigger_audio", "args": {"cue": "thunder", "volume": 0.4}},
        {"name": "trigger_audio", "args": {"cue": "rain", "volume": 1}},
        {"name": "trigger_audio", "args": {"cue": "rain"}},
    )
    cues = [e.payload for e in result.events if e.type == "audio_cue"]
    # Every event of a DM turn carries its turn_id (CONTRACTS §7).
    assert {cue.pop("turn_id") for cue in cues} == {result.events[-1].payload["turn_id"]}
    assert cues == [
        {"cue": "thunder", "volume": 0.4, "url": "/static/audio/thunder.ogg"},
        {"cue": "rain", "volume": 1.0, "url": None},
        {"cue": "rain", "volume": 1.0, "url": None},
    ]
    assert result.rejections == []


def test_default_catalog_is_configured(campaign):
    result = turn(campaign, {"name": "trigger_audio", "args": {"cue": "thunder", "volume": 0.5}})
    assert result.events[0].type == "audio_cue"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"cue": "kazoo_solo", "volume": 0.5}, "unknown audio cue"),
        ({"cue": "thunder", "volume": 1.5}, "volume"),
        ({"cue": "thunder", "volume": -0.1}, "volume"),
        ({"cue": "thunder", "volume": "loud"}, "volume"),
        ({"cue": "thunder", "volume": None}, "volume"),
        ({"volume": 0.5}, "cue"),
    ],
)
def test_bad_audio_calls_are_refused(campaign, args, reason):
    result = turn(campaign, {"name": "trigger_audio", "args": args})
    assert [e.type for e in result.events] == ["dm_narration"]
    [rejection] = result.rejections
    assert reason in rejection.reason
