"""`manage.py usage_report [--campaign ID] [--days N]` and the admin's usage list with
its totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing.models import ModelUsage
from billing.selectors import budget_status
from billing.services import budget_set
from campaigns.services import campaign_create

pytestmark = pytest.mark.django_db


def record(campaign, *, model="fake-dm", purpose="dm_turn", cost="0.0012", days_ago=0, **more):
    return ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake" if model.startswith("fake") else "openai",
        model=model,
        purpose=purpose,
        cost_usd=Decimal(cost),
        created_at=timezone.now() - timedelta(days=days_ago),
        **more,
    )


def report(*args: str) -> str:
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def two_campaigns(campaign, gm):
    other = campaign_create(name="Ashen Road", creator=gm)
    record(campaign, input_tokens=1000, output_tokens=200, cost="0.0012")
    record(campaign, input_tokens=900, output_tokens=100, cost="0.0011")
    record(campaign, model="tts-1", purpose="tts", characters=400, cost="0.006", days_ago=3)
    record(other, input_tokens=50, output_tokens=5, cost="0.5", days_ago=1)
    record(other, cost="9", days_ago=40)  # outside 30 days
    return campaign, other


def test_the_report_of_every_campaign(two_campaigns):
    text = report()
    lines = text.splitlines()
    assert lines[0].startswith("Usage of all campaigns, last 30 day(s), since ")
    today = datetime.now(UTC).date().isoformat()
    [turns] = [line for line in lines if line.startswith(today)]
    assert turns.split() == [
        today, "The", "Sunken", "Crown", "dm_turn", "fake", "fake-dm",
        "2", "1900", "300", "0", "0.0023",
    ]  # fmt: skip
    assert any("Ashen Road" in line and "0.50" in line for line in lines)
    assert any("tts-1" in line and "400" in line and "0.006" in line for line in lines)
    assert lines[-1].split() == ["total", "4", "1950", "305", "400", "0.5083"]
    assert "9.00" not in text


def test_the_report_of_one_campaign_over_n_days(two_campaigns):
    campaign, _ = two_campaigns
    budget_set(campaign_id=campaign.id, daily_cap_usd="2", hard_stop=False)
    text = report("--campaign", str(campaign.id), "--days", "2")
    assert f"campaign 'The Sunken Crown' ({campaign.id}), last 2 day(s)" in text
    assert "Ashen Road" not in text and "tts-1" not in text
    assert text.splitlines()[-2].split()[-1] == "0.0023"  # the total
    assert "$0.0023 spent of the $2.00 daily cap" in text and "hard stop off" in text


def test_a_report_without_usage(campaign):
    text = report("--campaign", str(campaign.id))
    assert "No usage recorded." in text and "$0.00 spent of the $1.00 daily cap" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--campaign", "not-a-uuid"], "is not a campaign id"),
        (["--campaign", str(uuid.uuid4())], "no campaign with id"),
        (["--days", "0"], "between 1 and"),
        (["--days", "soon"], "not a whole number"),
    ],
)
def test_bad_arguments_are_explained(args, message):
    with pytest.raises(CommandError, match=message):
        report(*args)


def test_the_admin_lists_usage_with_totals(admin_client, two_campaigns):
    response = admin_client.get("/admin/billing/modelusage/")
    assert response.status_code == 200
    page = " ".join(response.content.decode().split())
    assert "Total of the 5 listed calls: $9.5083" in page
    filtered = admin_client.get("/admin/billing/modelusage/?purpose__exact=tts").content
    filtered = " ".join(filtered.decode().split())
    assert "Total of the 1 listed call: $0.006" in filtered
    # Read-only: no adding, no changing.
    assert admin_client.get("/admin/billing/modelusage/add/").status_code == 403


def test_the_admin_sets_a_budget_through_the_service(admin_client, campaign):
    budget_set(campaign_id=campaign.id, hard_stop=True)
    response = admin_client.post(
        f"/admin/billing/campaignbudget/{campaign.id}/change/",
        {"daily_cap_usd": "3.5", "hard_stop": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    status = budget_status(campaign_id=campaign.id)
    assert status.daily_cap_usd == Decimal("3.5") and status.hard_stop is False
    assert admin_client.get("/admin/billing/campaignbudget/").status_code == 200
