"""The X-card (CONTRACTS §7): any member taps it (`POST .../x_card` or `client.x_card`); an
`x_card` event is appended with actor `{"kind": "system"}` and nothing that says who; a DM
turn starts at once and steers the story away from the current scene. Who tapped it is
stored nowhere: not in the event's row, not in the log lines, not in the metrics."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.forms.models import model_to_dict
from prometheus_client import generate_latest
from rest_framework.test import APIClient

from campaigns.models import Event, Snapshot
from campaigns.rounds import campaign_turn_mode_set
from orchestrator.prompt import X_CARD_INSTRUCTIONS
from orchestrator.services import turn_run, turns_run_pending
from rpgai.metrics import registry_for_scrape
from tests.reads import api_as, events_seen_by
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)

LOCATION = "The Drowned Lantern inn"  # the `campaign` fixture's scene


def url(campaign: Any) -> str:
    return f"/api/campaigns/{campaign.id}/x_card"


def narrations(campaign: Any) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="dm_narration").order_by("seq"))


def row_text(event: Event) -> str:
    """Everything stored of an event: every column of its row, as JSON."""
    return json.dumps(model_to_dict(event) | {"id": str(event.id)}, default=str)


def tapper_marks(user: Any) -> list[str]:
    return [str(user.id), user.id.hex, user.get_username(), "Alice"]


def test_the_x_card_is_anonymous_and_the_next_narration_leaves_the_scene(
    campaign, gm, alice, bob, act, caplog
):
    act(campaign, alice, "I follow the smuggler into the cellar")
    turn_run(campaign_id=campaign.id)
    [before] = narrations(campaign)
    assert "cellar" in before.payload["text"]

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    client = api_as(alice)
    response = client.post(url(campaign), HTTP_X_REQUEST_ID="client-chosen-id-42")
    assert response.status_code == 202, response.content
    [event] = Event.objects.filter(campaign=campaign, type="x_card")
    assert response.json() == {"seq": event.seq}
    # Nothing in the stored row says who tapped it: not the actor, not the payload, not
    # the request id (a new one, not the caller's), not a dedupe key.
    assert event.actor_kind == "system" and event.actor_user_id is None
    assert event.payload == {} and event.visibility == {"kind": "all"}
    assert event.dedupe_key is None
    assert "client-chosen-id-42" not in event.request_id
    for mark in tapper_marks(alice):
        assert mark not in row_text(event), mark
    # Every member sees it, as the same anonymous envelope.
    [seen] = [e for e in events_seen_by(campaign, bob) if e["type"] == "x_card"]
    assert seen["actor"] == {"kind": "system", "user_id": None} and seen["payload"] == {}

    # The DM answered at once, steering away: a clear scene change, the old scene's place
    # left behind, in the narration and in the state.
    after = narrations(campaign)[-1]
    assert after.seq > event.seq and after.payload["through_seq"] == event.seq
    assert "story" in after.payload["text"] and LOCATION not in after.payload["text"]
    assert "cellar" not in after.payload["text"]
    scene = Snapshot.objects.get(campaign=campaign).state["scene"]
    assert scene["location"] != LOCATION and scene["location"]
    # Nothing of that turn names the tapper either.
    for turn_event in Event.objects.filter(campaign=campaign, seq__gt=event.seq):
        for mark in tapper_marks(alice):
            assert mark not in row_text(turn_event), (turn_event.type, mark)

    # No log line of the tap or its turn names who tapped it; the caller's request id
    # stays on its own request's line only (which names no user).
    assert caplog.records, "the request and the turn log lines"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for mark in tapper_marks(alice):
            assert mark not in text, (record.name, mark)
    # Nor do the metrics.
    metrics = generate_latest(registry_for_scrape()).decode()
    for mark in tapper_marks(alice):
        assert mark not in metrics


def test_the_prompt_says_the_table_tapped_it_without_naming_anyone(
    campaign, alice, act, openai_server
):
    act(campaign, alice, "I open the cellar door")
    turn_run(campaign_id=campaign.id)
    response = api_as(alice).post(url(campaign))
    assert response.status_code == 202
    request = openai_server.requests[-1]
    user = [m["content"] for m in request.body["messages"] if m["role"] == "user"][-1]
    assert X_CARD_INSTRUCTIONS in user
    assert "never name, guess at or ask who tapped it" in user
    # No event of the prompt is the X-card's (it carries nothing to tell, and no one).
    assert '"type":"x_card"' not in user
    assert "PLAYER ACTIONS" not in user


async def _tap_over_the_socket(campaign: Any, alice: Any, bob: Any) -> dict[str, Any]:
    tapper, other = Room(campaign.id, alice), Room(campaign.id, bob)
    await tapper.open()
    await other.open()
    await tapper.hello(0)
    await other.hello(0)
    await tapper.send({"type": "client.x_card"})
    ack = (await tapper.recv_until(lambda m: m["type"] == "server.ack"))[-1]
    seen = await other.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    await tapper.close()
    await other.close()
    [x_card] = [m["event"] for m in seen if m["type"] == "event" and m["event"]["type"] == "x_card"]
    assert x_card["seq"] == ack["seq"]
    return {"x_card": x_card, "narration": seen[-1]["event"]}


def test_the_x_card_over_the_socket(campaign, alice, bob):
    got = async_to_sync(_tap_over_the_socket)(campaign, alice, bob)
    assert got["x_card"]["actor"] == {"kind": "system", "user_id": None}
    assert got["x_card"]["payload"] == {}
    assert got["narration"]["payload"]["through_seq"] == got["x_card"]["seq"]
    [event] = Event.objects.filter(campaign=campaign, type="x_card")
    for mark in tapper_marks(alice):
        assert mark not in row_text(event)


def test_the_x_card_cannot_be_spammed(campaign, alice, bob):
    for _ in range(3):
        assert api_as(alice).post(url(campaign)).status_code == 202
    refused = api_as(bob).post(url(campaign))
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited" and int(refused["Retry-After"]) >= 1
    assert Event.objects.filter(campaign=campaign, type="x_card").count() == 3

    async def over_the_socket() -> dict[str, Any]:
        room = Room(campaign.id, alice)
        await room.open()
        await room.hello(0)
        await room.send({"type": "client.x_card"})
        error = (await room.recv_until(lambda m: m["type"] == "error"))[-1]
        await room.close()
        return error

    error = async_to_sync(over_the_socket)()
    assert error["code"] == "rate_limited" and error["retry_after"] >= 1
    assert Event.objects.filter(campaign=campaign, type="x_card").count() == 3


def test_only_members_tap_it(campaign, make_user):
    before = Snapshot.objects.get(campaign=campaign).version
    assert api_as(make_user()).post(url(campaign)).status_code == 403
    assert APIClient().post(url(campaign)).status_code in (401, 403)
    assert api_as(make_user()).post(f"/api/campaigns/{uuid.uuid4()}/x_card").status_code == 404
    assert Snapshot.objects.get(campaign=campaign).version == before


def test_the_gm_may_tap_it_too(campaign, gm):
    response = api_as(gm).post(url(campaign))
    assert response.status_code == 202
    [event] = Event.objects.filter(campaign=campaign, type="x_card")
    assert event.actor_user_id is None and str(gm.id) not in row_text(event)


def test_a_round_waiting_for_its_players_does_not_hold_the_x_card(campaign, gm, alice, bob, act):
    campaign_turn_mode_set(campaign_id=campaign.id, by_user=gm, turn_mode="rounds")
    act(campaign, alice, "I climb into the crow's nest")
    assert turns_run_pending(campaign_id=campaign.id) == 0  # the round waits for Bob
    assert narrations(campaign) == []
    response = api_as(bob).post(url(campaign))
    assert response.status_code == 202
    [narration] = narrations(campaign)  # at once, round or no round
    assert narration.payload["through_seq"] == response.json()["seq"]
    assert "crow" not in narration.payload["text"]
