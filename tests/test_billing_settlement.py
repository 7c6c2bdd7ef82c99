"""Reserve, then settle: every DM model call reserves a bounded worst case (its prompt
tokens plus max_tokens, priced) before it is made, and is settled after it to the usage
the model reported, so spend is real arithmetic; a failed call releases its reservation,
and released money is free again."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from billing import selectors
from billing.models import ModelUsage, Reservation
from billing.prices import model_cost
from billing.services import (
    BudgetExceeded,
    budget_reserve,
    budget_set,
    reservation_release,
)
from campaigns.selectors import events_after, membership_get
from campaigns.services import player_action_submit
from llm.fake import FakeModel
from llm.tokens import count_message_tokens
from orchestrator.services import turn_run
from tests.openai_server import Answer, Fail, serving

pytestmark = pytest.mark.django_db

PRICES = """
[models."fake-dm"]
input = "2.00"
output = "8.00"

[models."test-model"]
input = "3.00"
output = "12.00"
"""


@pytest.fixture(autouse=True)
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    return path


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def act(campaign, user, text: str):
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


def test_a_turn_is_settled_to_the_usage_the_model_reported(campaign, alice):
    action = act(campaign, alice, "I look around the dusty shelves")  # one step
    outcome = turn_run(campaign_id=campaign.id)

    [reported] = outcome.usage
    [usage] = ModelUsage.objects.filter(campaign_id=campaign.id)
    assert reported.provider == "fake" and reported.model == "fake-dm"
    assert (usage.provider, usage.model, usage.purpose) == ("fake", "fake-dm", "dm_turn")
    assert usage.input_tokens == reported.input_tokens > 100
    assert usage.output_tokens == reported.output_tokens > 10
    # $2 per million input tokens, $8 per million output tokens: exact decimals.
    expected = (
        Decimal(reported.input_tokens) * 2 + Decimal(reported.output_tokens) * 8
    ) / 1_000_000
    assert usage.cost_usd == expected
    assert usage.user_id == alice.id
    assert str(usage.turn_id) == outcome.turn_id
    assert usage.request_id == action.request_id
    assert not usage.estimated
    assert not Reservation.objects.exists()  # the reservation became the usage row
    assert selectors.campaign_spent(campaign_id=campaign.id) == expected


def test_different_answers_cost_different_amounts(campaign, alice):
    act(campaign, alice, "I wait")
    turn_run(campaign_id=campaign.id)
    act(campaign, alice, "I pick up the lantern, then I greet the old innkeeper by the fire")
    turn_run(campaign_id=campaign.id)
    first, second = ModelUsage.objects.filter(campaign_id=campaign.id).order_by("created_at")
    assert first.cost_usd != second.cost_usd
    assert first.output_tokens != second.output_tokens


def test_the_reservation_is_the_prompt_plus_max_tokens_priced(
    campaign, alice, settings, monkeypatch
):
    settings.DM_MAX_TOKENS = 700
    held: list[tuple[Decimal, int]] = []
    real_complete, real_stream = FakeModel.complete, FakeModel.stream

    def look(request) -> None:  # the model is being called: the reservation is held
        [reservation] = Reservation.objects.filter(campaign=campaign)
        held.append((reservation.amount_usd, count_message_tokens(request.messages)))

    async def complete(self, request):
        await sync_to_async(look)(request)
        return await real_complete(self, request)

    async def stream(self, request, sink):
        await sync_to_async(look)(request)
        return await real_stream(self, request, sink)

    monkeypatch.setattr(FakeModel, "complete", complete)
    monkeypatch.setattr(FakeModel, "stream", stream)
    act(campaign, alice, "I open the door")
    outcome = turn_run(campaign_id=campaign.id)
    [(amount, prompt_tokens)] = held
    assert amount == (Decimal(prompt_tokens) * 2 + Decimal(700) * 8) / 1_000_000
    assert amount == model_cost(model="fake-dm", input_tokens=prompt_tokens, output_tokens=700)
    # The fake model counts the same prompt with the same tokenizer.
    assert outcome.usage[0].input_tokens == prompt_tokens
    assert ModelUsage.objects.get().cost_usd < amount


def test_a_failed_model_call_releases_its_reservation(campaign, alice, settings):
    settings.DM_MAX_RETRIES = 0
    with serving(settings) as server:
        server.script(Fail(500))
        action = act(campaign, alice, "I attack the goblin")
        turn_run(campaign_id=campaign.id)
    [failed] = events_after(campaign_id=campaign.id, after_seq=action.seq)
    assert failed.type == "turn_failed" and failed.payload["code"] == "model_error"
    assert not Reservation.objects.exists()
    assert not ModelUsage.objects.exists()
    assert selectors.budget_status(campaign_id=campaign.id).reserved_usd == 0


def test_a_repair_is_a_second_call_settled_on_its_own(campaign, alice, settings):
    with serving(settings) as server:
        server.script(Answer("this is not JSON at all"), Answer())
        act(campaign, alice, "I attack the goblin")
        outcome = turn_run(campaign_id=campaign.id)
    assert [u.purpose for u in outcome.usage] == ["dm_turn", "repair"]
    rows = {u.purpose: u for u in ModelUsage.objects.filter(campaign_id=campaign.id)}
    assert set(rows) == {"dm_turn", "repair"}
    for reported in outcome.usage:
        row = rows[reported.purpose]
        assert (row.model, row.input_tokens, row.output_tokens) == (
            "test-model",
            reported.input_tokens,
            reported.output_tokens,
        )
        assert row.cost_usd == model_cost(
            model="test-model",
            input_tokens=reported.input_tokens,
            output_tokens=reported.output_tokens,
        )
    assert not Reservation.objects.exists()


def test_a_released_reservation_frees_the_budget(campaign):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.01", hard_stop=True)
    budget_reserve(
        campaign_id=campaign.id, key="big", purpose="dm_turn", amount_usd=Decimal("0.008")
    )
    with pytest.raises(BudgetExceeded) as refused:
        budget_reserve(
            campaign_id=campaign.id, key="next", purpose="dm_turn", amount_usd=Decimal("0.003")
        )
    assert refused.value.code == "budget_exceeded"
    # The figures are for the GM; the words anyone may read carry no money.
    assert "$0.008" in refused.value.gm_detail and "$0.01" in refused.value.gm_detail
    assert "$" not in refused.value.detail
    assert reservation_release(key="big") is True
    assert reservation_release(key="big") is False  # once
    budget_reserve(
        campaign_id=campaign.id, key="next", purpose="dm_turn", amount_usd=Decimal("0.003")
    )
    assert selectors.budget_status(campaign_id=campaign.id).reserved_usd == Decimal("0.003")


def test_a_reservation_of_a_dead_worker_expires(campaign, settings):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.01", hard_stop=True)
    budget_reserve(
        campaign_id=campaign.id, key="lost", purpose="dm_turn", amount_usd=Decimal("0.01")
    )
    with pytest.raises(BudgetExceeded):
        budget_reserve(
            campaign_id=campaign.id, key="x", purpose="dm_turn", amount_usd=Decimal("0.001")
        )
    Reservation.objects.filter(key="lost").update(expires_at=timezone.now() - timedelta(seconds=1))
    budget_reserve(campaign_id=campaign.id, key="x", purpose="dm_turn", amount_usd=Decimal("0.001"))
    assert list(Reservation.objects.values_list("key", flat=True)) == ["x"]
