"""What players are told when the DM stops for money (CONTRACTS §7): plain words and no
figures. The whole table sees `turn_failed`; the spend, the cap and anyone's allowance
reach only the GMs (the budget and usage API, the GM-only `budget_refused` event) and,
for a user's own allowance, that user. Read the way a member meets it: the events API,
the room's socket and the room page."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.utils import timezone

from billing.models import ModelUsage
from billing.services import budget_set, user_budget_set
from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from orchestrator.services import turn_run
from rpgai.tasks import wait_idle
from tests.reads import api_as, events_seen_by
from tests.ws import Room, events_of

PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"
"""
CAP = "0.0987"  # digits no turn's words would hold by chance
MONEY_WORDS = ("$", "usd", CAP, "0987")


@pytest.fixture(autouse=True)
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 1000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 1000


def spent_today(campaign: Any, usd: str, user: Any = None) -> None:
    """Spend recorded an hour ago (in this campaign, charged to `user` if given)."""
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        user_id=user.id if user is not None else None,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        cost_usd=Decimal(usd),
        created_at=timezone.now() - timedelta(hours=1),
    )


def act_and_turn(campaign: Any, user: Any, text: str = "I open the vault") -> None:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
    turn_run(campaign_id=campaign.id)


def no_money_in(events: list[dict]) -> None:
    """No payload a member was given speaks of money."""
    for event in events:
        text = json.dumps(event["payload"]).lower()
        assert not any(word in text for word in MONEY_WORDS), event
    assert not {e["type"] for e in events} & {"budget_refused", "budget_warning"}


def the(events: list[dict], kind: str) -> dict:
    [event] = [e for e in events if e["type"] == kind]
    return event


@pytest.mark.django_db
def test_a_campaign_over_its_cap_tells_players_plain_words_and_the_gm_the_figures(
    campaign, gm, alice, bob
):
    budget_set(campaign_id=campaign.id, daily_cap_usd=CAP, hard_stop=True)
    spent_today(campaign, "0.0900")
    act_and_turn(campaign, alice)

    for player in (alice, bob):
        seen = events_seen_by(campaign, player)
        failed = the(seen, "turn_failed")
        assert failed["payload"]["code"] == "budget_exceeded"
        assert "budget" in failed["payload"]["detail"]
        assert not any(ch.isdigit() for ch in failed["payload"]["detail"])
        no_money_in(seen)

    # The GM: the figures in an event only GMs see, beside the same public words.
    seen = events_seen_by(campaign, gm)
    refusal = the(seen, "budget_refused")
    assert refusal["visibility"] == {"kind": "gm"}
    assert refusal["payload"]["scope"] == "campaign"
    assert refusal["payload"]["cap_usd"] == CAP and refusal["payload"]["spent_usd"] == "0.09"
    assert Decimal(refusal["payload"]["call_usd"]) > 0
    assert f"${CAP} cap" in refusal["payload"]["detail"]
    assert refusal["payload"]["turn_id"] == the(seen, "turn_failed")["payload"]["turn_id"]
    # ... and in the budget API, which players may not read.
    budget = api_as(gm).get(f"/api/campaigns/{campaign.id}/budget").json()
    assert budget["daily_cap_usd"] == CAP and budget["spent_usd"] == "0.09"
    assert api_as(alice).get(f"/api/campaigns/{campaign.id}/budget").status_code == 403
    assert api_as(alice).get(f"/api/campaigns/{campaign.id}/usage").status_code == 403


@pytest.mark.django_db
def test_a_players_spent_allowance_is_told_to_the_gm_not_to_the_table(
    campaign, gm, alice, bob, settings
):
    settings.BILLING_USER_DAILY_CAP_USD = "5.00"
    user_budget_set(user_id=alice.id, daily_cap_usd=CAP)
    spent_today(campaign, "0.0900", user=alice)  # her spend, here or in any campaign
    act_and_turn(campaign, alice)

    # Bob reads that the DM could not answer, but nothing of Alice's allowance or spend.
    seen = events_seen_by(campaign, bob)
    failed = the(seen, "turn_failed")
    assert failed["payload"]["code"] == "budget_exceeded"
    assert "alice" not in failed["payload"]["detail"].lower()
    no_money_in(seen)

    # The figures are for the GM alone (issue 20: no money figures for any player, not
    # even their own); Alice reads the same plain words as the table.
    refusal = the(events_seen_by(campaign, gm), "budget_refused")
    assert refusal["visibility"] == {"kind": "gm"}
    assert refusal["payload"]["scope"] == "user"
    assert refusal["payload"]["user_id"] == str(alice.id)
    assert refusal["payload"]["cap_usd"] == CAP
    no_money_in(events_seen_by(campaign, alice))


@pytest.mark.django_db(transaction=True)
async def test_over_the_socket_players_get_no_figures_and_the_gm_does(campaign, gm, alice, bob):
    await sync_to_async(budget_set)(campaign_id=campaign.id, daily_cap_usd=CAP, hard_stop=True)
    await sync_to_async(spent_today)(campaign, "0.0900")
    rooms = {
        who: Room(campaign.id, user) for who, user in (("gm", gm), ("alice", alice), ("bob", bob))
    }
    for room in rooms.values():
        await room.open()
        await room.hello(0)

    await rooms["alice"].send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I open the vault"}
    )
    await wait_idle()
    seen = {}
    for who, room in rooms.items():
        messages = await room.recv_until(
            lambda m: m["type"] == "event" and m["event"]["type"] == "turn_failed", timeout=10
        )
        # The GM's notice comes in the same append, right after the turn_failed.
        while not await room.comm.receive_nothing(timeout=0.3):
            messages.append(await room.recv())
        seen[who] = messages
        await room.close()

    for who in ("alice", "bob"):
        assert not any(m["type"] == "error" for m in seen[who])
        no_money_in(events_of(seen[who]))
    refusal = the(events_of(seen["gm"]), "budget_refused")
    assert refusal["payload"]["cap_usd"] == CAP


@pytest.mark.django_db
def test_the_room_page_shows_money_to_the_gm_only(client, campaign, gm, alice):
    budget_set(campaign_id=campaign.id, daily_cap_usd=CAP, hard_stop=True)
    spent_today(campaign, "0.0900")
    act_and_turn(campaign, alice)
    url = f"/campaigns/{campaign.id}/"

    client.force_login(alice)
    page = client.get(url).content.decode()
    assert "gm-spend" not in page and "Spend, last 24 hours" not in page
    assert "$" not in page and CAP not in page

    client.force_login(gm)
    assert 'id="gm-spend"' in client.get(url).content.decode()


@pytest.mark.django_db
def test_the_dms_prompt_never_carries_the_gms_money_notices(campaign, gm, alice):
    """The model reads the prompt and may repeat anything in it to the table: GM-only
    budget events (refusals, warnings) stay out of it, secret or not."""
    from orchestrator.prompt import prompt_build
    from orchestrator.selectors import turn_context_get, turn_owed

    budget_set(campaign_id=campaign.id, daily_cap_usd=CAP, hard_stop=True)
    spent_today(campaign, "0.0900")
    act_and_turn(campaign, alice)
    assert "budget_refused" in {e["type"] for e in events_seen_by(campaign, gm)}

    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I try again")
    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    prompt = json.dumps(prompt_build(context=context, budget=6000).messages).lower()
    assert "budget_refused" not in prompt and "budget_warning" not in prompt
    assert CAP not in prompt and "0987" not in prompt
