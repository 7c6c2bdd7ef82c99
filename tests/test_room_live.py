"""The room, live (issue 20 items 3 and 4), over the WebSocket and through the services:

- a page that says hello while the DM's narration streams gets the whole text so far
  (`narration.delta` with `offset` 0, before `server.ready`), then the rest of it: each
  piece once, none skipped (a piece the channel layer never brought is filled in from what
  is kept); only the public narration, never another player's private words;
- the X-card's ack and its refusal carry `"for": "x_card"`;
- a turn in flight when the GM archives the campaign ends with `turn_failed` `archived`
  (and a plain log line), instead of nothing;
- `server.ready` names the DM's provider and model as a turn resolves them, and the
  terminal client uses it;
- an entity the players had seen, hidden by the GM (or the DM, or a revert of a reveal),
  leaves their view: a public `entity_withdrawn` {entity_id} and nothing more.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer

from campaigns import selectors
from campaigns.models import Event
from campaigns.tools import turn_commit
from orchestrator.services import dm_settings_set, turn_run
from orchestrator.streaming import NarrationStream
from orchestrator.terminal import Room as TerminalRoom
from orchestrator.terminal.client import Login, RoomClient
from realtime.models import RoomPresence
from rpgai.tasks import wait_idle
from tests.auth_tools import isolate_limits
from tests.openai_server import GOOD_ANSWER, Answer, serving
from tests.reads import api_as
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    isolate_limits(settings)


@pytest.fixture
def openai_server(settings: Any) -> Any:
    with serving(settings) as server:
        yield server


def deltas(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "narration.delta"]


def continuous(pieces: list[dict[str, Any]]) -> str:
    """The text the pieces make, checking that each starts where the one before ended."""
    text = ""
    for piece in pieces:
        assert piece["offset"] == len(text), (piece, len(text))
        text += piece["text"]
    return text


async def until_delta_chars(room: Room, at_least: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def enough(message: dict[str, Any]) -> bool:
        seen.append(message)
        return sum(len(m["text"]) for m in deltas(seen)) >= at_least

    await room.recv_until(enough, timeout=20)
    return seen


# --- A hello during a streaming narration ----------------------------------------------------


async def test_a_hello_mid_narration_gets_the_text_so_far_then_the_rest_once(
    campaign: Any, alice: Any, bob: Any, settings: Any
) -> None:
    settings.DM_FAKE_CHUNK_DELAY_SECONDS = 0.04
    settings.DM_DELTA_INTERVAL_SECONDS = 0.05
    first = Room(campaign.id, alice)
    assert (await first.open())[0]
    late = Room(campaign.id, bob)
    try:
        await first.hello()
        await first.send(
            {
                "type": "client.player_action",
                "action_id": str(uuid.uuid4()),
                "text": "I light the lantern and " + "look at the old maps on the wall, " * 6,
            }
        )
        before = deltas(await until_delta_chars(first, 40))
        # Bob's page opens now, mid-narration.
        assert (await late.open())[0]
        hello = await late.hello(0)
        caught_up = deltas(hello)
        assert len(caught_up) == 1, caught_up
        assert caught_up[0]["offset"] == 0
        assert caught_up[0]["text"].startswith("".join(d["text"] for d in before))
        assert hello[-1]["type"] == "server.ready"
        assert hello.index(caught_up[0]) > max(
            i for i, m in enumerate(hello) if m["type"] == "event"
        ), "the text so far comes after the backlog"

        def narrated(m: dict[str, Any]) -> bool:
            return m["type"] == "event" and m["event"]["type"] == "dm_narration"

        rest = await late.recv_until(narrated, timeout=30)
        everything = await first.recv_until(narrated, timeout=30)
        await wait_idle()
    finally:
        await first.close()
        await late.close()
    narration = rest[-1]["event"]["payload"]
    late_text = continuous([*caught_up, *deltas(rest)])
    assert late_text == narration["text"]
    assert {d["turn_id"] for d in [*caught_up, *deltas(rest)]} == {narration["turn_id"]}
    assert continuous([*before, *deltas(everything)]) == narration["text"]


async def test_after_the_narration_a_hello_gets_no_stale_text(campaign: Any, alice: Any) -> None:
    room = Room(campaign.id, alice)
    assert (await room.open())[0]
    try:
        await room.hello()
        await room.send(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I sit"}
        )
        await room.recv_until(
            lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration", timeout=20
        )
        await wait_idle()
        again = await room.hello(0)
    finally:
        await room.close()
    assert deltas(again) == []


async def test_private_words_never_stream_to_anyone(
    campaign: Any, alice: Any, bob: Any, openai_server: Any
) -> None:
    """The DM whispers to Alice in the same answer: Bob, arriving mid-narration, gets the
    public narration only (the private words are a tool call, never streamed)."""
    secret = "ZQX" + uuid.uuid4().hex[:10]
    answer = {
        "narration": "The wind rises over the moor and the lantern gutters. " * 6,
        "tool_calls": [
            {"name": "narrate_private", "args": {"to": str(alice.id), "text": f"You see {secret}"}}
        ],
        "options": ["Wait", "Run"],
    }
    openai_server.script(Answer(answer, chunk_chars=8, delay=0.03))
    first = Room(campaign.id, alice)
    late = Room(campaign.id, bob)
    assert (await first.open())[0]
    try:
        await first.hello()
        await first.send(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I wait"}
        )
        await until_delta_chars(first, 30)
        assert (await late.open())[0]
        hello = await late.hello(0)
        rest = await late.recv_until(
            lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration", timeout=30
        )
        await wait_idle()
    finally:
        await first.close()
        await late.close()
    assert deltas(hello) and deltas(hello)[0]["offset"] == 0
    assert secret not in json.dumps([*hello, *rest])
    assert continuous(deltas(hello) + deltas(rest)) == answer["narration"]


async def test_a_piece_is_never_sent_twice_and_a_missed_one_is_filled_in(
    campaign: Any, alice: Any, bob: Any, settings: Any
) -> None:
    """Through the turn's own stream (NarrationStream), a group message sent again is
    dropped, and a piece a socket never got (its channel was out of the group) is filled in
    from what is kept, when the next piece arrives."""
    settings.DM_DELTA_INTERVAL_SECONDS = 0
    turn_id = str(uuid.uuid4())
    stream = NarrationStream(campaign_id=campaign.id, turn_id=turn_id)
    layer = get_channel_layer()
    group = selectors.group_name(campaign.id)
    alice_room, bob_room = Room(campaign.id, alice), Room(campaign.id, bob)
    try:
        for room in (alice_room, bob_room):
            assert (await room.open())[0]
            await room.hello()
        chunks = [
            '{"narration": "',
            "The tide comes in over the black rocks, ",
            "and the lantern on the jetty swings, ",
            "and something large moves under the water. ",
            "Then it is quiet again.",
            '", "options": ["Wait"]}',
        ]
        await stream.feed(chunks[0])
        await stream.feed(chunks[1])
        first = await alice_room.recv_until(lambda m: m["type"] == "narration.delta")
        await bob_room.recv_until(lambda m: m["type"] == "narration.delta")
        # The same group message again (the layer may repeat nothing, but a resend must not
        # show twice): nobody gets it.
        await layer.group_send(group, {"type": "room.delta", **_wire(first[-1])})
        assert await alice_room.nothing() and await bob_room.nothing()
        # Bob's socket misses a piece (out of the group while it goes) ...
        [bob_channel] = await sync_to_async(
            lambda: list(
                RoomPresence.objects.filter(campaign_id=campaign.id, user=bob).values_list(
                    "channel_name", flat=True
                )
            )
        )()
        await layer.group_discard(group, bob_channel)
        await stream.feed(chunks[2])
        missed = deltas(await alice_room.recv_until(lambda m: m["type"] == "narration.delta"))
        assert await bob_room.nothing()
        await layer.group_add(group, bob_channel)
        # ... and gets it with the next one.
        for chunk in chunks[3:]:
            await stream.feed(chunk)
        await stream.close()
        told = "".join(chunks[1:5])
        got: dict[str, list[dict[str, Any]]] = {"alice": missed, "bob": []}
        for name, room in (("alice", alice_room), ("bob", bob_room)):
            while len(continuous([{"offset": 0, "text": chunks[1]}, *got[name]])) < len(told):
                got[name] += deltas([await room.recv(timeout=5)])
            assert await room.nothing()
    finally:
        await alice_room.close()
        await bob_room.close()
    first_piece = {"offset": 0, "text": chunks[1]}
    assert continuous([first_piece, *got["alice"]]) == told
    assert continuous([first_piece, *got["bob"]]) == told
    assert len(got["bob"]) < len(got["alice"]), "Bob's missed piece came with the next one"


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    return {"turn_id": message["turn_id"], "text": message["text"], "offset": message["offset"]}


# --- The X-card says what it answers -----------------------------------------------------------


async def test_the_x_card_ack_and_its_refusal_say_what_they_answer(
    campaign: Any, alice: Any
) -> None:
    room = Room(campaign.id, alice)
    assert (await room.open())[0]
    try:
        await room.hello()
        answers = []
        for _ in range(4):
            await room.send({"type": "client.x_card"})
            seen = await room.recv_until(lambda m: m["type"] in ("server.ack", "error"))
            answers.append(seen[-1])
        await wait_idle()
    finally:
        await room.close()
    assert [a["type"] for a in answers] == ["server.ack"] * 3 + ["error"]
    assert all(a["for"] == "x_card" for a in answers), answers
    assert answers[-1]["code"] == "rate_limited" and answers[-1]["retry_after"] >= 1


# --- A turn in flight when the campaign is archived ---------------------------------------------


def test_a_turn_cut_short_by_the_archive_ends_with_turn_failed_archived(
    campaign: Any, gm: Any, alice: Any, act: Any, settings: Any, caplog: Any
) -> None:
    settings.DM_DELTA_INTERVAL_SECONDS = 0
    action = act(campaign, alice, "I light the lantern")
    archived = threading.Event()

    def archive_while_it_narrates(_text: str) -> None:
        # The GM archives the campaign while the DM is still telling the narration (in a
        # thread of its own: this runs on the turn's event loop).
        if archived.is_set():
            return

        def patch() -> None:
            response = api_as(gm).patch(
                f"/api/campaigns/{campaign.id}/", {"archived": True}, format="json"
            )
            assert response.status_code == 200, response.content

        worker = threading.Thread(target=patch)
        worker.start()
        worker.join()
        archived.set()

    with caplog.at_level(logging.INFO, logger="orchestrator.services"):
        outcome = turn_run(campaign_id=campaign.id, on_delta=archive_while_it_narrates)
    assert archived.is_set()
    assert outcome is not None and outcome.failed_code == "archived"
    after = Event.objects.filter(campaign=campaign, seq__gt=action.seq).order_by("seq")
    [failed] = [e for e in after if e.type == "turn_failed"]
    assert failed.payload["code"] == "archived"
    assert failed.payload["through_seq"] == action.seq
    assert "archived" in failed.payload["detail"] and "GM" in failed.payload["detail"]
    assert not [e for e in after if e.type == "dm_narration"]
    assert "archived while the DM answered" in caplog.text
    assert "already answered" not in caplog.text
    # Nothing more is owed: the turn counts as answered, and no second failure follows.
    assert turn_run(campaign_id=campaign.id) is None
    assert Event.objects.filter(campaign=campaign, type="turn_failed").count() == 1


# --- server.ready names the DM's model ---------------------------------------------------------


async def test_server_ready_names_the_dm_as_a_turn_resolves_it(
    campaign: Any, alice: Any, settings: Any
) -> None:
    async def ready() -> dict[str, Any]:
        room = Room(campaign.id, alice)
        assert (await room.open())[0]
        try:
            return (await room.hello())[-1]
        finally:
            await room.close()

    assert (await ready())["dm"] == {"provider": "fake", "model": "fake-dm"}
    settings.DM_MODELS_ALLOWED = ["gpt-test-large"]
    await sync_to_async(dm_settings_set)(
        campaign_id=campaign.id, provider="openai", model="gpt-test-large"
    )
    assert (await ready())["dm"] == {"provider": "openai", "model": "gpt-test-large"}
    # A model the operator no longer allows is not what a turn uses: the default is named.
    settings.DM_MODELS_ALLOWED = []
    settings.DM_MODEL = "gpt-default"
    assert (await ready())["dm"] == {"provider": "openai", "model": "gpt-default"}


def test_the_terminal_names_the_model_the_server_runs() -> None:
    shown: list[str] = []
    login = Login("http://127.0.0.1:1", str(uuid.uuid4()), "me", "Alice", lambda: "token")
    client = RoomClient(login, write=shown.append, dm_label="local-guess (openai)")
    client.room = TerminalRoom(me="me")
    client._on_raw(
        json.dumps({"type": "server.ready", "seq": 0, "dm": {"provider": "fake", "model": "m1"}})
    )
    assert "DM model: m1 (fake), as the server runs it." in shown
    # Told once; the same model again (a reconnect) says nothing more.
    shown.clear()
    client._on_raw(
        json.dumps({"type": "server.ready", "seq": 0, "dm": {"provider": "fake", "model": "m1"}})
    )
    assert not any("DM model" in line for line in shown)
    # What the header already said is not said again.
    quiet = RoomClient(login, write=shown.append, dm_label="m1 (fake) at http://x:1/v1")
    quiet.room = TerminalRoom(me="me")
    shown.clear()
    quiet._on_raw(
        json.dumps({"type": "server.ready", "seq": 0, "dm": {"provider": "fake", "model": "m1"}})
    )
    assert not any("DM model" in line for line in shown)


def test_the_terminal_does_not_print_the_text_so_far_twice() -> None:
    room = TerminalRoom(me="me", width=60)
    words = "The tide comes in over the black rocks and the lantern swings. " * 3
    printed = room.on_delta("t1", words[:70], 0)
    # Reconnected: the text so far comes again from its start, then the rest.
    printed += room.on_delta("t1", words[:100], 0)
    printed += room.on_delta("t1", words[100:], 100)
    printed += room.on_event(
        {
            "seq": 1,
            "type": "dm_narration",
            "payload": {"turn_id": "t1", "text": words.strip(), "options": ["Go"]},
            "actor": {"kind": "dm"},
            "visibility": {"kind": "all"},
        },
        live=True,
    )
    body = " ".join(line.removeprefix("DM:").strip() for line in printed if line.strip())
    assert body.count("The tide comes in") == 3, printed


# --- Hidden again: withdrawn from the players' view ---------------------------------------------


def _entity(campaign: Any, name: str, *, hidden: bool = False) -> str:
    turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=f"{name} is here.",
        options=["Go on"],
        tool_calls=[
            {"name": "create_entity", "args": {"kind": "npc", "name": name, "hidden": hidden}}
        ],
        through_seq=0,
    )
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    return next(i for i, e in state["entities"].items() if e["name"] == name)


def _withdrawn(campaign: Any) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="entity_withdrawn").order_by("seq"))


async def _player_sees(campaign: Any, user: Any, action: Any) -> list[dict[str, Any]]:
    """What `user`'s socket receives while `action` (a sync write) runs."""
    room = Room(campaign.id, user)
    assert (await room.open())[0]
    try:
        await room.hello()
        await sync_to_async(action)()
        seen: list[dict[str, Any]] = []
        while not await room.comm.receive_nothing(timeout=0.5):
            seen.append(await room.recv())
        return events_of(seen)
    finally:
        await room.close()


