"""Request ids: one id follows a player action through its events, the DM turn it causes,
the narration, and every log line on the way (HTTP, WebSocket, in-process and Celery tasks)."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from campaigns.models import Event
from rpgai.logging import formatter
from rpgai.tasks import wait_idle
from tests import processes
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)

HEX_ID = re.compile(r"[0-9a-f]{32}")


class LogLines:
    """Every log line of this process, rendered as production renders it (JSON)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter(json=True))

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def with_request_id(self, request_id: str) -> list[dict]:
        return [line for line in self.lines() if line.get("request_id") == request_id]


@pytest.fixture
def logs() -> Iterator[LogLines]:
    capture = LogLines()
    root = logging.getLogger()
    root.addHandler(capture.handler)
    try:
        yield capture
    finally:
        root.removeHandler(capture.handler)


@pytest.fixture(autouse=True)
def _no_speech(settings):
    settings.TTS_PROVIDER = "none"


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def _events_after(campaign_id, seq: int) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign_id, seq__gt=seq).order_by("seq"))


# --- HTTP ------------------------------------------------------------------------------------


def test_the_id_is_taken_from_the_header_and_echoed():
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.42")
    assert response["X-Request-ID"] == "lb-7f3a.42"


def test_an_id_is_made_when_none_or_a_bad_one_is_given():
    client = Client()
    made = client.get("/healthz")["X-Request-ID"]
    assert HEX_ID.fullmatch(made)
    assert client.get("/healthz")["X-Request-ID"] != made
    # Anything that could forge a log line or overflow the column is replaced.
    for bad in ["two words", 'quote"d', "x" * 65, "", "line\\nbreak", "{json}"]:
        echoed = client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert HEX_ID.fullmatch(echoed), bad


def test_errors_and_refusals_carry_the_id_too(campaign):
    client = Client()
    missing = client.get("/no/such/page", HTTP_X_REQUEST_ID="rid-404")
    assert missing.status_code == 404 and missing["X-Request-ID"] == "rid-404"
    refused = client.get(f"/api/campaigns/{campaign.id}/events", HTTP_X_REQUEST_ID="rid-401")
    assert refused.status_code in (401, 403) and refused["X-Request-ID"] == "rid-401"


def test_an_http_action_id_reaches_its_events_the_narration_and_the_log(campaign, alice, logs):
    client = Client()
    client.force_login(alice)
    request_id = f"act-{uuid.uuid4().hex[:12]}"
    before = Event.objects.filter(campaign_id=campaign.id).count()
    response = client.post(
        f"/api/campaigns/{campaign.id}/actions",
        {"action_id": str(uuid.uuid4()), "text": "I light the lantern"},
        content_type="application/json",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 202, response.content
    assert response["X-Request-ID"] == request_id

    # Embedded and outside an event loop, the turn ran before the response returned.
    events = _events_after(campaign.id, before)
    types = [e.type for e in events]
    assert "player_action" in types and types[-1] == "dm_narration"
    action = next(e for e in events if e.type == "player_action")
    narration = events[-1]
    assert action.request_id == request_id
    assert narration.request_id == request_id
    # The turn's model call was billed under the same id.
    from billing.models import ModelUsage

    usage = ModelUsage.objects.filter(campaign_id=campaign.id, request_id=request_id)
    assert usage.exists()

    lines = logs.with_request_id(request_id)
    kinds = {line["event"] for line in lines}
    assert "http.request" in kinds
    assert "turn.finished" in kinds
    [finished] = [line for line in lines if line["event"] == "turn.finished"]
    assert finished["seq"] == narration.seq and finished["outcome"] == "ok"
    # No line of this request carries another id.
    assert all(line.get("request_id") == request_id for line in lines)


# --- WebSocket -----------------------------------------------------------------------------


async def test_a_websocket_action_id_reaches_its_events_the_narration_and_the_log(
    campaign, alice, logs
):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    action_id = str(uuid.uuid4())
    await room.send({"type": "client.player_action", "action_id": action_id, "text": "I knock"})
    messages = await room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    await wait_idle()
    events = events_of(messages)
    [action] = [e for e in events if e["type"] == "player_action"]
    narration = events[-1]
    request_id = action["request_id"]
    assert HEX_ID.fullmatch(request_id)
    assert narration["request_id"] == request_id

    # The turn ran as an in-process task on another thread: the id went with it.
    finished = [line for line in logs.lines() if line["event"] == "turn.finished"]
    assert [line.get("request_id") for line in finished] == [request_id]
    assert finished[0]["seq"] == narration["seq"]

    # The next message gets an id of its own.
    await room.send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "Again"}
    )
    more = await room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    await wait_idle()
    second = next(e for e in events_of(more) if e["type"] == "player_action")["request_id"]
    assert HEX_ID.fullmatch(second) and second != request_id
    await room.close()


# --- Celery ----------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.celery_worker
def test_a_celery_worker_runs_the_turn_under_the_actions_id(campaign, alice, tmp_path: Path):
    log_file = tmp_path / "worker.log"
    with processes.celery_worker(
        log_file=log_file,
        loglevel="INFO",
        TASKS_IN_PROCESS="0",
        LOG_FORMAT="json",
        TTS_PROVIDER="none",
    ):
        client = Client()
        client.force_login(alice)
        request_id = f"celery-{uuid.uuid4().hex[:12]}"
        before = Event.objects.filter(campaign_id=campaign.id).count()
        response = client.post(
            f"/api/campaigns/{campaign.id}/actions",
            {"action_id": str(uuid.uuid4()), "text": "I ring the bell"},
            content_type="application/json",
            HTTP_X_REQUEST_ID=request_id,
        )
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        narration = None
        while narration is None and time.monotonic() < deadline:
            narration = (
                Event.objects.filter(campaign_id=campaign.id, seq__gt=before, type="dm_narration")
                .order_by("seq")
                .first()
            )
            time.sleep(0.2)
        assert narration is not None, log_file.read_text()[-3000:]
        assert narration.request_id == request_id

        # The worker's own log lines for the turn carry the id from the message headers.
        def finished_lines() -> list[dict]:
            found = []
            for raw in log_file.read_text().splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if line.get("event") == "turn.finished":
                    found.append(line)
            return found

        while not finished_lines() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [line.get("request_id") for line in finished_lines()] == [request_id], (
            log_file.read_text()[-3000:]
        )
