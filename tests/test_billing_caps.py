"""Daily caps over a rolling 24 hours. With hard stop, a turn that could pass the cap
makes no model call and ends with `turn_failed` `budget_exceeded`; without it, the GM
is warned (an event only GMs see) at 80% and 100%, and past the cap the campaign
degrades: a cheaper model, no voice. A player's own cap holds across campaigns."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import ROUND_UP, Decimal

import pytest
from django.utils import timezone

from billing import selectors
from billing.models import ModelUsage, Reservation
from billing.services import (
    CAMPAIGN_CAP_REACHED,
    USER_CAP_REACHED,
    budget_set,
    user_budget_set,
)
from campaigns.models import Event
from campaigns.selectors import SYSTEM_VIEWER, Viewer, events_after, membership_get
from campaigns.services import campaign_create, campaign_delete, campaign_join, player_action_submit
from orchestrator.services import turn_run
from tests.openai_server import serving
from voice.services import speech_budget_allows

PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"

[models."fake-dm-mini"]
input = "1.00"
output = "4.00"

[models."tts-test"]
characters = "20.00"
"""


@pytest.fixture(autouse=True)
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 1000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 1000
    return path


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def act(campaign, user, text: str = "I look around the room"):
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


def play(campaign, user, text: str = "I look around the room") -> Event:
    """A player acts and the DM turn runs: its narration or its failure."""
    action = act(campaign, user, text)
    turn_run(campaign_id=campaign.id)
    return answer_to(campaign, action)


def answer_to(campaign, action) -> Event:
    [event] = [
        e
        for e in events_after(campaign_id=campaign.id, after_seq=action.seq)
        if e.type in ("dm_narration", "turn_failed")
    ]
    return event


def a_little_more_than(usd: Decimal) -> Decimal:
    """A cap (4 decimal places) just above `usd`: far less than a turn's worst case."""
    return (usd + Decimal("0.00005")).quantize(Decimal("0.0001"), rounding=ROUND_UP)


def spent_before(campaign, usd: str, hours_ago: float) -> None:
    """Spend recorded earlier (usage rows may be appended, never changed)."""
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        cost_usd=Decimal(usd),
        created_at=timezone.now() - timedelta(hours=hours_ago),
    )


# --- Hard stop ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_turn_over_a_hard_cap_makes_no_model_call(campaign, alice, settings):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.0001", hard_stop=True)
    with serving(settings) as server:
        action = act(campaign, alice, "I attack the goblin")
        outcome = turn_run(campaign_id=campaign.id)
        assert server.requests == []  # no model call was made
    failed = answer_to(campaign, action)
    assert failed.type == "turn_failed"
    assert failed.payload["code"] == "budget_exceeded"
    assert failed.visibility == {"kind": "all"}  # the room shows it to everyone
    # ... in plain words without money; the figures are in an event only GMs see.
    assert failed.payload["detail"] == CAMPAIGN_CAP_REACHED
    [refusal] = [
        e
        for e in events_after(campaign_id=campaign.id, after_seq=action.seq)
        if e.type == "budget_refused"
    ]
    assert refusal.visibility == {"kind": "gm"}
    assert refusal.payload["scope"] == "campaign" and refusal.payload["cap_usd"] == "0.0001"
    assert refusal.payload["turn_id"] == failed.payload["turn_id"]
    assert "$0.0001 cap" in refusal.payload["detail"]
    assert outcome.usage == []
    assert not ModelUsage.objects.exists() and not Reservation.objects.exists()


@pytest.mark.django_db
def test_turns_run_until_the_next_could_pass_the_cap_and_again_once_it_is_raised(campaign, alice):
    budget_set(campaign_id=campaign.id, daily_cap_usd="5", hard_stop=True)
    assert play(campaign, alice).type == "dm_narration"
    spent = selectors.campaign_spent(campaign_id=campaign.id)
    assert spent > 0

    # Room for less than a turn's worst case: refused, although the real cost might fit.
    budget_set(campaign_id=campaign.id, daily_cap_usd=a_little_more_than(spent))
    refused = play(campaign, alice)
    assert refused.payload["code"] == "budget_exceeded"
    assert selectors.campaign_spent(campaign_id=campaign.id) == spent

    budget_set(campaign_id=campaign.id, daily_cap_usd=a_little_more_than(spent) + 1)
    assert play(campaign, alice).type == "dm_narration"
    assert selectors.campaign_spent(campaign_id=campaign.id) > spent


@pytest.mark.django_db
def test_the_window_is_the_last_24_hours(campaign, alice):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.50", hard_stop=True)
    spent_before(campaign, "0.50", hours_ago=24.5)  # rolled out of the window
    assert selectors.campaign_spent(campaign_id=campaign.id) == 0
    assert play(campaign, alice).type == "dm_narration"

    spent_before(campaign, "0.49", hours_ago=23.5)  # still in it
    refused = play(campaign, alice)
    assert refused.payload["code"] == "budget_exceeded"


