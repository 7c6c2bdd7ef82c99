"""A scripted 500-turn campaign on the fake model (services called directly, memory tasks
queued by the real `events_committed` hook): the prompt stays bounded, the past is told
by layered summaries, and the innkeeper met at turn 3 is still remembered, by name,
when the innkeeper comes back at turn 500."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid

import pytest

from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from llm.tokens import count_message_tokens, count_tokens
from orchestrator.prompt import STATE_ENTITIES_MAX, prompt_build
from orchestrator.receivers import turns_deferred
from orchestrator.selectors import turn_context_get, turn_owed
from orchestrator.services import turn_run
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db(transaction=True)

TURNS = 500
FIRST_NAMES = ["Aldo", "Bria", "Cato", "Dunya", "Efrem", "Galen", "Hesper", "Jorund", "Katrin"]
PLACES = ["Vell", "Marsh", "Crag", "Dune", "Fjord", "Oak", "Brine"]
PILGRIMS = [f"the pilgrim {name} of {place}" for place in PLACES for name in FIRST_NAMES]
ROUTINE = [
    "I attack the goblin",
    "I search the old chest",
    "I look around the common room",
    "I sneak past the sleeping guard",
    "I study the markings on the wall",
    "I listen at the cellar door",
]


@pytest.fixture(autouse=True)
def _fast_turns(settings):
    isolate_limits(settings)
    settings.DM_STREAM = False  # nobody is listening to the deltas here
    # Turns back to back, faster than any table plays.
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10**6
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10**6
    settings.BILLING_DEFAULT_DAILY_CAP_USD = "1000000"  # spend is not what this is about


def script(turn: int) -> str:
    if turn == 3:
        return "I greet the innkeeper"
    if 4 <= turn < 4 + len(PILGRIMS):
        return f"I greet {PILGRIMS[turn - 4]}"
    if turn == TURNS:
        return "I ask the innkeeper about the road north"
    return ROUTINE[turn % len(ROUTINE)]


def prompt_now(campaign) -> tuple[str, str, int]:
    """(system, user message, tokens) of the prompt the next turn gets."""
    from django.conf import settings

    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    prompt = prompt_build(
        context=context, budget=settings.DM_PROMPT_TOKEN_BUDGET, nonce="0123456789abcdef"
    )
    return prompt.messages[0]["content"], prompt.messages[1]["content"], prompt.tokens


def block(text: str, label: str) -> str:
    match = re.search(
        rf"<<<0123456789abcdef BEGIN {label}>>>\n(.*?)\n<<<0123456789abcdef END {label}>>>",
        text,
        re.DOTALL,
    )
    return match.group(1) if match else ""


def test_500_turns_bounded_prompt_layered_summaries_and_the_innkeepers_name(
    campaign, make_user, join
):
    alice = make_user("alice")
    join(alice, "Alice")
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    tokens: dict[int, int] = {}
    started = time.monotonic()
    for turn in range(1, TURNS + 1):
        with turns_deferred():  # this test runs each turn itself, to read its prompt size
            player_action_submit(membership=membership, action_id=uuid.uuid4(), text=script(turn))
        if turn == TURNS:
            system, user, built_tokens = prompt_now(campaign)
        outcome = turn_run(campaign_id=campaign.id)
        assert outcome is not None and outcome.failed_code is None, turn
        tokens[turn] = outcome.prompt_tokens
    elapsed = time.monotonic() - started

    # 1. Bounded: the prompt at turn 500 is at most 1.2 times the prompt at turn 50.
    assert tokens[TURNS] <= 1.2 * tokens[50], (tokens[50], tokens[TURNS])
    assert built_tokens == count_message_tokens(
        [{"role": "system", "content": system}, {"role": "user", "content": user}]
    )
    # Whereas the whole history would not fit ten times over.
    history = Event.objects.filter(campaign=campaign).values_list("payload", flat=True)
    naive = sum(count_tokens(json.dumps(p, ensure_ascii=False)) for p in history)
    assert naive > 10 * tokens[TURNS]

    # 2. The past is told by layered summaries that tile the log from seq 1.
    summaries = [e.payload for e in Event.objects.filter(campaign=campaign, type="summary_created")]
    assert {s["layer"] for s in summaries} >= {0, 1, 2}
    layer0 = sorted((s for s in summaries if s["layer"] == 0), key=lambda s: s["from_seq"])
    assert layer0[0]["from_seq"] == 1
    assert all(a["to_seq"] + 1 == b["from_seq"] for a, b in itertools.pairwise(layer0))
    story = [json.loads(line) for line in block(user, "STORY SO FAR").split("\n")]
    assert story[0]["from_seq"] == 1 and max(s["layer"] for s in story) >= 2
    recent = [json.loads(line) for line in block(user, "RECENT EVENTS").split("\n")]
    # Events the summaries tell are not repeated; summaries themselves are not events here.
    assert all(e["seq"] > story[-1]["to_seq"] for e in recent)
    assert not any(e["type"] == "summary_created" for e in recent)

    # 3. The innkeeper, met at turn 3 and crowded out of the state by the pilgrims since,
    # is in the prompt by name when the innkeeper is back at turn 500.
    created = [
        e.payload["entity"]
        for e in Event.objects.filter(campaign=campaign, type="entity_created").order_by("seq")
    ]
    innkeeper = next(e for e in created if e["data"].get("description") == "the innkeeper")
    assert created.index(innkeeper) < len(created) - STATE_ENTITIES_MAX
    assert innkeeper["name"] not in block(user, "STATE")  # the state alone forgot it
    npcs = [json.loads(line) for line in block(user, "NPC MEMORIES").split("\n")]
    assert npcs[0]["npc"] == innkeeper["name"] and npcs[0]["is"] == "the innkeeper"
    assert npcs[0]["first_met"].startswith("seq ") and "Alice" in npcs[0]["first_met"]
    assert "Alice" in npcs[0]["feels"]
    print(
        f"\n500 turns in {elapsed:.1f}s; prompt tokens at 50: {tokens[50]}, at 500: {tokens[TURNS]}"
    )
