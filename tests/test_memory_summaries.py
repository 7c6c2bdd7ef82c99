"""Layered summaries: past a token budget the oldest events become a `summary_created`
(from_seq, to_seq, text, layer), summaries of a layer are merged into the layer above,
the top layer rolls; the fake model summarizes deterministically; every summary call is
costed through the billing seams with purpose `summary`; what not everyone may see is
never summarized."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest

from billing.models import ModelUsage, Reservation
from billing.selectors import usage_by_day
from billing.services import budget_set
from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import events_append, player_action_submit
from campaigns.tools import turn_commit
from llm.tokens import count_tokens
from memory.summaries import (
    extractive_summary,
    story_lines,
    summaries_index,
    summaries_tiling,
    summaries_update,
    summarized_through,
)
from orchestrator.services import dm_settings_set
from tests.openai_server import Answer, serving

pytestmark = pytest.mark.django_db

ACTIONS = [
    "I search the cellar for the smuggler's map",
    "I ask Maren the innkeeper about the drowned bell",
    "I follow the wet footprints to the harbour",
    "I bargain with Captain Ilse for passage to Saltmarsh",
]


@pytest.fixture(autouse=True)
def _small_layers(settings):
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 120
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 100
    settings.MEMORY_SUMMARY_MAX_TOKENS = 50
    settings.MEMORY_SUMMARY_FANOUT = 2
    settings.MEMORY_SUMMARY_TOP_LAYER = 2


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def play(campaign, user, turns: int, start: int = 0) -> None:
    """Turns with a scripted DM (no model): an action, then its narration."""
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    for n in range(start, start + turns):
        action = player_action_submit(
            membership=membership, action_id=uuid.uuid4(), text=ACTIONS[n % len(ACTIONS)]
        )
        turn_commit(
            campaign_id=campaign.id,
            turn_id=str(uuid.uuid4()),
            narration=f"The lamps gutter as Alice acts (turn {n}). Nobody in Brindlemoor sleeps.",
            options=["Go on"],
            tool_calls=[],
            through_seq=action.seq,
        )


def summaries_of(campaign) -> list[dict]:
    return [
        {**e.payload, "seq": e.seq, "actor": e.actor_kind, "visibility": e.visibility}
        for e in Event.objects.filter(campaign=campaign, type="summary_created").order_by("seq")
    ]


def test_nothing_is_summarized_under_the_budget(campaign, alice):
    play(campaign, alice, 2)
    assert summaries_update(campaign_id=campaign.id) == []


def test_past_the_budget_layers_form_and_tile_the_log(campaign, alice, settings):
    play(campaign, alice, 40)
    appended = summaries_update(campaign_id=campaign.id)
    assert appended and all(e.type == "summary_created" for e in appended)
    assert summaries_update(campaign_id=campaign.id) == []  # idempotent: nothing more is due

    summaries = summaries_of(campaign)
    assert {"from_seq", "to_seq", "text", "layer"} <= set(summaries[0])
    assert all(s["actor"] == "system" and s["visibility"] == {"kind": "all"} for s in summaries)
    assert all(count_tokens(s["text"]) <= settings.MEMORY_SUMMARY_MAX_TOKENS for s in summaries)
    layer0 = [s for s in summaries if s["layer"] == 0]
    assert layer0[0]["from_seq"] == 1
    assert all(a["to_seq"] + 1 == b["from_seq"] for a, b in itertools.pairwise(layer0))
    # The newest events stay verbatim: at least KEEP tokens of them are not summarized.
    last = Event.objects.filter(campaign=campaign).order_by("-seq").first().seq
    assert layer0[-1]["to_seq"] < last
    # Each layer-1 summary merges FANOUT (2) consecutive layer-0 ones.
    for s in (s for s in summaries if s["layer"] == 1):
        children = [c for c in layer0 if s["from_seq"] <= c["from_seq"] <= s["to_seq"]]
        assert len(children) == 2
        assert (children[0]["from_seq"], children[-1]["to_seq"]) == (s["from_seq"], s["to_seq"])
    # The top layer (2) rolls: it is summarized again from seq 1, each time further.
    rolling = [s for s in summaries if s["layer"] == 2 and s["from_seq"] == 1]
    assert len(rolling) >= 2
    assert all(a["to_seq"] < b["to_seq"] for a, b in itertools.pairwise(rolling))
    # The prompt's tiling: a few summaries, contiguous from seq 1 to the last summarized.
    index = summaries_index(campaign_id=campaign.id)
    tiling = summaries_tiling(index)
    assert tiling[0].from_seq == 1 and tiling[-1].to_seq == summarized_through(index)
    assert all(a.to_seq + 1 == b.from_seq for a, b in itertools.pairwise(tiling))
    assert len(tiling) <= 1 + 2 * 1  # the rolling top + at most FANOUT-1 per lower layer


def test_the_fake_model_summarizes_deterministically_and_extractively(campaign, alice):
    play(campaign, alice, 12)
    summaries_update(campaign_id=campaign.id)
    first = next(s for s in summaries_of(campaign) if s["layer"] == 0)
    events = Event.objects.filter(
        campaign=campaign, seq__gte=first["from_seq"], seq__lte=first["to_seq"]
    ).order_by("seq")
    from campaigns.selectors import snapshot_get

    lines = [
        (line.kind, line.text)
        for line in story_lines(events, snapshot_get(campaign_id=campaign.id).state)
    ]
    again = extractive_summary(lines, max_tokens=50)
    assert again == first["text"] == extractive_summary(lines, max_tokens=50)
    # Extractive: every sentence of it is taken from the log.
    log_text = " ".join(text for _, text in lines)
    assert "Alice: I search the cellar for the smuggler's map." in first["text"]
    for sentence in first["text"].split(". "):
        assert sentence.rstrip(".") in log_text


def test_what_not_everyone_may_see_is_never_summarized(campaign, alice, gm):
    play(campaign, alice, 3)
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "entity_created",
                {
                    "entity": {
                        "id": str(uuid.uuid4()),
                        "kind": "npc",
                        "name": "Vorghast",
                        "data": {"description": "the lich behind the bar"},
                    }
                },
                "gm",
                gm.id,
                visibility={"kind": "gm"},
            )
        ],
    )
    play(campaign, alice, 30, start=3)
    summaries_update(campaign_id=campaign.id)
    texts = " ".join(s["text"] for s in summaries_of(campaign))
    assert "Brindlemoor" in texts or "Alice" in texts
    assert "Vorghast" not in texts and "lich" not in texts


def test_every_summary_call_goes_through_the_one_paid_model_call(campaign, alice):
    play(campaign, alice, 12)
    appended = summaries_update(campaign_id=campaign.id)
    rows = list(ModelUsage.objects.filter(campaign_id=campaign.id, purpose="summary"))
    assert len(rows) == len(appended) > 0
    row = rows[0]
    assert (row.provider, row.model) == ("fake", "fake-dm")
    assert row.input_tokens > row.output_tokens > 0 and row.cost_usd > 0
    # Each summary has a call id of its own, and nothing stays reserved.
    assert len({r.turn_id for r in rows}) == len(rows)
    assert not Reservation.objects.filter(campaign_id=campaign.id).exists()
    [day] = [r for r in usage_by_day(campaign_id=campaign.id) if r["purpose"] == "summary"]
    assert day["calls"] == len(appended) and day["cost_usd"] > 0


def test_a_refused_summary_appends_nothing_and_is_tried_again_later(campaign, alice):
    play(campaign, alice, 12)
    budget_set(campaign_id=campaign.id, daily_cap_usd="0", hard_stop=True)
    assert summaries_update(campaign_id=campaign.id) == []
    assert summaries_of(campaign) == []
    budget_set(campaign_id=campaign.id, daily_cap_usd="5.00")
    assert summaries_update(campaign_id=campaign.id)


def test_a_real_model_writes_the_summary_over_http(campaign, alice, settings):
    play(campaign, alice, 12)
    settings.DM_MODELS_ALLOWED = ["test-model"]
    with serving(settings) as server:
        dm_settings_set(campaign_id=campaign.id, provider="openai", model="test-model")
        answer = {
            "narration": "Alice hunted the smuggler's map and asked Maren about the bell.",
            "tool_calls": [],
            "options": ["continue"],
        }
        server.script(Answer(answer), Answer("not json at all"))
        settings.MEMORY_SUMMARY_CHUNKS_PER_RUN = 2
        summaries_update(campaign_id=campaign.id)
        requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    first, second = summaries_of(campaign)[:2]
    assert first["text"] == answer["narration"]
    # An unusable answer falls back to the extractive summary.
    assert second["text"] and second["text"] != answer["narration"]
    sent = requests[0].body["messages"]
    assert "long-term memory" in sent[0]["content"]
    logged = [json.loads(line) for line in sent[1]["content"].split("\n")[1:-2]]
    assert "Alice: I search the cellar for the smuggler's map." in logged


def test_a_hidden_entity_enters_the_story_when_it_is_revealed(campaign, alice):
    from campaigns.selectors import snapshot_get
    from campaigns.tools import turn_commit

    def turn(*calls: dict) -> None:
        turn_commit(
            campaign_id=campaign.id,
            turn_id=str(uuid.uuid4()),
            narration="The crypt is quiet.",
            options=["Go on"],
            tool_calls=list(calls),
            through_seq=0,
        )

    turn(
        {
            "name": "create_entity",
            "args": {
                "kind": "creature",
                "name": "Grave-Ghoul Vesk",
                "data": {"description": "a ghoul lurking in the ossuary"},
                "hidden": True,
            },
        }
    )
    state = snapshot_get(campaign_id=campaign.id).state
    [ghoul_id] = [i for i, e in state["entities"].items() if e["name"] == "Grave-Ghoul Vesk"]

    def story() -> str:
        events = Event.objects.filter(campaign=campaign).order_by("seq")
        state = snapshot_get(campaign_id=campaign.id).state
        return " ".join(line.text for line in story_lines(events, state))

    assert "Vesk" not in story()  # hidden: the summary, read by everyone, never names it
    turn(
        {
            "name": "apply_state_patch",
            "args": {
                "reason": "the ghoul lunges",
                "patches": [
                    {"op": "replace", "path": f"/entities/{ghoul_id}/hidden", "value": False}
                ],
            },
        }
    )
    assert "New creature: Grave-Ghoul Vesk (a ghoul lurking in the ossuary)." in story()


def test_patch_pointers_are_read_with_their_escapes(campaign, alice, gm):
    """`~1` in a JSON pointer is a `/` of the key and `~0` a `~` (RFC 6901): the flag the
    GM set is told by its own name."""
    from campaigns.selectors import snapshot_get
    from campaigns.tools import gm_set_value

    gm_set_value(campaign_id=campaign.id, by_user=gm, path="/flags/north~1south road", value="open")
    gm_set_value(campaign_id=campaign.id, by_user=gm, path="/flags/~0tilde~01", value=3)
    events = list(Event.objects.filter(campaign=campaign).order_by("seq"))
    state = snapshot_get(campaign_id=campaign.id).state
    assert state["flags"] == {"north/south road": "open", "~tilde~1": 3}
    texts = [line.text for line in story_lines(events, state)]
    assert "Flag north/south road: open." in texts
    assert "Flag ~tilde~1: 3." in texts
