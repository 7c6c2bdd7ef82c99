"""`GET /api/campaigns/<id>/usage` and `GET, PUT /api/campaigns/<id>/budget`: the GM's
spend by day, model and purpose, and the daily cap, as decimal strings in USD. Players,
outsiders and anonymous callers are refused; bad input gets a 400, never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import ModelUsage
from billing.selectors import budget_status
from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from orchestrator.services import turn_run
from tests.auth_tools import access_for, bearer

pytestmark = pytest.mark.django_db

PRICES = """
[models."fake-dm"]
input = "2.00"
output = "8.00"

[models."tts-test"]
characters = "20.00"
"""


@pytest.fixture(autouse=True)
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def api(user: Any = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(**bearer(access_for(user)))
    return client


def usage_url(campaign: Any, query: str = "") -> str:
    return f"/api/campaigns/{campaign.id}/usage{query}"


def budget_url(campaign: Any) -> str:
    return f"/api/campaigns/{campaign.id}/budget"


def play(campaign: Any, user: Any, text: str) -> None:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
    turn_run(campaign_id=campaign.id)


def money(text: str) -> Decimal:
    assert isinstance(text, str) and "." in text, text
    return Decimal(text)


def test_usage_by_day_model_and_purpose(campaign, gm, alice):
    play(campaign, alice, "I look around the shelves")  # one model call
    play(campaign, alice, "I greet the innkeeper")
    yesterday = timezone.now() - timedelta(days=1)
    ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="openai",
        model="tts-test",
        purpose="tts",
        characters=1500,
        cost_usd=Decimal("0.03"),
        created_at=yesterday,
    )
    turns = list(ModelUsage.objects.filter(campaign_id=campaign.id, purpose="dm_turn"))

    response = api(gm).get(usage_url(campaign, "?days=7"))
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["campaign_id"] == str(campaign.id) and data["days"] == 7
    assert data["since"].endswith("Z")

    older, today = data["by_day"]
    assert older["day"] == yesterday.astimezone(UTC).date().isoformat()
    assert today["day"] == datetime.now(UTC).date().isoformat()
    assert older["items"] == [
        {
            "provider": "openai",
            "model": "tts-test",
            "purpose": "tts",
            "calls": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "characters": 1500,
            "cost_usd": "0.03",
        }
    ]
    [item] = today["items"]
    assert (item["provider"], item["model"], item["purpose"]) == ("fake", "fake-dm", "dm_turn")
    assert item["calls"] == 2
    assert item["input_tokens"] == sum(u.input_tokens for u in turns)
    assert item["output_tokens"] == sum(u.output_tokens for u in turns)
    turn_cost = sum(u.cost_usd for u in turns)
    assert money(item["cost_usd"]) == turn_cost
    assert money(today["cost_usd"]) == turn_cost and today["calls"] == 2

    assert data["total"]["calls"] == 3
    assert money(data["total"]["cost_usd"]) == turn_cost + Decimal("0.03")
    by_user = {row["user_id"]: row for row in data["by_user"]}
    assert money(by_user[str(alice.id)]["cost_usd"]) == turn_cost
    assert by_user[None]["characters"] == 1500

    budget = data["budget"]
    assert budget["daily_cap_usd"] == "1.00" and budget["hard_stop"] is True
    # The speech of a day ago has just left the rolling 24-hour window.
    assert money(budget["spent_usd"]) == turn_cost
    assert budget["window_hours"] == 24 and budget["warn_at_percent"] == [80, 100]

    one_day = api(gm).get(usage_url(campaign, "?days=1")).json()
    assert [d["day"] for d in one_day["by_day"]] == [today["day"]]


def test_usage_of_a_campaign_without_any(campaign, gm):
    data = api(gm).get(usage_url(campaign)).json()
    assert data["days"] == 30 and data["by_day"] == [] and data["by_user"] == []
    assert data["total"] == {
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "characters": 0,
        "cost_usd": "0.00",
    }


def test_the_budget_is_read_and_set_by_the_gm(campaign, gm, alice):
    response = api(gm).get(budget_url(campaign))
    assert response.status_code == 200
    assert response.json() == {
        "campaign_id": str(campaign.id),
        "daily_cap_usd": "1.00",
        "hard_stop": True,
        "window_hours": 24,
        "spent_usd": "0.00",
        "reserved_usd": "0.00",
        "remaining_usd": "1.00",
        "percent": 0.0,
        "degraded": False,
        "warn_at_percent": [80, 100],
        "spent_today_cents": 0,
        "reserved_cents": 0,
        "daily_cap_cents": 100,
        "remaining_cents": 100,
        "dm_stopped": False,
        "stopped_by": None,
    }

    response = api(gm).put(
        budget_url(campaign), {"daily_cap_usd": "2.5", "hard_stop": False}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["daily_cap_usd"] == "2.50" and response.json()["hard_stop"] is False

    # Either field alone; a number is taken as well as a string.
    response = api(gm).put(budget_url(campaign), {"hard_stop": True}, format="json")
    assert response.json()["daily_cap_usd"] == "2.50" and response.json()["hard_stop"] is True
    response = api(gm).put(budget_url(campaign), {"daily_cap_usd": 0.25}, format="json")
    assert response.json()["daily_cap_usd"] == "0.25"

    play(campaign, alice, "I light a candle")
    data = api(gm).get(budget_url(campaign)).json()
    spent = money(data["spent_usd"])
    assert spent == sum(u.cost_usd for u in ModelUsage.objects.all()) > 0
    assert money(data["remaining_usd"]) == Decimal("0.25") - spent
    assert data["percent"] == round(float(spent / Decimal("0.25") * 100), 2)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"daily_cap_usd": "-1"},
        {"daily_cap_usd": "lots"},
        {"daily_cap_usd": "1.23456"},
        {"daily_cap_usd": "1e9"},
        {"daily_cap_usd": "NaN"},
        {"daily_cap_usd": None},
        {"hard_stop": "maybe"},
        [1, 2],
        "just a string",
    ],
)
def test_a_bad_budget_is_refused_with_400(campaign, gm, body):
    response = api(gm).put(budget_url(campaign), body, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"detail", "code"}
    assert api(gm).get(budget_url(campaign)).json()["daily_cap_usd"] == "1.00"


@pytest.mark.parametrize("query", ["?days=0", "?days=367", "?days=many", "?days=-3"])
def test_bad_usage_days_are_refused_with_400(campaign, gm, query):
    response = api(gm).get(usage_url(campaign, query))
    assert response.status_code == 400, response.content


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "usage"), ("get", "budget"), ("put", "budget")],
)
def test_only_the_gm_gets_in(campaign, alice, make_user, method, path):
    url = usage_url(campaign) if path == "usage" else budget_url(campaign)
    body = {"daily_cap_usd": "100"}

    def call(client: APIClient, target: str = url) -> Any:
        return getattr(client, method)(target, body, format="json")

    player = call(api(alice))
    assert player.status_code == 403 and player.json()["code"] == "gm_only"
    outsider = call(api(make_user("mallory")))
    assert outsider.status_code == 403 and outsider.json()["code"] == "not_a_member"
    assert call(api()).status_code == 401
    unknown = url.replace(str(campaign.id), str(uuid.uuid4()))
    assert call(api(make_user("eve")), unknown).status_code == 404
    assert api(alice).get(budget_url(campaign)).status_code == 403
    # Nothing changed.
    assert budget_status(campaign_id=campaign.id).daily_cap_usd == Decimal("1.00")
