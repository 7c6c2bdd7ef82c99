"""The DM resumes after a budget stop (CONTRACTS §7 "GM controls", issue 20).

The DM stopped for budget (`turn_failed` `budget_exceeded`): a budget change that makes
room (a higher cap, or hard stop off; a player's own allowance raised when that was what
stopped it) appends `turn_reopened` {from_seq}, the actions since the last narration are
unanswered again, and exactly one turn answers them: also when the change is sent twice,
or two raises race. Through the API the GM panel uses, with turns started by the commits
themselves (in-process, as embedded; the same on PostgreSQL and Redis)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import ModelUsage
from billing.services import budget_set, user_budget_set
from campaigns.models import Event
from campaigns.services import campaign_create, campaign_join, snapshots_rebuild
from tests.auth_tools import isolate_limits
from tests.reads import api_as, events_seen_by

pytestmark = pytest.mark.django_db(transaction=True)

PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"
"""


@pytest.fixture(autouse=True)
def prices(settings, tmp_path):
    isolate_limits(settings)
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10_000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10_000
    settings.BILLING_USER_DAILY_CAP_USD = ""  # only the campaign's cap, unless a test says
    settings.BILLING_MAX_DAILY_CAP_USD = "10.00"


@pytest.fixture
def table(gm: Any, make_user: Any) -> Any:
    """A campaign with one player; no opening scene (its turn would spend the budget)."""
    campaign = campaign_create(name="The Vault", creator=gm)
    alice = make_user("alice")
    campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    return campaign, alice


def spent_an_hour_ago(campaign: Any, usd: str, user: Any = None) -> None:
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        user_id=user.id if user is not None else None,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        cost_usd=Decimal(usd),
        created_at=timezone.now() - timedelta(hours=1),
    )


def act(campaign: Any, user: Any, text: str = "I open the vault door") -> int:
    """The player acts through the API; the commit starts the DM's turn (in-process)."""
    response = api_as(user).post(
        f"/api/campaigns/{campaign.id}/actions",
        {"action_id": str(uuid.uuid4()), "text": text},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["seq"]


def put_budget(gm: Any, campaign: Any, **body: Any) -> dict:
    response = api_as(gm).put(f"/api/campaigns/{campaign.id}/budget", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def answers_after(campaign: Any, seq: int) -> list[Event]:
    """Every narration and failure that answered the action at `seq`."""
    return [
        e
        for e in Event.objects.filter(
            campaign=campaign, type__in=("dm_narration", "turn_failed"), seq__gt=seq
        ).order_by("seq")
        if e.payload.get("through_seq", 0) >= seq
    ]


def of_type(campaign: Any, kind: str) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type=kind).order_by("seq"))


def stopped_on_the_cap(gm: Any, campaign: Any, alice: Any) -> int:
    """The cap is reached; Alice acts; the DM stops for budget. Returns her action's seq."""
    put_budget(gm, campaign, daily_cap_usd="0.05", hard_stop=True)
    spent_an_hour_ago(campaign, "0.0499")
    seq = act(campaign, alice)
    [failed] = answers_after(campaign, seq)
    assert failed.type == "turn_failed" and failed.payload["code"] == "budget_exceeded"
    budget = put_budget(gm, campaign, hard_stop=True)  # no room made: nothing happens
    assert budget["dm_stopped"] is True and budget["stopped_by"] == "campaign"
    assert of_type(campaign, "turn_reopened") == []
    return seq


def test_a_raise_answers_the_waiting_action_exactly_once(gm, table):
    campaign, alice = table
    seq = stopped_on_the_cap(gm, campaign, alice)
    # The GM is told what they can do, where they can do it (no staff admin).
    [refusal] = of_type(campaign, "budget_refused")
    assert "GM panel" in refusal.payload["detail"] and "/gm/" in refusal.payload["detail"]
    assert "admin" not in refusal.payload["detail"]

    budget = put_budget(gm, campaign, daily_cap_usd="5.00")
    [reopened] = of_type(campaign, "turn_reopened")
    failed = answers_after(campaign, seq)[0]
    assert reopened.payload["from_seq"] <= seq < reopened.seq
    assert reopened.payload["turn_id"] == failed.payload["turn_id"]
    assert reopened.visibility == {"kind": "all"} and reopened.actor_kind == "system"
    answers = answers_after(campaign, seq)
    assert [a.type for a in answers] == ["turn_failed", "dm_narration"]
    assert answers[1].seq > reopened.seq
    assert budget["dm_stopped"] is False and budget["stopped_by"] is None

    # The same raise again, and another change: nothing more is answered.
    put_budget(gm, campaign, daily_cap_usd="5.00")
    put_budget(gm, campaign, daily_cap_usd="6.00", hard_stop=False)
    assert len(of_type(campaign, "turn_reopened")) == 1
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed", "dm_narration"]
    state = api_as(gm).get(f"/api/campaigns/{campaign.id}/snapshot").json()["state"]
    assert state["turn"]["answered_through_seq"] >= seq
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []

    # The table saw the stop and the resumption, in plain words and without figures.
    seen = {e["type"]: e for e in events_seen_by(campaign, alice)}
    assert seen["turn_reopened"]["payload"]["from_seq"] == reopened.payload["from_seq"]
    assert "budget_refused" not in seen
    assert "$" not in seen["turn_failed"]["payload"]["detail"]


