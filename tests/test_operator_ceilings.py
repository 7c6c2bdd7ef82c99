"""The operator's money: anyone who signs up can run a campaign on the operator's key, so
the operator sets the ceilings. A GM may set a daily cap up to BILLING_MAX_DAILY_CAP_USD
(staff in /admin/ may go above it); every user has a daily allowance across campaigns by
default (BILLING_USER_DAILY_CAP_USD); a GM picks the DM's model among DM_MODEL and
DM_MODELS_ALLOWED only."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse

from billing import selectors
from billing.checks import billing_settings_check
from billing.models import ModelUsage
from billing.services import budget_set
from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from orchestrator.models import DMSettings
from orchestrator.services import dm_settings_set, turn_run
from rpgai.errors import DomainError
from tests.reads import api_as

pytestmark = pytest.mark.django_db

TOO_HIGH = "The most a campaign may spend a day on this server is $10.00."


def put_budget(user: Any, campaign: Any, body: dict) -> Any:
    return api_as(user).put(f"/api/campaigns/{campaign.id}/budget", body, format="json")


# --- The campaign's daily cap ------------------------------------------------------------------


def test_a_gm_cannot_raise_the_cap_past_the_servers_ceiling(campaign, gm, settings):
    settings.BILLING_MAX_DAILY_CAP_USD = "10.00"
    refused = put_budget(gm, campaign, {"daily_cap_usd": "100000"})
    assert refused.status_code == 400
    assert refused.json() == {"detail": TOO_HIGH, "code": "cap_too_high"}
    assert put_budget(gm, campaign, {"daily_cap_usd": "10.0001"}).status_code == 400
    assert selectors.budget_status(campaign_id=campaign.id).daily_cap_usd == Decimal("1.00")

    allowed = put_budget(gm, campaign, {"daily_cap_usd": "10.00", "hard_stop": False})
    assert allowed.status_code == 200
    assert allowed.json()["daily_cap_usd"] == "10.00" and allowed.json()["hard_stop"] is False


def test_a_cap_the_operator_set_higher_may_be_kept_or_lowered_not_raised(campaign, gm):
    budget_set(campaign_id=campaign.id, daily_cap_usd="50", by_operator=True)
    assert put_budget(gm, campaign, {"hard_stop": False}).status_code == 200  # cap untouched
    assert put_budget(gm, campaign, {"daily_cap_usd": "50"}).status_code == 200
    assert put_budget(gm, campaign, {"daily_cap_usd": "60"}).json()["code"] == "cap_too_high"
    assert put_budget(gm, campaign, {"daily_cap_usd": "20"}).json()["daily_cap_usd"] == "20.00"
    assert put_budget(gm, campaign, {"daily_cap_usd": "30"}).json()["code"] == "cap_too_high"


def test_staff_in_the_admin_may_set_a_cap_above_the_ceiling(admin_client, campaign):
    budget_set(campaign_id=campaign.id, daily_cap_usd="2")
    url = reverse("admin:billing_campaignbudget_change", args=[campaign.id])
    response = admin_client.post(url, {"daily_cap_usd": "250", "hard_stop": "on"})
    assert response.status_code == 302, response.content[:2000]
    assert selectors.budget_status(campaign_id=campaign.id).daily_cap_usd == Decimal("250")


def test_a_default_cap_above_the_ceiling_stops_the_server_at_its_checks(settings):
    assert billing_settings_check() == []
    settings.BILLING_DEFAULT_DAILY_CAP_USD = "25.00"
    settings.BILLING_MAX_DAILY_CAP_USD = "10.00"
    assert [e.id for e in billing_settings_check()] == ["billing.E005"]
    with pytest.raises(SystemCheckError, match=r"billing\.E005"):
        call_command("check")
    settings.BILLING_MAX_DAILY_CAP_USD = "plenty"
    assert [e.id for e in billing_settings_check()] == ["billing.E002"]


# --- Every user's daily allowance ----------------------------------------------------------------


def test_every_user_has_a_daily_allowance_by_default(campaign, join, make_user, settings):
    """No UserBudget row and no setting changed: the default allowance holds."""
    assert settings.BILLING_USER_DAILY_CAP_USD == "5.00"
    budget_set(campaign_id=campaign.id, daily_cap_usd="10.00")
    alice = make_user("alice")
    join(alice, "Alice")
    assert selectors.user_cap(user_id=alice.id) == Decimal("5.00")

    ModelUsage.objects.create(
        campaign_id=uuid.uuid4(),  # spent at another table, since deleted
        user_id=alice.id,
        provider="fake",
        model="fake",
        purpose="dm_turn",
        cost_usd=Decimal("5.00"),
    )
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    action = player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I wait")
    outcome = turn_run(campaign_id=campaign.id)
    assert outcome is not None and outcome.failed_code == "budget_exceeded"
    failed, refusal = outcome.events
    assert failed.type == "turn_failed" and failed.payload["through_seq"] == action.seq
    assert refusal.payload["scope"] == "user" and refusal.payload["cap_usd"] == "5.00"


# --- The DM's model ------------------------------------------------------------------------------


def test_a_gm_chooses_only_among_the_models_the_operator_allows(campaign, settings):
    settings.DM_MODEL = "gpt-4o-mini"
    settings.DM_MODELS_ALLOWED = []
    with pytest.raises(DomainError) as refused:
        dm_settings_set(campaign_id=campaign.id, provider="openai", model="gpt-4.5-preview")
    assert refused.value.code == "model_not_allowed"
    assert refused.value.detail == (
        "That model is not offered on this server. Choose one of: gpt-4o-mini."
    )
    assert not DMSettings.objects.filter(campaign_id=campaign.id).exists()
    # DM_MODEL (or blank, which means it) is always allowed.
    assert dm_settings_set(campaign_id=campaign.id, model="gpt-4o-mini").model == "gpt-4o-mini"
    assert dm_settings_set(campaign_id=campaign.id, model="").model == ""

    settings.DM_MODELS_ALLOWED = ["gpt-4o", "llama3.1:8b"]
    assert dm_settings_set(campaign_id=campaign.id, model=" gpt-4o ").model == "gpt-4o"
    with pytest.raises(DomainError, match=r"gpt-4o-mini, gpt-4o, llama3\.1:8b\.$"):
        dm_settings_set(campaign_id=campaign.id, model="gpt-4.5-preview")


def test_the_admin_offers_the_allowed_models_as_a_choice(admin_client, campaign, settings):
    settings.DM_MODEL = "gpt-4o-mini"
    settings.DM_MODELS_ALLOWED = ["llama3.1:8b"]
    url = reverse("admin:orchestrator_dmsettings_add")
    page = admin_client.get(url).content.decode()
    assert '<select name="model"' in page
    assert '<option value="llama3.1:8b">' in page and "Default (gpt-4o-mini)" in page

    refused = admin_client.post(
        url, {"campaign": str(campaign.id), "provider": "openai", "model": "gpt-4.5-preview"}
    )
    assert refused.status_code == 200  # the form shows the error
    assert not DMSettings.objects.filter(campaign_id=campaign.id).exists()

    saved = admin_client.post(
        url, {"campaign": str(campaign.id), "provider": "openai", "model": "llama3.1:8b"}
    )
    assert saved.status_code == 302, saved.content[:2000]
    assert DMSettings.objects.get(campaign_id=campaign.id).model == "llama3.1:8b"


def test_a_model_chosen_before_the_operator_narrowed_the_list_is_not_used(campaign, settings):
    from orchestrator.selectors import dm_config_get

    settings.DM_MODEL = "gpt-4o-mini"
    settings.DM_MODELS_ALLOWED = ["gpt-4o"]
    dm_settings_set(campaign_id=campaign.id, provider="openai", model="gpt-4o")
    assert dm_config_get(campaign_id=campaign.id).model == "gpt-4o"
    settings.DM_MODELS_ALLOWED = []
    assert dm_config_get(campaign_id=campaign.id).model == ""  # DM_MODEL, the operator's own
