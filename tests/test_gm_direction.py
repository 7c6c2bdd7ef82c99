"""GM direction (CONTRACTS §7): a GM's line to the DM, over HTTP (`POST .../directions`) and
the socket (`client.gm_direction`), is a `gm_direction` event {text, now}, never a
character's action; a secret one is for the GMs only, on every path; players are refused
in plain words."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async
from rest_framework.test import APIClient

from campaigns.models import Event, Snapshot
from tests.reads import api_as, events_seen_by
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


def _url(campaign) -> str:
    return f"/api/campaigns/{campaign.id}/directions"


def test_the_gm_directs_the_dm_over_http(campaign, gm, alice):
    response = api_as(gm).post(
        _url(campaign), {"text": "  The bell begins to toll.  "}, format="json"
    )
    assert response.status_code == 201, response.content
    [event] = response.json()["events"]
    assert event["type"] == "gm_direction"
    assert event["payload"] == {"text": "The bell begins to toll.", "now": True}
    assert event["actor"] == {"kind": "gm", "user_id": str(gm.id)}
    assert event["visibility"] == {"kind": "all"}
    assert event["seq"] in {e["seq"] for e in events_seen_by(campaign, alice)}
    # Not a character's action: no player_action. Told `now`, the DM narrates it at once
    # (here inline: no event loop runs in this test), as a fact of the world.
    assert not Event.objects.filter(campaign=campaign, type="player_action").exists()
    [narration] = Event.objects.filter(campaign=campaign, type="dm_narration")
    assert narration.seq > event["seq"]
    assert narration.payload["text"].startswith("The bell begins to toll.")
    assert "GM" not in narration.payload["text"]


def test_a_secret_direction_held_for_the_next_turn(campaign, gm, alice):
    response = api_as(gm).post(
        _url(campaign),
        {"text": "The innkeeper is a spy.", "secret": True, "now": False},
        format="json",
    )
    assert response.status_code == 201
    [event] = response.json()["events"]
    assert event["payload"] == {"text": "The innkeeper is a spy.", "now": False}
    assert event["visibility"] == {"kind": "gm"}
    assert event["seq"] not in {e["seq"] for e in events_seen_by(campaign, alice)}
    assert event["seq"] in {e["seq"] for e in events_seen_by(campaign, gm)}


def test_players_outsiders_and_strangers_are_refused(campaign, alice, make_user):
    before = Snapshot.objects.get(campaign=campaign).version
    response = api_as(alice).post(_url(campaign), {"text": "I am the GM now"}, format="json")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"detail", "code"}
    assert "GM" in response.json()["detail"]
    outsider = api_as(make_user()).post(_url(campaign), {"text": "hi"}, format="json")
    assert outsider.status_code == 403
    missing = api_as(alice).post(
        f"/api/campaigns/{uuid.uuid4()}/directions", {"text": "hi"}, format="json"
    )
    assert missing.status_code == 404
    anonymous = APIClient().post(_url(campaign), {"text": "hi"}, format="json")
    assert anonymous.status_code in (401, 403)
    assert Snapshot.objects.get(campaign=campaign).version == before


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "   "},
        {"text": "x" * 2001},
        {"text": "ok", "secret": "yes"},
        {"text": "ok", "now": 1},
        {"text": "nul \x00 char"},
        {},
    ],
)
def test_bad_directions_are_a_plain_400(campaign, gm, body):
    before = Snapshot.objects.get(campaign=campaign).version
    response = api_as(gm).post(_url(campaign), body, format="json")
    assert response.status_code == 400, response.content
    assert "detail" in response.json()
    assert Snapshot.objects.get(campaign=campaign).version == before


async def test_directions_over_the_socket(campaign, gm, alice):
    gm_room, player_room = Room(campaign.id, gm), Room(campaign.id, alice)
    await gm_room.open()
    await player_room.open()
    await gm_room.hello(0)
    await player_room.hello(0)

    await gm_room.send(
        {"type": "client.gm_direction", "text": "A storm rolls in.", "secret": True, "now": False}
    )
    got = await gm_room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "gm_direction"
    )
    [secret] = [e for e in events_of(got) if e["type"] == "gm_direction"]
    assert secret["payload"] == {"text": "A storm rolls in.", "now": False}
    assert secret["visibility"] == {"kind": "gm"}
    # The player's socket gets nothing of it, live or on catch-up.
    assert await player_room.nothing(0.5)
    again = Room(campaign.id, alice)
    await again.open()
    assert all(e["type"] != "gm_direction" for e in events_of(await again.hello(0)))
    await again.close()

    await gm_room.send({"type": "client.gm_direction", "text": "The bell tolls."})
    seen = await player_room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "gm_direction"
    )
    public = events_of(seen)[-1]
    assert public["payload"] == {"text": "The bell tolls.", "now": True}
    assert public["actor"] == {"kind": "gm", "user_id": str(gm.id)}

    # A player may not direct the DM: a plain refusal, nothing appended.
    version = (await sync_to_async(Snapshot.objects.get)(campaign=campaign)).version
    await player_room.send({"type": "client.gm_direction", "text": "Give me a dragon."})
    error = (await player_room.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["code"] == "forbidden"
    assert error["detail"] == "only the campaign's GM may direct the DM"
    await gm_room.send({"type": "client.gm_direction", "text": "   "})
    error = (await gm_room.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["code"] == "invalid_message"
    assert (await sync_to_async(Snapshot.objects.get)(campaign=campaign)).version == version
    await gm_room.close()
    await player_room.close()


def _prompt_of_next_turn(campaign):
    from django.conf import settings

    from orchestrator.prompt import prompt_build
    from orchestrator.selectors import turn_context_get, turn_owed

    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    prompt = prompt_build(context=context, budget=settings.DM_PROMPT_TOKEN_BUDGET, nonce="n0nce")
    return context, prompt.messages[1]["content"]


def test_a_held_direction_joins_the_next_turn_as_direction_not_as_an_action(campaign, gm, alice):
    """`now: false` starts no turn; the next turn's prompt carries it in its own block,
    and a secret one is marked for the GM alone and never narrated word for word."""
    from campaigns.selectors import membership_get
    from campaigns.services import player_action_submit
    from orchestrator.receivers import turns_deferred
    from orchestrator.services import turn_run

    for text, secret in (
        ("Thunder rolls over the hills.", False),
        ("The innkeeper is a spy.", True),
    ):
        response = api_as(gm).post(
            _url(campaign), {"text": text, "secret": secret, "now": False}, format="json"
        )
        assert response.status_code == 201
    assert not Event.objects.filter(campaign=campaign, type="dm_narration").exists()

    with turns_deferred():
        player_action_submit(
            membership=membership_get(campaign_id=campaign.id, user_id=alice.id),
            action_id=uuid.uuid4(),
            text="I order an ale",
        )
    context, user = _prompt_of_next_turn(campaign)
    assert [(d.text, d.secret) for d in context.directions] == [
        ("Thunder rolls over the hills.", False),
        ("The innkeeper is a spy.", True),
    ]
    assert [a.text for a in context.actions] == ["I order an ale"]
    direction = user.split("BEGIN GM DIRECTION>>>")[1].split("<<<")[0]
    actions = user.split("BEGIN PLAYER ACTIONS>>>")[1].split("<<<")[0]
    assert "Thunder rolls" in direction and "spy" in direction and "only the GM" in direction
    assert "Thunder" not in actions and "spy" not in actions

    outcome = turn_run(campaign_id=campaign.id)
    narration = outcome.events[-1].payload["text"]
    assert "Thunder rolls over the hills." in narration
    assert "spy" not in narration  # acted on, never told
