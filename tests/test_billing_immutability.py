"""Usage rows are append-only in the database itself: UPDATE and DELETE are refused by
triggers (SQLite and PostgreSQL), not only by the model, and deleting a campaign keeps
what it spent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from billing.models import ModelUsage
from campaigns.services import campaign_delete

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage(campaign):
    return ModelUsage.objects.create(
        campaign_id=campaign.id,
        provider="fake",
        model="fake-dm",
        purpose="dm_turn",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.00042"),
    )


def test_an_update_is_refused_by_the_database(usage):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ModelUsage.objects.filter(id=usage.id).update(cost_usd=Decimal("0"))
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE billing_modelusage SET input_tokens = 0")
    usage.refresh_from_db()
    assert usage.cost_usd == Decimal("0.00042") and usage.input_tokens == 1200


def test_a_delete_is_refused_by_the_database(usage):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ModelUsage.objects.filter(id=usage.id).delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM billing_modelusage")
    assert ModelUsage.objects.filter(id=usage.id).exists()


def test_the_model_refuses_to_save_or_delete_a_stored_row(usage):
    usage.cost_usd = Decimal("0")
    with pytest.raises(ValueError, match="append-only"):
        usage.save()
    with pytest.raises(ValueError, match="append-only"):
        usage.delete()


def test_deleting_a_campaign_keeps_its_usage(campaign, usage):
    campaign_delete(campaign_id=campaign.id)
    assert ModelUsage.objects.get(id=usage.id).campaign_id == campaign.id
