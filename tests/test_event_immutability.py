"""Events cannot be updated or deleted, by the ORM or by raw SQL, on either database."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from campaigns import services
from campaigns.models import Campaign, Event

pytestmark = pytest.mark.django_db


def _raw(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_raw_update_is_refused_by_the_database(campaign):
    event = Event.objects.filter(campaign=campaign).first()
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(
            "UPDATE campaigns_event SET type = %s WHERE id = %s",
            ["hacked", event.id.hex if connection.vendor == "sqlite" else event.id],
        )
    event.refresh_from_db()
    assert event.type == "campaign_created"


def test_raw_delete_is_refused_by_the_database(campaign):
    count = Event.objects.filter(campaign=campaign).count()
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(
            "DELETE FROM campaigns_event WHERE campaign_id = %s",
            [campaign.id.hex if connection.vendor == "sqlite" else campaign.id],
        )
    assert Event.objects.filter(campaign=campaign).count() == count


def test_orm_update_and_delete_are_refused(campaign):
    with pytest.raises(DatabaseError), transaction.atomic():
        Event.objects.filter(campaign=campaign).update(payload={})
    with pytest.raises(DatabaseError), transaction.atomic():
        Event.objects.filter(campaign=campaign).delete()
    event = Event.objects.filter(campaign=campaign).first()
    with pytest.raises(ValueError, match="append-only"):
        event.save()


def test_deleting_a_campaign_purges_its_log_through_the_service(campaign):
    services.campaign_delete(campaign_id=campaign.id)
    assert not Campaign.objects.filter(id=campaign.id).exists()
    assert not Event.objects.filter(campaign_id=campaign.id).exists()


def test_the_purge_window_closes_after_the_service(campaign, gm):
    other = services.campaign_create(name="Kept", creator=gm)
    services.campaign_delete(campaign_id=campaign.id)
    with pytest.raises(DatabaseError), transaction.atomic():
        Event.objects.filter(campaign=other).delete()


def test_triggers_survive_a_migrate(campaign):
    call_command("migrate", verbosity=0)
    with pytest.raises(DatabaseError), transaction.atomic():
        Event.objects.filter(campaign=campaign).update(type="x")
