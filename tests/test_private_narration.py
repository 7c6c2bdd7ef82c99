"""What only one player perceives: the DM's `narrate_private` (a `whisper` from the DM)
with a private roll reaches that player (and the GMs) alone, on the socket, in the events
API and in the snapshot; the next prompt tells the DM who knows the secret."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.test import Client

from campaigns import selectors
from campaigns.services import player_action_submit
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from orchestrator.prompt import prompt_build
from orchestrator.receivers import turns_deferred
from orchestrator.schema import answer_parse
from orchestrator.selectors import turn_context_get
from rpgai.errors import DomainError
from rpgai.tasks import wait_idle
from tests.reads import events_seen_by, snapshot_seen_by
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)

TRAP_SEARCH = "I check the door for traps"
SECRET_RECORDS = ("roll_requested", "roll_result", "whisper")


@pytest.fixture
def table(campaign, join, make_user, gm):
    alice, bob = make_user("alice"), make_user("bob")
    return {
        "gm": gm,
        "alice": alice,
        "bob": bob,
        "alice_m": join(alice, "Alice"),
        "bob_m": join(bob, "Bob"),
    }


def _through(campaign) -> int:
    return selectors.snapshot_get(campaign_id=campaign.id).state["turn"]["last_action_seq"]


def _until_narration(message) -> bool:
    return message["type"] == "event" and message["event"]["type"] == "dm_narration"


async def test_a_trap_search_gets_a_private_roll_and_words_only_the_searcher_sees(campaign, table):
    rooms = {who: Room(campaign.id, table[who]) for who in ("gm", "alice", "bob")}
    for room in rooms.values():
        await room.open()
        await room.hello(0)
    await rooms["alice"].send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": TRAP_SEARCH}
    )
    seen = {who: events_of(await room.recv_until(_until_narration)) for who, room in rooms.items()}
    await wait_idle()
    alice_id = str(table["alice"].id)

    # Alice: her action, a private perception roll, the DM's words to her alone, then the
    # one public narration of the turn.
    types = [e["type"] for e in seen["alice"]]
    assert types == ["player_action", "roll_requested", "roll_result", "whisper", "dm_narration"]
    private = [e for e in seen["alice"] if e["type"] in SECRET_RECORDS]
    assert all(e["visibility"] == {"kind": "users", "user_ids": [alice_id]} for e in private)
    whisper = private[-1]
    assert whisper["actor"] == {"kind": "dm", "user_id": None}
    assert whisper["payload"]["to"] == alice_id == whisper["payload"]["to_user_id"]
    assert whisper["payload"]["from_user_id"] is None
    secret_text = whisper["payload"]["text"]
    assert private[0]["payload"]["requested_by"] == "dm"
    narration = seen["alice"][-1]
    assert secret_text not in narration["payload"]["text"]
    # The GM sees it all; Bob only the action and the narration.
    assert [e["seq"] for e in seen["gm"]] == [e["seq"] for e in seen["alice"]]
    assert [e["type"] for e in seen["bob"]] == ["player_action", "dm_narration"]
    for room in rooms.values():
        await room.close()

    secret_seqs = {e["seq"] for e in private}
    for who in ("alice", "gm"):
        got = {e["seq"] for e in await sync_to_async(events_seen_by)(campaign, table[who])}
        assert secret_seqs <= got
    bob_events = await sync_to_async(events_seen_by)(campaign, table["bob"])
    assert not secret_seqs & {e["seq"] for e in bob_events}
    assert secret_text not in json.dumps(bob_events)
    bob_state = await sync_to_async(snapshot_seen_by)(campaign, table["bob"])
    assert secret_text not in json.dumps(bob_state)
    # Bob's late catch-up does not carry it either.
    late = Room(campaign.id, table["bob"])
    await late.open()
    assert not secret_seqs & {e["seq"] for e in events_of(await late.hello(0))}
    await late.close()


def test_a_search_without_a_trap_stays_a_public_roll(campaign, table):
    with turns_deferred():
        player_action_submit(
            membership=table["alice_m"],
            action_id=uuid.uuid4(),
            text="Alice searches the bar for hidden coins",
        )
    from orchestrator.services import turns_run_pending

    turns_run_pending(campaign_id=campaign.id)
    events = selectors.events_after(campaign_id=campaign.id, after_seq=0)
    rolls = [e for e in events if e.type == "roll_result"]
    assert [r.payload["formula"] for r in rolls] == ["1d20+2"]
    assert all(r.visibility == {"kind": "all"} for r in rolls)
    assert not [e for e in events if e.type == "whisper"]


def test_narrate_private_to_someone_not_at_the_table_is_refused_in_tool_errors(campaign, table):
    stranger = str(uuid.uuid4())
    calls = [
        {"name": "narrate_private", "args": {"to": stranger, "text": "You see a ghost."}},
        {"name": "narrate_private", "args": {"to": "dm", "text": "You see a ghost."}},
        {"name": "narrate_private", "args": {"to": str(table["bob"].id), "text": "   "}},
        {"name": "narrate_private", "args": {"to": str(table["bob"].id), "text": "a\x00b"}},
        {"name": "narrate_private", "args": {"to": str(table["bob"].id)}},
        {"name": "narrate_private", "args": {"to": str(table["bob"].id), "text": "x" * 2001}},
        {"name": "narrate_private", "args": {"to": str(table["bob"].id), "text": "Psst, Bob."}},
    ]
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="The hall is quiet.",
        options=["Go on"],
        tool_calls=calls,
        through_seq=_through(campaign),
    )
    assert [r.index for r in result.rejections] == [0, 1, 2, 3, 4, 5]
    assert "member" in result.rejections[0].reason
    [whisper] = [e for e in result.events if e.type == "whisper"]
    assert whisper.payload["text"] == "Psst, Bob."
    assert whisper.visibility == {"kind": "users", "user_ids": [str(table["bob"].id)]}
    narration = result.events[-1]
    assert narration.type == "dm_narration"
    assert [e["index"] for e in narration.payload["tool_errors"]] == [0, 1, 2, 3, 4, 5]
    assert [e.type for e in result.events].count("dm_narration") == 1


def test_a_model_answer_with_narrate_private_goes_through_the_schema(campaign, table):
    bob_id = str(table["bob"].id)
    answer = answer_parse(
        json.dumps(
            {
                "narration": "Bob stiffens for a moment.",
                "options": ["Go on"],
                "tool_calls": [
                    {
                        "name": "roll",
                        "args": {"formula": "1d20", "reason": "insight", "private_to": bob_id},
                    },
                    {
                        "name": "narrate_private",
                        "args": {"to": bob_id, "text": "The host is lying."},
                    },
                ],
            }
        )
    )
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=answer.narration,
        options=answer.options,
        tool_calls=answer.tool_calls_as_dicts(),
        through_seq=0,
    )
    assert result.rejections == []
    assert [e.type for e in result.events][-2:] == ["whisper", "dm_narration"]
    alice_view = json.dumps(events_seen_by(campaign, table["alice"]))
    assert "The host is lying." not in alice_view
    assert "The host is lying." in json.dumps(events_seen_by(campaign, table["bob"]))
    # The model is told the tool exists, with what its arguments mean.
    with pytest.raises(ValueError, match="to"):
        answer_parse(
            json.dumps(
                {
                    "narration": "x",
                    "options": ["Go on"],
                    "tool_calls": [{"name": "narrate_private", "args": {"text": "hi"}}],
                }
            )
        )


def test_the_internal_tools_endpoint_runs_narrate_private(campaign, table, settings):
    settings.INTERNAL_TOOLS_SECRET = "internal-secret-for-this-test-0123456789"
    response = Client().post(
        "/internal/tools/execute",
        json.dumps(
            {
                "campaign_id": str(campaign.id),
                "narration": "A chill passes.",
                "options": ["Go on"],
                "tool_calls": [
                    {
                        "name": "narrate_private",
                        "args": {"to": str(table["alice"].id), "text": "A cold hand on your neck."},
                    },
                    {"name": "narrate_private", "args": {"to": "nobody", "text": "Boo."}},
                ],
            }
        ),
        content_type="application/json",
        HTTP_X_INTERNAL_SECRET=settings.INTERNAL_TOOLS_SECRET,
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert [e["type"] for e in data["events"]] == ["whisper", "dm_narration"]
    assert data["events"][0]["visibility"] == {
        "kind": "users",
        "user_ids": [str(table["alice"].id)],
    }
    assert [r["index"] for r in data["rejections"]] == [1]


def _prompt_text(campaign, membership, text: str) -> str:
    with turns_deferred():
        action = player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    context = turn_context_get(
        campaign_id=campaign.id,
        answered_seq=state["turn"]["answered_through_seq"],
        through_seq=action.seq,
    )
    return prompt_build(context=context, budget=8000).messages[1]["content"]


def _recent_items(prompt: str) -> list[dict]:
    start = prompt.index("BEGIN RECENT EVENTS>>>\n") + len("BEGIN RECENT EVENTS>>>\n")
    end = prompt.index("\n<<<", start)
    return [json.loads(line) for line in prompt[start:end].split("\n")]


def test_the_next_prompt_marks_each_secret_with_who_knows_it(campaign, table):
    from orchestrator.services import turns_run_pending

    with turns_deferred():
        player_action_submit(membership=table["alice_m"], action_id=uuid.uuid4(), text=TRAP_SEARCH)
    turns_run_pending(campaign_id=campaign.id)
    events = selectors.events_after(campaign_id=campaign.id, after_seq=0)
    [whisper] = [e for e in events if e.type == "whisper"]
    gm_m = selectors.membership_get(campaign_id=campaign.id, user_id=table["gm"].id)
    whisper_send(membership=gm_m, to=str(table["bob"].id), text="The cellar key is under the mat")
    whisper_send(membership=table["bob_m"], to="dm", text="I am the thief they seek")

    items = _recent_items(_prompt_text(campaign, table["bob_m"], "I order an ale"))
    by_type = {}
    for item in items:
        by_type.setdefault(item["type"], []).append(item)
    only_alice = "only Alice and the GM know this; never reveal it to the other players"
    [private_roll] = by_type["roll_result"]
    assert private_roll["secret"] == only_alice and private_roll["formula"] == "1d20+4"
    told_alice, told_dm = by_type["whisper"]
    assert told_alice == {
        "seq": whisper.seq,
        "type": "whisper",
        "who": "DM",
        "to": "Alice",
        "text": whisper.payload["text"],
        "secret": only_alice,
    }
    assert told_dm["who"] == "Bob" and told_dm["text"] == "I am the thief they seek"
    assert told_dm["secret"].startswith("only Bob and the GM know this")
    # A whisper between people never reaches the DM; public events carry no secret note.
    assert all("cellar key" not in json.dumps(item) for item in items)
    assert all("secret" not in item for item in by_type["dm_narration"] + by_type["player_action"])


def test_the_rules_tell_the_dm_to_keep_secrets_out_of_the_public_narration(campaign, table):
    with turns_deferred():
        action = player_action_submit(
            membership=table["alice_m"], action_id=uuid.uuid4(), text="I wait"
        )
    context = turn_context_get(campaign_id=campaign.id, answered_seq=0, through_seq=action.seq)
    system = prompt_build(context=context, budget=8000).messages[0]["content"]
    assert "narrate_private" in system
    assert "never put a secret into the public narration" in system


@pytest.mark.parametrize("text", ["ruby\x00", "\ud800 lone", "ok \udfff"])
def test_a_whisper_with_nul_or_a_lone_surrogate_is_refused_and_not_stored(campaign, table, text):
    before = selectors.snapshot_get(campaign_id=campaign.id).version
    with pytest.raises(DomainError) as refused:
        whisper_send(membership=table["alice_m"], to="gm", text=text)
    assert refused.value.code == "invalid_message"
    assert selectors.snapshot_get(campaign_id=campaign.id).version == before


async def test_a_whisper_with_nul_over_the_socket_gets_an_error(campaign, table):
    room = Room(campaign.id, table["alice"])
    await room.open()
    await room.hello(0)
    for text in ("a\\u0000b", "\\ud800"):
        await room.send_raw('{"type": "client.whisper", "to": "gm", "text": "' + text + '"}')
        error = (await room.recv_until(lambda m: m["type"] == "error"))[-1]
        assert error["code"] == "invalid_message"
    await room.send({"type": "client.whisper", "to": "gm", "text": "still here"})
    assert (await room.recv_until(lambda m: m["type"] == "server.ack"))[-1]["seq"]
    await room.close()
