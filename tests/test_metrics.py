"""/metrics: Prometheus text that counts turns, events, model calls and open sockets, with
bounded labels, and only for the operator."""

from __future__ import annotations

import uuid

import pytest
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from campaigns.events import NewEvent
from campaigns.services import events_append
from rpgai.metrics import model_call_recorded
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _scrape(client: Client | None = None, **extra: str) -> dict:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return _samples(response.content.decode())


@pytest.fixture(autouse=True)
def _no_speech(settings):
    settings.TTS_PROVIDER = "none"


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def test_a_turn_is_counted(campaign, alice):
    before = _scrape()
    client = Client()
    client.force_login(alice)
    response = client.post(
        f"/api/campaigns/{campaign.id}/actions",
        {"action_id": str(uuid.uuid4()), "text": "I open the door"},
        content_type="application/json",
    )
    assert response.status_code == 202
    after = _scrape()

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("rpgai_events_appended_total", type="dm_narration") == 1
    assert grew("rpgai_events_appended_total", type="player_action") == 1
    assert grew("rpgai_turn_latency_seconds_count", outcome="ok") == 1
    assert grew("rpgai_turn_tokens_count", kind="input") == 1
    assert grew("rpgai_turn_tokens_sum", kind="input") > 0
    assert grew("rpgai_turn_tokens_sum", kind="output") > 0
    model_calls = {
        dict(labels)["model"]: after[(name, labels)] - before.get((name, labels), 0)
        for name, labels in after
        if name == "rpgai_model_calls_total" and dict(labels)["provider"] == "fake"
    }
    assert sum(model_calls.values()) == 1
    assert all(dict(labels).get("outcome") for name, labels in after if "model_calls" in name)


def test_no_campaign_or_user_id_is_a_label(campaign, alice):
    client = Client()
    client.force_login(alice)
    client.post(
        f"/api/campaigns/{campaign.id}/actions",
        {"action_id": str(uuid.uuid4()), "text": "I wave"},
        content_type="application/json",
    )
    text = Client().get("/metrics").content.decode()
    assert str(campaign.id) not in text and str(alice.id) not in text
    assert str(campaign.id).replace("-", "") not in text


def test_model_names_are_bounded():
    """A GM may name any model: past a few distinct names they count as "other"."""
    for n in range(60):
        model_call_recorded(
            provider="openai",
            model=f"gm-typed-model-{n}-{uuid.uuid4().hex[:6]}",
            outcome="model_error",
        )
    models = {
        dict(labels)["model"] for name, labels in _scrape() if name == "rpgai_model_calls_total"
    }
    assert len(models) <= 21
    assert "other" in models


def test_speech_seconds_come_from_audio_events(campaign):
    before = _value(_scrape(), "rpgai_speech_seconds_total")
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_audio_ready",
                {
                    "narration_seq": 1,
                    "url": "/api/audio/x.wav",
                    "voice_id": "en_US-joe-medium",
                    "duration_ms": 2500,
                },
                "system",
            )
        ],
    )
    assert _value(_scrape(), "rpgai_speech_seconds_total") - before == pytest.approx(2.5)


def test_spend_is_exposed():
    from rpgai.metrics import spend_record

    spend_record(usd=0.0125, kind="model", today_usd=1.5)
    samples = _scrape()
    assert _value(samples, "rpgai_spend_today_usd") == 1.5
    assert _value(samples, "rpgai_spend_usd_total", kind="model") >= 0.0125


async def test_the_open_websocket_gauge(campaign, alice, make_user):
    client = AsyncClient()

    async def open_sockets() -> float:
        response = await client.get("/metrics")
        assert response.status_code == 200
        return _value(_samples(response.content.decode()), "rpgai_websocket_connections")

    base = await open_sockets()
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    assert await open_sockets() == base + 1
    # An outsider's refused socket is not counted.
    from channels.db import database_sync_to_async

    outsider = await database_sync_to_async(make_user)("mallory")
    refused = Room(campaign.id, outsider)
    await refused.open()
    assert await refused.closed_with() == 4403
    assert await open_sockets() == base + 1
    await room.close()
    assert await open_sockets() == base


# --- Access -------------------------------------------------------------------------------------


def test_only_allowed_addresses_or_the_token_get_metrics(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "::1"]
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    client = Client()

    outsider = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert outsider.status_code == 403
    assert outsider.json()["code"] == "forbidden"
    assert b"rpgai_" not in outsider.content
    # Loopback is no longer listed: refused too.
    assert client.get("/metrics").status_code == 403
    wrong = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer not-the-token"
    )
    assert wrong.status_code == 403

    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    with_token = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
    )
    assert with_token.status_code == 200 and b"rpgai_events_appended_total" in with_token.content


def test_no_token_configured_means_no_token_works(settings):
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403


def test_metrics_is_read_only():
    assert Client().post("/metrics").status_code == 405


def test_a_bad_allowed_address_stops_startup():
    import subprocess
    import sys

    from tests import processes

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=processes.ROOT,
        env=processes.test_env(METRICS_ALLOWED_IPS="127.0.0.1,not-an-ip"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "METRICS_ALLOWED_IPS" in result.stderr and "not-an-ip" in result.stderr


# --- A Celery worker serves the metrics of the turns it runs -----------------------------------


@pytest.mark.services
@pytest.mark.celery_worker
def test_a_worker_serves_metrics_of_the_turns_it_runs(campaign, alice, tmp_path):
    import time
    import urllib.request

    from tests import processes

    port = processes.free_port()
    log_file = tmp_path / "worker.log"
    with processes.celery_worker(
        log_file=log_file,
        TASKS_IN_PROCESS="0",
        TTS_PROVIDER="none",
        METRICS_WORKER_PORT=str(port),
        METRICS_WORKER_ADDR="127.0.0.1",
    ) as worker:

        def worker_samples() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return _samples(r.read().decode())
            except OSError:
                return None

        deadline = time.monotonic() + 30
        while worker_samples() is None:
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            assert worker.poll() is None, log_file.read_text()[-3000:]
            time.sleep(0.2)

        client = Client()
        client.force_login(alice)
        response = client.post(
            f"/api/campaigns/{campaign.id}/actions",
            {"action_id": str(uuid.uuid4()), "text": "I ring the bell"},
            content_type="application/json",
        )
        assert response.status_code == 202
        while True:
            samples = worker_samples() or {}
            # The append counter moves before the broadcast and the signal that records
            # the turn: wait for the turn's own figures.
            if _value(samples, "rpgai_turn_latency_seconds_count", outcome="ok") >= 1:
                break
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.2)
        assert _value(samples, "rpgai_events_appended_total", type="dm_narration") == 1
        assert _value(samples, "rpgai_turn_latency_seconds_count", outcome="ok") == 1
        assert _value(samples, "rpgai_turn_tokens_count", kind="output") == 1
