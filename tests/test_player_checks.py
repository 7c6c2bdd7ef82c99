"""Players roll their own checks (CONTRACTS §7): the DM's `request_roll` appends a
`roll_requested` for that player; the turn waits, holding no worker, for their roll (over
the API or the socket, with the `roll_id`), or rolls for them after
DM_PLAYER_ROLL_SECONDS; then it narrates what that roll decided."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from campaigns.selectors import events_after
from orchestrator.services import aturn_run, turn_run
from tests.reads import api_as, events_seen_by

pytestmark = pytest.mark.django_db(transaction=True)


CLIMB = "I climb the crumbling wall"  # the fake DM asks the climber to roll it


def rolls_url(campaign) -> str:
    return f"/api/campaigns/{campaign.id}/rolls"


def test_the_turn_waits_for_the_players_own_roll_and_narrates_it(campaign, gm, alice, bob, act):
    action = act(campaign, alice, CLIMB)

    async def play():
        turn = asyncio.ensure_future(aturn_run(campaign_id=campaign.id))
        request = None
        while request is None:
            await asyncio.sleep(0.05)
            request = next(
                (
                    e
                    for e in await sync_to_async(events_after)(
                        campaign_id=campaign.id, after_seq=action.seq
                    )
                    if e.type == "roll_requested"
                ),
                None,
            )
        assert not turn.done()  # it waits for Alice
        # Only Alice may roll it; the formula is the DM's, whatever she sends.
        body = {"formula": "1d20+30", "roll_id": request.payload["roll_id"]}
        refused = await sync_to_async(api_as(bob).post)(rolls_url(campaign), body, format="json")
        assert refused.status_code == 403 and "another player" in refused.json()["detail"]
        rolled = await sync_to_async(api_as(alice).post)(rolls_url(campaign), body, format="json")
        assert rolled.status_code == 201, rolled.content
        again = await sync_to_async(api_as(alice).post)(rolls_url(campaign), body, format="json")
        assert again.status_code == 409
        return request, await asyncio.wait_for(turn, 30)

    request, outcome = async_to_sync(play)()
    assert request.payload["requested_by"] == "dm"
    assert request.payload["for_user_id"] == str(alice.id) and "dc" not in request.payload
    assert outcome.failed_code is None and outcome.steps == 2

    events = events_after(campaign_id=campaign.id, after_seq=action.seq)
    [result] = [e for e in events if e.type == "roll_result"]
    assert result.actor_kind == "player" and str(result.actor_user_id) == str(alice.id)
    assert result.payload["roll_id"] == request.payload["roll_id"]
    assert result.payload["formula"] == request.payload["formula"] == "1d20+2"
    assert result.payload["turn_id"] == outcome.turn_id
    dc = result.payload["dc"]
    assert dc is not None and result.payload["success"] is (result.payload["total"] >= dc)
    narration = events[-1].payload["text"]
    assert f"{result.payload['total']} against DC {dc}" in narration
    # The DC was kept from the table until the dice fell: the GM alone saw it before.
    held = [e for e in events if e.type == "roll_dc_held"]
    assert held and held[0].seq < result.seq
    assert not any(e["type"] == "roll_dc_held" for e in events_seen_by(campaign, alice))
    assert any(e["type"] == "roll_dc_held" for e in events_seen_by(campaign, gm))


def test_with_no_answer_the_server_rolls_for_them(campaign, alice, settings, act):
    settings.DM_PLAYER_ROLL_SECONDS = 0.3
    action = act(campaign, alice, CLIMB)
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome.failed_code is None and outcome.steps == 2
    events = events_after(campaign_id=campaign.id, after_seq=action.seq)
    [result] = [e for e in events if e.type == "roll_result"]
    assert result.actor_kind == "system"
    assert events[-1].type == "dm_narration"
    assert f"{result.payload['total']} against DC" in events[-1].payload["text"]
    # A late click finds the roll made.
    late = api_as(alice).post(
        rolls_url(campaign),
        {"formula": "1d20", "roll_id": result.payload["roll_id"]},
        format="json",
    )
    assert late.status_code == 409


def test_a_roll_id_nobody_asked_for_is_not_found(campaign, alice):
    response = api_as(alice).post(
        rolls_url(campaign), {"formula": "1d20", "roll_id": str(uuid.uuid4())}, format="json"
    )
    assert response.status_code == 404 and response.json()["detail"]
