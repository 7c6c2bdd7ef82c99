"""NPCs that remember: after turns, what each NPC has seen and been told, whom it met,
where, and how it took it, goes into a small graph whose edges name their source event;
the prompt carries the memories of the NPCs on stage."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.selectors import membership_get, snapshot_get
from campaigns.services import events_append, player_action_submit
from campaigns.tools import turn_commit
from memory.models import NpcMemory
from memory.npc_memory import npc_memories_extract, sentiment_of
from orchestrator.prompt import prompt_build
from orchestrator.receivers import turns_deferred
from orchestrator.selectors import turn_context_get, turn_owed

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def bob(make_user, join):
    user = make_user("bob")
    join(user, "Bob")
    return user


def act(campaign, user, text: str) -> Event:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


def dm(campaign, action: Event, narration: str, *tool_calls: dict) -> list[Event]:
    return turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=narration,
        options=["Go on"],
        tool_calls=list(tool_calls),
        through_seq=action.seq,
    ).events


def npc(name: str, description: str) -> dict:
    return {
        "name": "create_entity",
        "args": {"kind": "npc", "name": name, "data": {"description": description}},
    }


def character_of(campaign, user) -> str:
    state = snapshot_get(campaign_id=campaign.id).state
    return next(k for k, c in state["characters"].items() if c["owner_user_id"] == str(user.id))


def edges(campaign, name: str) -> list[tuple[str, str, int]]:
    return [
        (e.relation, e.target_name, e.sentiment)
        for e in NpcMemory.objects.filter(campaign=campaign, npc_name=name).order_by(
            "source_seq", "id"
        )
    ]


def npc_block(campaign) -> list[dict]:
    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    user = prompt_build(context=context, budget=6000, nonce="0123456789abcdef").messages[1][
        "content"
    ]
    fence = "<<<0123456789abcdef {} NPC MEMORIES>>>"
    match = re.search(
        re.escape(fence.format("BEGIN")) + r"\n(.*?)\n" + re.escape(fence.format("END")),
        user,
        re.DOTALL,
    )
    return [json.loads(line) for line in match.group(1).split("\n")] if match else []


def test_sentiment_reads_blows_against_and_kindness_for():
    assert sentiment_of("I thank her and pay for the stew") == 2
    assert sentiment_of("I attack the innkeeper") == -2
    assert sentiment_of("I ask about the road") == 0


def test_what_an_npc_saw_was_told_and_felt_with_its_source_events(campaign, alice, bob):
    greet = act(campaign, alice, "I greet the innkeeper")
    created = dm(
        campaign,
        greet,
        "Maren Holt, the innkeeper, wipes her hands and nods.",
        npc("Maren Holt", "the innkeeper"),
    )
    entity_seq = next(e.seq for e in created if e.type == "entity_created")
    thanks = act(campaign, bob, "I thank the innkeeper for the stew")
    dm(campaign, thanks, "Maren smiles at Bob.")
    threat = act(campaign, alice, "I threaten Maren Holt with my dagger")
    dm(campaign, threat, "Maren Holt goes pale.")
    take = act(campaign, bob, "I pick up the silver key from the counter")
    key_patch = {
        "name": "apply_state_patch",
        "args": {
            "reason": "Bob takes the key",
            "patches": [
                {
                    "op": "add",
                    "path": f"/characters/{character_of(campaign, bob)}/inventory/-",
                    "value": "silver key",
                }
            ],
        },
    }
    dm(campaign, take, "Maren Holt watches Bob pocket the key.", key_patch)
    smith = act(campaign, alice, "I wave to the blacksmith")
    dm(
        campaign,
        smith,
        "Oren the blacksmith waves back; Maren Holt scowls at him.",
        npc("Oren", "the blacksmith"),
    )
    pending = act(campaign, bob, "I ask the innkeeper about Oren")  # not answered yet

    assert npc_memories_extract(campaign_id=campaign.id) > 0
    assert npc_memories_extract(campaign_id=campaign.id) == 0  # idempotent

    maren = edges(campaign, "Maren Holt")
    assert ("met", "Alice", 0) in maren and ("at", "The Drowned Lantern inn", 0) in maren
    assert ("told", "Bob", 1) in maren and ("told", "Alice", -2) in maren
    assert ("saw", "Bob", 0) in maren and ("saw", "silver key", 0) in maren
    assert ("met", "Oren", 0) in maren and ("met", "Maren Holt", 0) in edges(campaign, "Oren")
    # Every edge names the event it came from.
    met = NpcMemory.objects.get(
        campaign=campaign, npc_name="Maren Holt", relation="met", target_name="Alice"
    )
    assert met.source_seq == entity_seq
    told = NpcMemory.objects.get(
        campaign=campaign, npc_name="Maren Holt", relation="told", target_name="Bob"
    )
    assert told.source_seq == thanks.seq and "stew" in told.detail
    # A turn not yet answered is read only once it is whole.
    assert not NpcMemory.objects.filter(campaign=campaign, source_seq=pending.seq).exists()

    # On stage: the NPCs the pending action names, in the order it names them.
    memory, oren = npc_block(campaign)
    assert oren["npc"] == "Oren"
    assert memory["npc"] == "Maren Holt" and memory["is"] == "the innkeeper"
    assert memory["first_met"] == f"seq {entity_seq}: met Alice (“I greet the innkeeper”)"
    assert memory["feels"] == {"Alice": "wary (-2)", "Bob": "friendly (+1)"}
    assert memory["places"] == ["The Drowned Lantern inn"]
    assert any("I threaten Maren Holt with my dagger" in m for m in memory["memories"])


def test_only_the_npcs_on_stage_are_in_the_prompt_and_hidden_events_are_not_read(
    campaign, alice, gm
):
    greet = act(campaign, alice, "I greet the innkeeper")
    dm(campaign, greet, "Maren Holt, the innkeeper, nods.", npc("Maren Holt", "the innkeeper"))
    smith = act(campaign, alice, "I greet the blacksmith")
    dm(campaign, smith, "Oren, the blacksmith, grunts.", npc("Oren", "the blacksmith"))
    hidden_seq = snapshot_get(campaign_id=campaign.id).version + 1
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "player_action",
                {"action_id": str(uuid.uuid4()), "text": "I whisper to Oren that I will rob him"},
                "gm",
                gm.id,
                visibility={"kind": "gm"},
            ),
            NewEvent(
                "dm_narration",
                {
                    "turn_id": str(uuid.uuid4()),
                    "text": "Oren did not hear.",
                    "options": ["Go on"],
                    "through_seq": hidden_seq,
                },
                "dm",
                visibility={"kind": "gm"},
            ),
        ],
    )
    npc_memories_extract(campaign_id=campaign.id)
    assert not any("rob" in e.detail for e in NpcMemory.objects.filter(campaign=campaign))

    act(campaign, alice, "I ask the blacksmith to mend my sword")
    assert [m["npc"] for m in npc_block(campaign)] == ["Oren"]


def test_after_a_turn_the_memory_tasks_run_by_themselves(
    campaign, alice, settings, django_capture_on_commit_callbacks
):
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 60
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 40
    with django_capture_on_commit_callbacks(execute=True), turns_deferred():
        for n in range(6):
            greet = act(campaign, alice, f"I greet the innkeeper ({n})")
            tools = [npc("Maren Holt", "the innkeeper")] if n == 0 else []
            dm(campaign, greet, "Maren Holt, the innkeeper, nods at Alice.", *tools)
    assert NpcMemory.objects.filter(campaign=campaign, npc_name="Maren Holt").exists()
    assert Event.objects.filter(campaign=campaign, type="summary_created").exists()


def test_a_secret_told_or_noticed_is_remembered_with_who_knows_it(campaign, alice, bob, gm):
    from rest_framework.test import APIClient

    from campaigns.whispers import whisper_send

    greet = act(campaign, alice, "I greet the innkeeper")
    dm(campaign, greet, "Maren Holt, the innkeeper, nods.", npc("Maren Holt", "the innkeeper"))
    alice_m = membership_get(campaign_id=campaign.id, user_id=alice.id)
    bob_m = membership_get(campaign_id=campaign.id, user_id=bob.id)
    confided = whisper_send(
        membership=alice_m, to="dm", text="I threaten the innkeeper under my breath"
    )
    # Between people: never read into an NPC's memory.
    whisper_send(membership=bob_m, to=str(alice.id), text="the innkeeper owes me money")
    order = act(campaign, bob, "I order an ale")
    dm(
        campaign,
        order,
        "The ale is poured.",
        {
            "name": "narrate_private",
            "args": {"to": str(bob.id), "text": "You see Maren Holt hide a letter under the bar."},
        },
    )
    [noticed_event] = Event.objects.filter(campaign=campaign, type="whisper", actor_kind="dm")
    npc_memories_extract(campaign_id=campaign.id)

    told = NpcMemory.objects.get(campaign=campaign, relation="told", source_seq=confided.seq)
    assert (told.npc_name, told.target_name, told.sentiment) == ("Maren Holt", "Alice", -2)
    assert told.known_by == [str(alice.id)]
    noticed = NpcMemory.objects.get(campaign=campaign, relation="noticed")
    assert noticed.source_seq == noticed_event.seq and noticed.target_name == "Bob"
    assert noticed.known_by == [str(bob.id)] and "letter" in noticed.detail
    assert not NpcMemory.objects.filter(campaign=campaign, detail__contains="owes me").exists()
    public = NpcMemory.objects.filter(campaign=campaign, known_by=[])
    assert public.filter(relation="met", target_name="Alice").exists()

    # The DM's prompt says who alone knows each secret.
    act(campaign, alice, "I ask the innkeeper about a room")
    [memory] = npc_block(campaign)
    lines = memory["memories"]
    assert any(
        "I threaten the innkeeper under my breath" in m and m.endswith("(secret: only Alice knows)")
        for m in lines
    )
    assert any("letter" in m and m.endswith("(secret: only Bob knows)") for m in lines)
    assert memory["feels"]["Alice"] == "wary (-2)"

    # The API: a player sees what everyone knows and their own secrets; GMs all, with who.
    def view(user) -> list[dict]:
        client = APIClient()
        client.force_authenticate(user)
        response = client.get(f"/api/campaigns/{campaign.id}/npc_memories")
        assert response.status_code == 200, response.content
        return response.json()

    seqs = {who: {e["source_seq"] for e in view(who)} for who in (alice, bob, gm)}
    assert confided.seq in seqs[alice] and noticed_event.seq not in seqs[alice]
    assert noticed_event.seq in seqs[bob] and confided.seq not in seqs[bob]
    assert {confided.seq, noticed_event.seq} <= seqs[gm]
    gm_told = next(e for e in view(gm) if e["source_seq"] == confided.seq)
    assert gm_told["secret"] is True and gm_told["known_by"] == [str(alice.id)]
    assert all("known_by" not in e for e in view(bob))
    assert {e["source_seq"] for e in view(bob) if not e["secret"]} == {
        e["source_seq"] for e in view(gm) if not e["known_by"]
    }


def test_the_npc_memories_api_refuses_strangers_and_bad_queries(campaign, alice, make_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(make_user("mallory"))
    assert client.get(f"/api/campaigns/{campaign.id}/npc_memories").status_code == 403
    client.force_authenticate(alice)
    for query in ("limit=0", "limit=x", "after_seq=-1", "npc_id=" + "x" * 65):
        response = client.get(f"/api/campaigns/{campaign.id}/npc_memories?{query}")
        assert response.status_code == 400, query
    assert client.get(f"/api/campaigns/{uuid.uuid4()}/npc_memories").status_code == 404


def told_seqs(campaign, name: str) -> list[int]:
    return list(
        NpcMemory.objects.filter(campaign=campaign, npc_name=name, relation="told")
        .order_by("source_seq")
        .values_list("source_seq", flat=True)
    )


def test_gm_run_play_without_dm_turns_is_remembered_as_it_goes(
    campaign, alice, gm, django_capture_on_commit_callbacks
):
    """Past the DM's last turn the GM runs the table for 2,000+ events (players act, the
    GM keeps the flags): the NPCs still remember it, and the memory keeps up with play."""
    from campaigns.tools import gm_set_value

    def committed(write, *args, **kwargs):
        # Each write is a commit of its own, as at a table: its hooks run after it (the
        # memory tasks among them, queued by memory.receivers).
        with django_capture_on_commit_callbacks(execute=True):
            return write(*args, **kwargs)

    asked: list[int] = []
    behind: list[int] = []
    with turns_deferred():
        greet = committed(act, campaign, alice, "I greet the innkeeper")
        asked.append(greet.seq)
        tools = npc("Maren Holt", "the innkeeper")
        committed(dm, campaign, greet, "Maren Holt, the innkeeper, nods.", tools)
        n = last_seq = 0
        while last_seq < 2100:
            for _ in range(8):
                n += 1
                text = f"I ask the innkeeper about rumour {n}" if n % 2 else "I look around"
                event = committed(act, campaign, alice, text)
                if n % 2:
                    asked.append(event.seq)
            last_seq = committed(
                gm_set_value, campaign_id=campaign.id, by_user=gm, path="/flags/rumours", value=n
            )[-1].seq
            told = told_seqs(campaign, "Maren Holt")
            behind.append(last_seq - told[-1])

    told = told_seqs(campaign, "Maren Holt")
    assert told[0] == greet.seq and told[-1] > 2000 and set(told) <= set(asked)
    # Read as play goes: never more than a scene behind. Only the newest actions (which
    # a DM might yet answer) are not read yet.
    assert max(behind) < 100
    assert [s for s in asked if s not in told] == [s for s in asked if s > told[-1]]
    assert len(NpcMemory.objects.filter(campaign=campaign, relation="at")) == 1


def test_an_unanswered_stretch_past_a_window_of_the_log_is_read(campaign, alice):
    """Over a thousand events without a DM turn (more than one read of the log) and then
    a turn: nothing stalls, every action naming the NPC is remembered once."""
    greet = act(campaign, alice, "I greet the innkeeper")
    dm(campaign, greet, "Maren Holt, the innkeeper, nods.", npc("Maren Holt", "the innkeeper"))
    npc_memories_extract(campaign_id=campaign.id)
    with turns_deferred():
        for n in range(0, 2100, 50):
            events_append(
                campaign_id=campaign.id,
                events=[
                    NewEvent(
                        "player_action",
                        {"action_id": str(uuid.uuid4()), "text": f"I tip Maren Holt ({k})"},
                        "player",
                        alice.id,
                    )
                    for k in range(n, n + 50)
                ],
            )
    last = act(campaign, alice, "I thank the innkeeper")
    dm(campaign, last, "Maren Holt smiles.")

    npc_memories_extract(campaign_id=campaign.id)
    told = told_seqs(campaign, "Maren Holt")
    assert len(told) == 1 + 2100 + 1 and told[-1] == last.seq
    assert npc_memories_extract(campaign_id=campaign.id) == 0


def test_an_action_the_dm_has_not_answered_waits_unless_no_answer_is_coming(campaign, alice):
    """A turn in progress is read whole once the DM answers it (an NPC its narration
    brings in met the actor); an action left unanswered for long is read as it is."""
    from datetime import timedelta

    from django.utils import timezone

    with turns_deferred():
        waiting = act(campaign, alice, "I ring the bell for the innkeeper")
    npc_memories_extract(campaign_id=campaign.id)
    dm(
        campaign,
        waiting,
        "Maren Holt, the innkeeper, hurries in.",
        npc("Maren Holt", "the innkeeper"),
    )
    npc_memories_extract(campaign_id=campaign.id)
    assert ("met", "Alice", 0) in edges(campaign, "Maren Holt")

    # An hour ago, and never answered (the DM stopped, or the GM runs the table).
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "player_action",
                {"action_id": str(uuid.uuid4()), "text": "I thank Maren Holt"},
                "player",
                alice.id,
                created_at=timezone.now() - timedelta(hours=1),
            )
        ],
    )
    npc_memories_extract(campaign_id=campaign.id)
    assert ("told", "Alice", 1) in edges(campaign, "Maren Holt")