def test_hiding_a_seen_entity_withdraws_it_from_the_players_and_tells_nothing_else(
    campaign: Any, gm: Any, alice: Any
) -> None:
    odo = _entity(campaign, "Keeper Odo")
    secret = _entity(campaign, "The Drowned Thing", hidden=True)
    url = f"/api/campaigns/{campaign.id}/gm/values"

    def hide_odo() -> None:
        response = api_as(gm).post(
            url, {"path": f"/entities/{odo}/hidden", "value": True}, format="json"
        )
        assert response.status_code == 201, response.content
        # The GM's answer is the patch, as before (GM-only: it is about a secret now).
        assert {e["visibility"]["kind"] for e in response.json()["events"]} == {"gm"}

    seen = async_to_sync(_player_sees)(campaign, alice, hide_odo)
    assert [e["type"] for e in seen] == ["entity_withdrawn"]
    assert seen[0]["payload"] == {"entity_id": odo}
    assert seen[0]["actor"] == {"kind": "system", "user_id": None}
    assert seen[0]["visibility"] == {"kind": "all"}
    player_state = api_as(alice).get(f"/api/campaigns/{campaign.id}/snapshot").json()["state"]
    assert odo not in player_state["entities"] and secret not in player_state["entities"]

    # Hiding what is hidden already, or a made-up id, withdraws nothing (and so names
    # nothing the players never saw).
    for entity_id in (odo, secret, str(uuid.uuid4())):
        api_as(gm).post(
            url, {"path": f"/entities/{entity_id}/hidden", "value": True}, format="json"
        )
    assert len(_withdrawn(campaign)) == 1
    texts = api_as(alice).get(f"/api/campaigns/{campaign.id}/events?limit=1000").content.decode()
    assert secret not in texts

    # Revealed, then the GM undoes the reveal: withdrawn again.
    reveal = api_as(gm).post(
        url, {"path": f"/entities/{odo}/hidden", "value": False}, format="json"
    )
    assert reveal.status_code == 201
    reveal_seq = reveal.json()["events"][-1]["seq"]
    undo = api_as(gm).post(
        f"/api/campaigns/{campaign.id}/gm/reverts", {"seq": reveal_seq}, format="json"
    )
    assert undo.status_code == 201, undo.content
    assert [e.payload["entity_id"] for e in _withdrawn(campaign)] == [odo, odo]


def test_the_dm_hiding_a_seen_entity_withdraws_it_too(
    campaign: Any, alice: Any, act: Any, openai_server: Any
) -> None:
    odo = _entity(campaign, "Keeper Odo")
    answer = {
        **GOOD_ANSWER,
        "tool_calls": [
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "Odo slips away into the fog",
                    "patches": [{"op": "add", "path": f"/entities/{odo}/hidden", "value": True}],
                },
            }
        ],
    }
    openai_server.script(Answer(answer))
    act(campaign, alice, "I look for Odo")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome is not None and outcome.failed_code is None
    [withdrawn] = _withdrawn(campaign)
    assert withdrawn.payload == {"entity_id": odo}
    [narration] = [
        e
        for e in Event.objects.filter(campaign=campaign, type="dm_narration")
        if e.payload["turn_id"] == outcome.turn_id
    ]
    assert withdrawn.seq == narration.seq + 1  # in the turn's transaction, right after it
    assert withdrawn.visibility == {"kind": "all"}
