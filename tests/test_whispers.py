"""Whispers and private DM results: only the sender, the recipient and the GMs see them,
on the socket, in the events API and in the snapshot (embedded, and across two daphne
processes on Redis)."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async

from campaigns import selectors
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from rpgai.errors import DomainError
from tests.processes import daphne, free_port
from tests.reads import events_seen_by, snapshot_seen_by
from tests.ws import Room, connect, events_of, until

pytestmark = pytest.mark.django_db(transaction=True)


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


def _event_seqs_via_api(campaign, user) -> set[int]:
    return {e["seq"] for e in events_seen_by(campaign, user)}


def test_a_whisper_to_the_gm_reaches_only_the_sender_and_the_gm(campaign, table):
    event = whisper_send(membership=table["alice_m"], to="gm", text="I pocket the ruby")
    assert event.type == "whisper"
    assert event.visibility == {"kind": "users", "user_ids": [str(table["alice"].id)]}
    assert event.seq in _event_seqs_via_api(campaign, table["alice"])
    assert event.seq in _event_seqs_via_api(campaign, table["gm"])
    assert event.seq not in _event_seqs_via_api(campaign, table["bob"])
    # Who was told what stays in the hidden part of the fold: the GM's snapshot only.
    assert "hidden" in snapshot_seen_by(campaign, table["gm"])["state"]
    for player in ("alice", "bob"):
        state = snapshot_seen_by(campaign, table[player])["state"]
        assert "hidden" not in state and "ruby" not in json.dumps(state)


def test_a_gm_whispers_to_one_player(campaign, table):
    gm_m = selectors.membership_get(campaign_id=campaign.id, user_id=table["gm"].id)
    event = whisper_send(membership=gm_m, to=str(table["bob"].id), text="You hear a click")
    assert event.seq in _event_seqs_via_api(campaign, table["bob"])
    assert event.seq not in _event_seqs_via_api(campaign, table["alice"])


def test_a_whisper_to_the_dm_is_kept_from_the_other_players(campaign, table):
    event = whisper_send(membership=table["bob_m"], to="dm", text="I secretly serve the lich")
    assert event.payload["to"] == "dm"
    assert event.seq not in _event_seqs_via_api(campaign, table["alice"])
    assert event.seq in _event_seqs_via_api(campaign, table["gm"])


@pytest.mark.parametrize("to", ["nobody", str(uuid.uuid4()), ""])
def test_a_whisper_to_no_member_is_refused(campaign, table, to):
    with pytest.raises(DomainError):
        whisper_send(membership=table["alice_m"], to=to, text="psst")


def test_an_empty_or_oversized_whisper_is_refused(campaign, table):
    with pytest.raises(DomainError):
        whisper_send(membership=table["alice_m"], to="gm", text="   ")
    with pytest.raises(DomainError):
        whisper_send(membership=table["alice_m"], to="gm", text="x" * 2001)


async def test_a_whisper_over_the_socket_never_reaches_another_player(campaign, table):
    rooms = {who: Room(campaign.id, table[who]) for who in ("gm", "alice", "bob")}
    for room in rooms.values():
        await room.open()
        await room.hello(0)
    await rooms["alice"].send({"type": "client.whisper", "to": "gm", "text": "the ruby is fake"})
    ack = (await rooms["alice"].recv_until(lambda m: m["type"] == "server.ack"))[-1]
    for who in ("alice", "gm"):
        seen = await rooms[who].recv_until(
            lambda m: m["type"] == "event" and m["event"]["type"] == "whisper"
        )
        assert events_of(seen)[-1]["seq"] == ack["seq"]
    assert await rooms["bob"].nothing(0.5)
    # Not in Bob's catch-up either.
    late = Room(campaign.id, table["bob"])
    await late.open()
    assert all(e["type"] != "whisper" for e in events_of(await late.hello(0)))
    # Bad whispers get an error and the connection stays open.
    await rooms["bob"].send({"type": "client.whisper", "to": "gm", "text": ""})
    assert (await rooms["bob"].recv_until(lambda m: m["type"] == "error"))[-1][
        "code"
    ] == "invalid_message"
    await rooms["bob"].send({"type": "client.whisper", "to": "the king", "text": "hi"})
    assert (await rooms["bob"].recv_until(lambda m: m["type"] == "error"))[-1][
        "code"
    ] == "invalid_message"
    for room in [*rooms.values(), late]:
        await room.close()


def _private_roll_turn(campaign, rogue) -> list:
    through = selectors.snapshot_get(campaign_id=campaign.id).state["turn"]["last_action_seq"]
    return turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="The room is quiet.",
        options=["Go on"],
        tool_calls=[
            {
                "name": "roll",
                "args": {
                    "formula": "1d20+3",
                    "reason": "perception: the trap",
                    "private_to": str(rogue.id),
                },
            }
        ],
        through_seq=through,
    ).events


async def test_a_private_roll_is_hidden_from_the_rest_and_visible_to_the_gm(campaign, table):
    rooms = {who: Room(campaign.id, table[who]) for who in ("gm", "alice", "bob")}
    for room in rooms.values():
        await room.open()
        await room.hello(0)
    events = await sync_to_async(_private_roll_turn)(campaign, table["alice"])
    rolls = [e for e in events if e.type in ("roll_requested", "roll_result")]
    assert len(rolls) == 2
    assert all(
        e.visibility == {"kind": "users", "user_ids": [str(table["alice"].id)]} for e in rolls
    )
    narration = events[-1]
    for who in ("gm", "alice"):
        seen = events_of(
            await rooms[who].recv_until(
                lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
            )
        )
        assert {"roll_requested", "roll_result"} <= {e["type"] for e in seen}
    seen = events_of(
        await rooms["bob"].recv_until(
            lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
        )
    )
    assert [e["seq"] for e in seen] == [narration.seq]
    for room in rooms.values():
        await room.close()
    roll_seqs = {e.seq for e in rolls}
    assert roll_seqs <= await sync_to_async(_event_seqs_via_api)(campaign, table["gm"])
    assert roll_seqs <= await sync_to_async(_event_seqs_via_api)(campaign, table["alice"])
    assert not roll_seqs & await sync_to_async(_event_seqs_via_api)(campaign, table["bob"])
    total = str(rolls[-1].payload["detail"])
    bob_state = await sync_to_async(snapshot_seen_by)(campaign, table["bob"])
    assert total not in json.dumps(bob_state)


def test_a_private_roll_for_a_stranger_is_refused(campaign, table):
    through = selectors.snapshot_get(campaign_id=campaign.id).state["turn"]["last_action_seq"]
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="Nothing.",
        options=["Go on"],
        tool_calls=[{"name": "roll", "args": {"formula": "1d20", "private_to": str(uuid.uuid4())}}],
        through_seq=through,
    )
    assert [r.name for r in result.rejections] == ["roll"]
    assert all(e.type not in ("roll_requested", "roll_result") for e in result.events)


# --- Across two daphne processes on Redis ---------------------------------------------------


@pytest.mark.services
async def test_a_whisper_never_crosses_to_another_player_on_another_process(campaign, table):
    port_a, port_b = free_port(), free_port()
    with daphne(port_a, TASKS_IN_PROCESS="1"), daphne(port_b, TASKS_IN_PROCESS="1"):
        alice = await connect(port_a, campaign.id, table["alice"])
        bob = await connect(port_b, campaign.id, table["bob"])
        gm = await connect(port_b, campaign.id, table["gm"])
        try:
            await alice.send(json.dumps({"type": "client.whisper", "to": "gm", "text": "ruby"}))
            ack = (await until(alice, lambda m: m["type"] == "server.ack"))[-1]
            seen = await until(
                gm, lambda m: m["type"] == "event" and m["event"]["seq"] == ack["seq"]
            )
            assert seen[-1]["event"]["type"] == "whisper"
            # A public event after the whisper: Bob gets it, and never the whisper.
            await alice.send(
                json.dumps(
                    {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "hi"}
                )
            )
            seen = await until(
                bob, lambda m: m["type"] == "event" and m["event"]["type"] == "player_action"
            )
            assert all(m["event"]["type"] != "whisper" for m in seen if m["type"] == "event")
        finally:
            for ws in (alice, bob, gm):
                await ws.close()


def test_the_dm_reads_a_whisper_to_it_as_a_secret_and_never_a_whisper_between_people(
    campaign, table
):
    from campaigns.services import player_action_submit
    from orchestrator.prompt import prompt_build
    from orchestrator.receivers import turns_deferred
    from orchestrator.selectors import turn_context_get

    gm_m = selectors.membership_get(campaign_id=campaign.id, user_id=table["gm"].id)
    whisper_send(membership=table["bob_m"], to="dm", text="I secretly serve the lich")
    whisper_send(membership=gm_m, to=str(table["alice"].id), text="The ruby is cursed")
    with turns_deferred():
        action = player_action_submit(
            membership=table["alice_m"], action_id=uuid.uuid4(), text="I look around"
        )
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    context = turn_context_get(
        campaign_id=campaign.id,
        answered_seq=state["turn"]["answered_through_seq"],
        through_seq=action.seq,
    )
    text = json.dumps(prompt_build(context=context, budget=8000).messages)
    assert "I secretly serve the lich" in text
    assert "never reveal it to the other players" in text
    assert "The ruby is cursed" not in text


def test_the_dm_answer_schema_carries_a_private_roll_through_to_the_log(campaign, table):
    from orchestrator.schema import answer_parse

    answer = answer_parse(
        json.dumps(
            {
                "narration": "Something glints.",
                "options": ["Go on"],
                "tool_calls": [
                    {
                        "name": "roll",
                        "args": {
                            "formula": "1d20",
                            "reason": "perception",
                            "private_to": str(table["bob"].id),
                        },
                    }
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
    rolls = [e for e in result.events if e.type == "roll_result"]
    assert [r.visibility for r in rolls] == [{"kind": "users", "user_ids": [str(table["bob"].id)]}]
    assert rolls[0].seq not in _event_seqs_via_api(campaign, table["alice"])