# --- Without hard stop: warnings and degrading ---------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the warning is appended after the settlement commits
def test_without_hard_stop_the_gm_is_warned_at_80_and_100_percent_then_it_degrades(
    campaign, alice, gm, settings
):
    settings.BILLING_DEGRADE_MODEL = "fake-dm-mini"
    settings.TTS_PROVIDER = "openai"
    settings.OPENAI_TTS_MODEL = "tts-test"
    budget_set(campaign_id=campaign.id, daily_cap_usd="1.00", hard_stop=False)

    def warnings(viewer=SYSTEM_VIEWER) -> list[Event]:
        events = events_after(campaign_id=campaign.id, limit=1000, viewer=viewer)
        return [e for e in events if e.type == "budget_warning"]

    spent_before(campaign, "0.79", hours_ago=1)
    act(campaign, alice)
    turn_run(campaign_id=campaign.id)  # a turn costs a few cents at these prices
    [at_80] = warnings()
    assert at_80.payload["percent"] == 80 and at_80.payload["hard_stop"] is False
    assert at_80.payload["daily_cap_usd"] == "1.00"
    assert Decimal(at_80.payload["spent_usd"]) >= Decimal("0.80")
    assert at_80.visibility == {"kind": "gm"}
    assert not at_80.payload["degraded"]
    assert speech_budget_allows(campaign_id=campaign.id, characters=100) is True

    act(campaign, alice)
    turn_run(campaign_id=campaign.id)
    assert len(warnings()) == 1  # still between 80% and 100%: no second warning

    spent_before(campaign, "0.19", hours_ago=1)
    action = act(campaign, alice)
    turn_run(campaign_id=campaign.id)
    assert answer_to(campaign, action).type == "dm_narration"  # no hard stop: it went through
    at_80, at_100 = warnings()
    assert at_100.payload["percent"] == 100 and at_100.payload["degraded"] is True
    assert "fake-dm-mini" in at_100.payload["detail"] and "no voice" in at_100.payload["detail"]

    # Only GMs see the warnings.
    gm_view = Viewer.of(membership_get(campaign_id=campaign.id, user_id=gm.id))
    player_view = Viewer.of(membership_get(campaign_id=campaign.id, user_id=alice.id))
    assert len(warnings(gm_view)) == 2 and warnings(player_view) == []

    # Degraded: the cheaper model plays the next turn, and the voice is off.
    assert selectors.budget_status(campaign_id=campaign.id).degraded
    action = act(campaign, alice)
    turn_run(campaign_id=campaign.id)
    assert answer_to(campaign, action).type == "dm_narration"
    assert ModelUsage.objects.filter(campaign_id=campaign.id).latest("created_at").model == (
        "fake-dm-mini"
    )
    assert speech_budget_allows(campaign_id=campaign.id, characters=100) is False


@pytest.mark.django_db
def test_with_hard_stop_there_is_no_degrading(campaign, alice, settings):
    settings.BILLING_DEGRADE_MODEL = "fake-dm-mini"
    budget_set(campaign_id=campaign.id, daily_cap_usd="1.00", hard_stop=True)
    spent_before(campaign, "0.95", hours_ago=1)
    assert not selectors.budget_status(campaign_id=campaign.id).degraded
    act(campaign, alice)
    turn_run(campaign_id=campaign.id)
    assert ModelUsage.objects.latest("created_at").model == "fake-dm"


# --- Per user -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_players_own_cap_holds_across_campaigns(gm, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    one = campaign_create(name="One", creator=gm)
    two = campaign_create(name="Two", creator=gm)
    for campaign in (one, two):
        campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    campaign_join(invite_code=two.invite_code, user=bob, display_name="Bob")

    assert play(one, alice).type == "dm_narration"
    spent = selectors.user_spent(user_id=alice.id)
    assert spent == selectors.campaign_spent(campaign_id=one.id) > 0

    user_budget_set(user_id=alice.id, daily_cap_usd=a_little_more_than(spent))
    refused = play(two, alice)
    assert refused.payload["code"] == "budget_exceeded"
    assert refused.payload["detail"] == USER_CAP_REACHED  # names nobody, says no figure
    # Bob has no cap of his own; the campaign's cap is far away.
    assert play(two, bob).type == "dm_narration"
    assert selectors.user_spent(user_id=bob.id) > 0
    assert selectors.user_spent(user_id=alice.id) == spent

    # Deleting a campaign does not erase what was spent in it.
    campaign_delete(campaign_id=one.id)
    assert selectors.user_spent(user_id=alice.id) == spent
    user_budget_set(user_id=alice.id, daily_cap_usd=None)  # back to the setting's 5.00
    assert play(two, alice).type == "dm_narration"


@pytest.mark.django_db
def test_the_default_user_cap_applies_unless_a_user_has_their_own(campaign, alice, settings):
    settings.BILLING_USER_DAILY_CAP_USD = "0.0001"
    assert play(campaign, alice).payload["code"] == "budget_exceeded"
    user_budget_set(user_id=alice.id, daily_cap_usd="5")
    assert play(campaign, alice).type == "dm_narration"
