"""Several OS processes appending to one campaign on PostgreSQL (service test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from campaigns import services
from campaigns.models import Event, Snapshot

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import os, sys, uuid, django
django.setup()
from campaigns.events import NewEvent
from campaigns.services import events_append
campaign_id, writer, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    payload = {"user_id": str(uuid.uuid4()), "display_name": f"p{writer}-{i}", "role": "player"}
    events_append(campaign_id=campaign_id, events=[NewEvent("player_left", payload)])
"""


def test_eight_processes_append_1600_events_gaplessly(gm):
    campaign = services.campaign_create(name="Crowded", creator=gm)
    start = Snapshot.objects.get(campaign=campaign).version
    settings_dict = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="rpgai.settings",
        DATABASE_URL=(
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}/"
            f"{settings_dict['NAME']}"
        ),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(campaign.id), str(w), "200"], cwd=ROOT, env=env
        )
        for w in range(8)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * 8
    seqs = list(
        Event.objects.filter(campaign=campaign).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, start + 1600 + 1))
    snapshot = Snapshot.objects.get(campaign=campaign)
    assert snapshot.version == start + 1600
    assert snapshot.state == services.fold_events(
        Event.objects.filter(campaign=campaign).order_by("seq")
    )