def test_turning_hard_stop_off_resumes_the_dm_too(gm, table):
    campaign, alice = table
    seq = stopped_on_the_cap(gm, campaign, alice)
    put_budget(gm, campaign, hard_stop=False)
    assert len(of_type(campaign, "turn_reopened")) == 1
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed", "dm_narration"]


def test_every_action_since_the_last_narration_is_answered_by_one_turn(gm, table, make_user):
    campaign, alice = table
    bob = make_user("bob")
    campaign_join(invite_code=campaign.invite_code, user=bob, display_name="Bob")
    first = stopped_on_the_cap(gm, campaign, alice)
    second = act(campaign, bob, "I keep watch at the stairs")  # stopped again
    assert answers_after(campaign, second)[0].payload["code"] == "budget_exceeded"

    put_budget(gm, campaign, daily_cap_usd="5.00")
    [reopened] = of_type(campaign, "turn_reopened")
    assert reopened.payload["from_seq"] <= first
    narrations = [a for a in answers_after(campaign, first) if a.type == "dm_narration"]
    assert len(narrations) == 1 and narrations[0].payload["through_seq"] >= second


def test_two_raises_at_once_reopen_once_and_one_turn_answers(gm, table):
    campaign, alice = table
    seq = stopped_on_the_cap(gm, campaign, alice)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def raise_cap(cap: str) -> None:
        try:
            start.wait(timeout=30)
            put_budget(gm, campaign, daily_cap_usd=cap)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=raise_cap, args=(cap,)) for cap in ("4.00", "5.00")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(of_type(campaign, "turn_reopened")) == 1
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed", "dm_narration"]
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


def test_a_players_allowance_resumes_with_the_allowance_not_the_campaign_cap(gm, table, settings):
    campaign, alice = table
    settings.BILLING_USER_DAILY_CAP_USD = "5.00"
    user_budget_set(user_id=alice.id, daily_cap_usd="0.05")
    spent_an_hour_ago(campaign, "0.0499", user=alice)
    seq = act(campaign, alice)
    assert answers_after(campaign, seq)[0].payload["code"] == "budget_exceeded"

    # The campaign's cap was never the problem: raising it changes nothing.
    budget = put_budget(gm, campaign, daily_cap_usd="5.00")
    assert budget["dm_stopped"] is True and budget["stopped_by"] == "user"
    assert of_type(campaign, "turn_reopened") == []

    user_budget_set(user_id=alice.id, daily_cap_usd="4.00")  # staff raise her allowance
    assert len(of_type(campaign, "turn_reopened")) == 1
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed", "dm_narration"]
    user_budget_set(user_id=alice.id, daily_cap_usd="4.50")
    assert len(of_type(campaign, "turn_reopened")) == 1


def test_a_raise_that_leaves_no_room_does_not_resume(gm, table):
    campaign, alice = table
    seq = stopped_on_the_cap(gm, campaign, alice)
    spent_an_hour_ago(campaign, "0.0600")  # now past even the next cap
    put_budget(gm, campaign, daily_cap_usd="0.10")
    assert of_type(campaign, "turn_reopened") == []
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed"]


def test_a_stopped_turn_keeps_its_dice_when_it_resumes(gm, make_user, settings):
    """A turn that rolled and then hit the cap before it could narrate: the rolls are
    facts (CONTRACTS §7), and the resumed answer narrates them instead of rolling again."""
    settings.PRICES_FILE = _input_only_prices(settings)
    # What an attack turn's two model calls cost, measured on a table of its own.
    sample = campaign_create(name="Sample", creator=gm)
    sampler = make_user("sampler")
    campaign_join(invite_code=sample.invite_code, user=sampler, display_name="Sam")
    budget_set(campaign_id=sample.id, daily_cap_usd="10.00")
    act(sample, sampler, "I attack the goblin")
    first_step, second_step = (
        u.cost_usd for u in ModelUsage.objects.filter(campaign_id=sample.id).order_by("created_at")
    )
    assert second_step > first_step * Decimal("0.5")

    campaign = campaign_create(name="The Vault", creator=gm)
    alice = make_user("alice")
    campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    # Room for the rolling step, not for the narrating one.
    cap = (first_step * Decimal("1.5")).quantize(Decimal("0.0001"))
    put_budget(gm, campaign, daily_cap_usd=str(cap), hard_stop=True)
    seq = act(campaign, alice, "I attack the goblin")
    [failed] = answers_after(campaign, seq)
    assert failed.payload["code"] == "budget_exceeded"
    [rolled] = of_type(campaign, "roll_result")
    assert rolled.payload["turn_id"] == failed.payload["turn_id"]

    put_budget(gm, campaign, daily_cap_usd="5.00")
    assert [a.type for a in answers_after(campaign, seq)] == ["turn_failed", "dm_narration"]
    assert of_type(campaign, "roll_result") == [rolled]  # not rolled again
    narration = answers_after(campaign, seq)[-1]
    assert str(rolled.payload["total"]) in narration.payload["text"]


def _input_only_prices(settings: Any) -> str:
    """Prices where a call costs exactly what was reserved for it (input tokens only)."""
    from pathlib import Path

    path = Path(settings.PRICES_FILE).with_name("input-only.toml")
    path.write_text('[models."fake-dm"]\ninput = "100.00"\noutput = "0"\n')
    return str(path)
