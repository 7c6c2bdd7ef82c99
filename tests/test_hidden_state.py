"""Hidden entities and flags stay out of a player's snapshot (issue 12): the DM's
`create_entity` with `hidden: true`, patches of hidden things and of `/hidden/flags`,
a reveal that the room learns, the GM's hide and reveal, the DM's prompt and the NPC
memories a player may read."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async

from campaigns import selectors
from campaigns.services import player_action_submit
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from memory.npc_memory import npc_memories_extract
from orchestrator.prompt import prompt_build
from orchestrator.receivers import turns_deferred
from orchestrator.schema import answer_parse
from orchestrator.selectors import turn_context_get, turn_owed
from tests.reads import api_as, events_seen_by, snapshot_seen_by
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)

GHOUL = "Grave-Ghoul Vesk"
PATCH_TYPES = ("state_patch_requested", "state_patch_applied")
GM_ONLY = {"kind": "gm"}


@pytest.fixture
def table(campaign, join, make_user, gm):
    alice = make_user("alice")
    return {"gm": gm, "alice": alice, "alice_m": join(alice, "Alice")}


def _state(campaign, user) -> dict:
    return snapshot_seen_by(campaign, user)["state"]


def _turn(campaign, *calls: dict, narration: str = "The crypt is quiet.") -> list:
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=narration,
        options=["Go on"],
        tool_calls=list(calls),
        through_seq=0,
    )
    return result.events


def _ghoul(**extra) -> dict:
    args = {
        "kind": "creature",
        "name": GHOUL,
        "data": {"description": "a ghoul lurking in the ossuary"},
        "hidden": True,
    }
    return {"name": "create_entity", "args": {**args, **extra}}


def _patch(*operations: dict, reason: str = "the story moves") -> dict:
    return {"name": "apply_state_patch", "args": {"reason": reason, "patches": list(operations)}}


def _ghoul_id(campaign) -> str:
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    return next(i for i, e in state["entities"].items() if e["name"] == GHOUL)


def _until_narration(message) -> bool:
    return message["type"] == "event" and message["event"]["type"] == "dm_narration"


async def test_a_hidden_entity_reaches_the_gm_only_on_the_socket_the_api_and_the_snapshot(
    campaign, table
):
    rooms = {who: Room(campaign.id, table[who]) for who in ("gm", "alice")}
    for room in rooms.values():
        await room.open()
        await room.hello(0)
    await sync_to_async(_turn)(campaign, _ghoul(), narration="Bones crunch somewhere below.")
    seen = {who: events_of(await room.recv_until(_until_narration)) for who, room in rooms.items()}
    for room in rooms.values():
        await room.close()

    assert [e["type"] for e in seen["alice"]] == ["dm_narration"]
    assert GHOUL not in json.dumps(seen["alice"])
    [created] = [e for e in seen["gm"] if e["type"] == "entity_created"]
    assert created["visibility"] == GM_ONLY
    assert created["payload"]["entity"]["name"] == GHOUL
    assert created["payload"]["entity"]["hidden"] is True

    alice_events = await sync_to_async(events_seen_by)(campaign, table["alice"])
    assert GHOUL not in json.dumps(alice_events)
    assert created["seq"] not in {e["seq"] for e in alice_events}
    assert created["seq"] in {
        e["seq"] for e in await sync_to_async(events_seen_by)(campaign, table["gm"])
    }
    alice_state = await sync_to_async(_state)(campaign, table["alice"])
    assert GHOUL not in json.dumps(alice_state) and alice_state["entities"] == {}
    gm_state = await sync_to_async(_state)(campaign, table["gm"])
    [ghoul] = gm_state["entities"].values()
    assert ghoul["name"] == GHOUL and ghoul["hidden"] is True
    # A late catch-up over the socket does not carry it either.
    late = Room(campaign.id, table["alice"])
    await late.open()
    assert GHOUL not in json.dumps(await late.hello(0))
    await late.close()


def test_patches_of_a_hidden_entity_and_hidden_flags_are_for_the_gm_alone(campaign, table):
    _turn(campaign, _ghoul())
    ghoul_id = _ghoul_id(campaign)
    character_id = next(iter(selectors.snapshot_get(campaign_id=campaign.id).state["characters"]))
    events = _turn(
        campaign,
        _patch(
            {"op": "add", "path": f"/entities/{ghoul_id}/data/hunger", "value": "ravenous"},
            reason="the ghoul grows hungry",
        ),
        _patch({"op": "add", "path": "/hidden/flags/ossuary_cursed", "value": "since the plague"}),
        _patch({"op": "replace", "path": f"/characters/{character_id}/hp", "value": 5}),
        # Refused (no such key to replace): still about the hidden ghoul, so GM-only.
        _patch({"op": "replace", "path": f"/entities/{ghoul_id}/data/nothing", "value": 1}),
    )
    patch_events = [e for e in events if e.type.startswith("state_patch_")]
    assert [e.type for e in patch_events] == [
        *PATCH_TYPES,
        *PATCH_TYPES,
        *PATCH_TYPES,
        "state_patch_requested",
        "state_patch_rejected",
    ]
    visibilities = [e.visibility for e in patch_events]
    assert visibilities[:4] == [GM_ONLY] * 4
    assert visibilities[4:6] == [{"kind": "all"}] * 2
    assert visibilities[6:] == [GM_ONLY] * 2
    # The first hidden flag made its own room for it, in the recorded patch.
    assert patch_events[3].payload["patches"] == [
        {"op": "add", "path": "/hidden", "value": {"flags": {}}},
        {"op": "add", "path": "/hidden/flags/ossuary_cursed", "value": "since the plague"},
    ]

    gm_state = _state(campaign, table["gm"])
    assert gm_state["hidden"]["flags"] == {"ossuary_cursed": "since the plague"}
    assert gm_state["entities"][ghoul_id]["data"]["hunger"] == "ravenous"
    alice_state = _state(campaign, table["alice"])
    assert "hidden" not in alice_state and ghoul_id not in alice_state["entities"]
    assert alice_state["characters"][character_id]["hp"] == 5
    alice_text = json.dumps(events_seen_by(campaign, table["alice"]))
    for secret in ("ravenous", "ossuary_cursed", "since the plague", ghoul_id, GHOUL):
        assert secret not in alice_text
    # Re-folding the log gives the same state (the recorded patches are whole).
    from campaigns.events import fold_all

    log = selectors.events_after(campaign_id=campaign.id, limit=1000)
    stored = selectors.snapshot_get(campaign_id=campaign.id).state
    assert fold_all([selectors.folded(e) for e in log]) == stored


async def test_a_reveal_is_public_and_brings_the_entity_to_the_players(campaign, table):
    await sync_to_async(_turn)(campaign, _ghoul())
    ghoul_id = await sync_to_async(_ghoul_id)(campaign)
    alice = Room(campaign.id, table["alice"])
    await alice.open()
    await alice.hello(0)
    await sync_to_async(_turn)(
        campaign,
        _patch(
            {"op": "replace", "path": f"/entities/{ghoul_id}/hidden", "value": False},
            reason="the ghoul lunges from the dark",
        ),
        narration="A ghoul lunges from the dark!",
    )
    seen = events_of(await alice.recv_until(_until_narration))
    await alice.close()
    assert [e["type"] for e in seen] == [*PATCH_TYPES, "dm_narration"]
    applied = seen[1]
    assert applied["visibility"] == {"kind": "all"}
    [revealed] = applied["payload"]["revealed"]
    assert revealed["id"] == ghoul_id and revealed["name"] == GHOUL
    assert revealed["data"] == {"description": "a ghoul lurking in the ossuary"}
    state = await sync_to_async(_state)(campaign, table["alice"])
    assert state["entities"][ghoul_id]["name"] == GHOUL
    assert state["entities"][ghoul_id]["hidden"] is False


def test_the_dm_may_patch_hidden_flags_but_not_the_rest_of_hidden(campaign, table):
    whisper_send(membership=table["alice_m"], to="gm", text="I do not trust the priest")
    before = selectors.snapshot_get(campaign_id=campaign.id).state["hidden"]
    attempts = [
        {"op": "replace", "path": "/hidden/whispers", "value": []},
        {"op": "remove", "path": "/hidden/whispers/0"},
        {"op": "add", "path": "/hidden/secrets", "value": "x"},
        {"op": "replace", "path": "/hidden", "value": {"flags": {}}},
        {"op": "copy", "from": "/hidden/whispers", "path": "/flags/leak"},
        {"op": "add", "path": "/entities/" + str(uuid.uuid4()) + "/hidden", "value": "yes"},
    ]
    events = _turn(campaign, *[_patch(op) for op in attempts])
    rejected = [e for e in events if e.type == "state_patch_rejected"]
    assert len(rejected) == len(attempts)
    assert all(e.visibility == GM_ONLY for e in rejected[:5])
    assert "not allowed" in rejected[0].payload["error"]
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    assert state["hidden"] == before and "leak" not in state["flags"]

    # A flag under /hidden/flags is fine, beside the whispers: the server makes the
    # flags' room first, in the recorded patch.
    [*_, applied, _narration] = _turn(
        campaign, _patch({"op": "add", "path": "/hidden/flags/priest_is_cultist", "value": True})
    )
    assert applied.type == "state_patch_applied" and applied.visibility == GM_ONLY
    assert applied.payload["patches"] == [
        {"op": "add", "path": "/hidden/flags", "value": {}},
        {"op": "add", "path": "/hidden/flags/priest_is_cultist", "value": True},
    ]
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    assert state["hidden"]["flags"] == {"priest_is_cultist": True}
    assert state["hidden"]["whispers"] == before["whispers"]
    assert "priest_is_cultist" not in json.dumps(_state(campaign, table["alice"]))


def test_the_gm_hides_reveals_and_sets_hidden_flags_through_gm_values(campaign, table):
    _turn(
        campaign,
        {"name": "create_entity", "args": {"kind": "npc", "name": "Brother Aldo", "data": {}}},
    )
    aldo = next(iter(selectors.snapshot_get(campaign_id=campaign.id).state["entities"]))
    url = f"/api/campaigns/{campaign.id}/gm/values"
    gm = api_as(table["gm"])

    hide = gm.post(url, {"path": f"/entities/{aldo}/hidden", "value": True}, format="json")
    assert hide.status_code == 201, hide.content
    assert {e["visibility"]["kind"] for e in hide.json()["events"]} == {"gm"}
    assert aldo not in _state(campaign, table["alice"])["entities"]
    assert "Brother Aldo" not in json.dumps(_state(campaign, table["alice"]))

    flag = gm.post(url, {"path": "/hidden/flags/aldo_is_the_killer", "value": True}, format="json")
    assert flag.status_code == 201, flag.content
    assert {e["visibility"]["kind"] for e in flag.json()["events"]} == {"gm"}
    assert _state(campaign, table["gm"])["hidden"]["flags"] == {"aldo_is_the_killer": True}
    assert "aldo_is_the_killer" not in json.dumps(events_seen_by(campaign, table["alice"]))

    reveal = gm.post(url, {"path": f"/entities/{aldo}/hidden", "value": False}, format="json")
    assert reveal.status_code == 201, reveal.content
    applied = reveal.json()["events"][-1]
    assert applied["visibility"] == {"kind": "all"}
    assert [e["name"] for e in applied["payload"]["revealed"]] == ["Brother Aldo"]
    assert _state(campaign, table["alice"])["entities"][aldo]["name"] == "Brother Aldo"

    for body in (
        {"path": "/hidden/whispers", "value": []},
        {"path": "/hidden", "value": {}},
        {"path": f"/entities/{aldo}/hidden", "value": "no"},
    ):
        refused = gm.post(url, body, format="json")
        assert refused.status_code == 400, (body, refused.content)
        assert refused.json()["code"] == "patch_rejected"
    # A player may not use it at all.
    assert (
        api_as(table["alice"])
        .post(url, {"path": f"/entities/{aldo}/hidden", "value": True}, format="json")
        .status_code
        == 403
    )


def test_the_gm_undoing_a_hidden_creation_stays_hidden(campaign, table):
    [created, _narration] = _turn(campaign, _ghoul())
    response = api_as(table["gm"]).post(
        f"/api/campaigns/{campaign.id}/gm/reverts", {"seq": created.seq}, format="json"
    )
    assert response.status_code == 201, response.content
    assert {e["visibility"]["kind"] for e in response.json()["events"]} == {"gm"}
    assert selectors.snapshot_get(campaign_id=campaign.id).state["entities"] == {}


def test_a_second_entity_named_like_a_hidden_one_is_refused_without_naming_it(campaign, table):
    _turn(campaign, _ghoul())
    events = _turn(campaign, _ghoul(hidden=False))
    narration = events[-1]
    [error] = narration.payload["tool_errors"]
    assert GHOUL not in error["reason"] and _ghoul_id(campaign) not in error["reason"]
    assert "cannot be created" in error["reason"] and "exists" not in error["reason"]


def test_a_hidden_entity_removed_in_a_turn_is_not_made_again_in_public_under_its_name(
    campaign, table
):
    """The secrecy property's finding: in one turn the DM removed a hidden entity (a
    GM-only patch) and then created a public one of the same kind and name, which the
    duplicate check no longer saw: a public `entity_created` carried the secret name."""
    _turn(campaign, _ghoul())
    ghoul_id = _ghoul_id(campaign)
    events = _turn(
        campaign, _patch({"op": "remove", "path": f"/entities/{ghoul_id}"}), _ghoul(hidden=False)
    )

    assert [e.type for e in events] == [*PATCH_TYPES, "dm_narration"]
    assert all(e.visibility == GM_ONLY for e in events[:2])
    [error] = events[-1].payload["tool_errors"]
    assert error["index"] == 1 and error["name"] == "create_entity"
    # The same words as for a hidden one still there: nothing more for the players.
    _turn(campaign, _ghoul(name="Bone Wight"))
    present = _turn(campaign, _ghoul(name="Bone Wight", hidden=False))
    assert error["reason"] == present[-1].payload["tool_errors"][0]["reason"]
    alice = table["alice"]
    assert GHOUL not in json.dumps(events_seen_by(campaign, alice))
    assert GHOUL not in json.dumps(_state(campaign, alice))
    assert selectors.snapshot_get(campaign_id=campaign.id).state["entities"].get(ghoul_id) is None


def test_a_hidden_entity_removed_in_a_turn_may_be_made_again_hidden(campaign, table):
    _turn(campaign, _ghoul())
    ghoul_id = _ghoul_id(campaign)
    events = _turn(campaign, _patch({"op": "remove", "path": f"/entities/{ghoul_id}"}), _ghoul())

    assert "tool_errors" not in events[-1].payload
    [created] = [e for e in events if e.type == "entity_created"]
    assert created.visibility == GM_ONLY and created.payload["entity"]["id"] != ghoul_id
    assert GHOUL not in json.dumps(events_seen_by(campaign, table["alice"]))


def test_the_model_schema_takes_hidden_and_the_prompt_marks_hidden_things(campaign, table):
    answer = answer_parse(
        json.dumps(
            {"narration": "Something waits below.", "options": ["Go on"], "tool_calls": [_ghoul()]}
        )
    )
    [call] = answer.tool_calls_as_dicts()
    assert call["args"]["hidden"] is True
    turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=answer.narration,
        options=answer.options,
        tool_calls=answer.tool_calls_as_dicts(),
        through_seq=0,
    )
    _turn(campaign, _patch({"op": "add", "path": "/hidden/flags/crypt_door_locked", "value": True}))
    whisper_send(membership=table["alice_m"], to="gm", text="a whisper the DM never reads")
    with turns_deferred():
        player_action_submit(
            membership=table["alice_m"], action_id=uuid.uuid4(), text="I light a torch"
        )
    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    prompt = prompt_build(context=context, budget=8000, nonce="0123456789abcdef")
    system, user = prompt.messages[0]["content"], prompt.messages[1]["content"]
    assert '"hidden": true' in system  # the rule tells how to make and reveal one
    match = re.search(r"BEGIN STATE>>>\n(.*?)\n<<<", user, re.DOTALL)
    state = json.loads(match.group(1))
    ghoul_id = _ghoul_id(campaign)
    ghoul = state["entities"][ghoul_id]
    assert ghoul["hidden"] is True and "not discovered by the players" in ghoul["secret"]
    assert state["hidden"]["flags"] == {"crypt_door_locked": True}
    assert "whispers" not in state["hidden"]
    # Its GM-only creation is a secret in the recent events too.
    created = next(
        json.loads(line)
        for line in user.splitlines()
        if line.startswith("{") and '"entity_created"' in line
    )
    assert "only the GM knows" in created["secret"]


def test_players_do_not_read_the_memories_of_a_hidden_npc(campaign, table):
    spy = {
        "name": "create_entity",
        "args": {
            "kind": "npc",
            "name": "Vesna",
            "data": {"description": "the hooded spy"},
            "hidden": True,
        },
    }
    _turn(campaign, spy)
    with turns_deferred():
        action = player_action_submit(
            membership=table["alice_m"],
            action_id=uuid.uuid4(),
            text="I thank the hooded spy for the warning",
        )
    turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="The tavern hums.",
        options=["Go on"],
        tool_calls=[],
        through_seq=action.seq,
    )
    npc_memories_extract(campaign_id=campaign.id)
    url = f"/api/campaigns/{campaign.id}/npc_memories"

    def names(user) -> set[str]:
        response = api_as(user).get(url)
        assert response.status_code == 200, response.content
        return {e["npc_name"] for e in response.json()}

    assert "Vesna" in names(table["gm"])
    assert "Vesna" not in names(table["alice"])
    spy_id = next(
        i
        for i, e in selectors.snapshot_get(campaign_id=campaign.id).state["entities"].items()
        if e["name"] == "Vesna"
    )
    assert api_as(table["alice"]).get(url + f"?npc_id={spy_id}").json() == []
    _turn(campaign, _patch({"op": "replace", "path": f"/entities/{spy_id}/hidden", "value": False}))
    assert "Vesna" in names(table["alice"])


def test_the_fake_dm_hides_a_secret_door_until_it_is_searched_for(campaign, table):
    from orchestrator.services import turns_run_pending

    def act(text: str) -> None:
        with turns_deferred():
            player_action_submit(membership=table["alice_m"], action_id=uuid.uuid4(), text=text)
        turns_run_pending(campaign_id=campaign.id)

    act("I tap the walls, wondering about a secret door")
    gm_state = _state(campaign, table["gm"])
    [(door_id, door)] = gm_state["entities"].items()
    assert door["name"] == "Secret door" and door["hidden"] is True
    assert door_id not in _state(campaign, table["alice"])["entities"]
    assert "Secret door" not in json.dumps(events_seen_by(campaign, table["alice"]))

    # A search finds it only when its roll succeeds: the dice decide (CONTRACTS §7).
    for attempt in range(12):
        act(f"I search the shelves for the secret door ({attempt})")
        [search] = [
            e["payload"]
            for e in events_seen_by(campaign, table["alice"])
            if e["type"] == "roll_result"
        ][-1:]
        found = door_id in _state(campaign, table["alice"])["entities"]
        assert found is search["success"], search
        if found:
            break
    assert _state(campaign, table["alice"])["entities"][door_id]["name"] == "Secret door"
    reveal = next(
        e for e in events_seen_by(campaign, table["alice"]) if e["payload"].get("revealed")
    )
    assert reveal["type"] == "state_patch_applied"


def test_the_hidden_flags_may_be_written_whole_in_a_fresh_campaign(campaign, table):
    [*_, applied, _narration] = _turn(
        campaign, _patch({"op": "add", "path": "/hidden/flags", "value": {"heir": "Brannoc"}})
    )
    assert applied.type == "state_patch_applied" and applied.visibility == GM_ONLY
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    assert state["hidden"] == {"flags": {"heir": "Brannoc"}}
    assert "Brannoc" not in json.dumps(_state(campaign, table["alice"]))
    # Only flags: a hidden value of another kind is refused by the schema.
    [*_, rejected, _narration] = _turn(
        campaign, _patch({"op": "add", "path": "/hidden/flags", "value": ["not", "a", "map"]})
    )
    assert rejected.type == "state_patch_rejected" and rejected.visibility == GM_ONLY


def test_a_patch_at_a_made_up_id_reads_as_one_at_a_hidden_id_and_is_for_the_gm_alone(
    campaign, table
):
    """Issue 16: a rejected patch printed the whole of /entities (jsonpointer's text) to
    everyone. Now the words are ours, the same for a hidden id and an unknown one, and
    both are GM-only: the players cannot tell whether a hidden entity has that id."""
    _turn(campaign, _ghoul())
    ghoul_id, unknown_id = _ghoul_id(campaign), str(uuid.uuid4())
    events = _turn(
        campaign,
        *[
            _patch({"op": op, "path": f"/entities/{entity_id}/data/mood/now", "value": 1})
            for entity_id in (ghoul_id, unknown_id)
            for op in ("add", "replace")
        ],
        _patch({"op": "remove", "path": f"/entities/{unknown_id}"}),
    )
    rejected = [e for e in events if e.type == "state_patch_rejected"]
    assert len(rejected) == 5
    assert all(e.visibility == GM_ONLY for e in events if e.type.startswith("state_patch_"))
    errors = [e.payload["error"] for e in rejected]
    assert errors[0].replace(ghoul_id, "ID") == errors[2].replace(unknown_id, "ID")
    assert errors[1].replace(ghoul_id, "ID") == errors[3].replace(unknown_id, "ID")
    assert errors[0].endswith(f"(add /entities/{ghoul_id}/data/mood/now): the path does not exist")
    for error in errors:
        assert GHOUL not in error and "ossuary" not in error and "{" not in error
    alice_text = json.dumps(events_seen_by(campaign, table["alice"]))
    assert "state_patch" not in alice_text and GHOUL not in alice_text


def test_a_hidden_value_is_not_copied_or_moved_where_the_players_look(campaign, table):
    _turn(campaign, _ghoul())
    _turn(campaign, _patch({"op": "add", "path": "/hidden/flags/heir", "value": "Brannoc"}))
    ghoul_id = _ghoul_id(campaign)
    description = f"/entities/{ghoul_id}/data/description"
    events = _turn(
        campaign,
        _patch({"op": "copy", "from": description, "path": "/flags/leak"}),
        _patch({"op": "move", "from": "/hidden/flags/heir", "path": "/scene/description"}),
        # Revealing in the same patch does not launder it either: reveal first, then copy.
        _patch(
            {"op": "replace", "path": f"/entities/{ghoul_id}/hidden", "value": False},
            {"op": "copy", "from": description, "path": "/flags/leak"},
            {"op": "replace", "path": f"/entities/{ghoul_id}/hidden", "value": True},
        ),
        # Within hidden state it is fine.
        _patch({"op": "copy", "from": description, "path": f"/entities/{ghoul_id}/data/lore"}),
    )
    types = [e.type for e in events if e.type.startswith("state_patch_")]
    assert types == [
        *("state_patch_requested", "state_patch_rejected") * 3,
        *PATCH_TYPES,
    ]
    assert all(e.visibility == GM_ONLY for e in events if e.type.startswith("state_patch_"))
    assert "where the players see it" in events[1].payload["error"]
    alice_state = _state(campaign, table["alice"])
    assert "leak" not in alice_state["flags"]
    assert "Brannoc" not in json.dumps(alice_state) and "ossuary" not in json.dumps(alice_state)
    gm_state = _state(campaign, table["gm"])
    assert gm_state["entities"][ghoul_id]["data"]["lore"] == "a ghoul lurking in the ossuary"
