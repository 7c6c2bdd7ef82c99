"""Two daphne processes share a room through Redis; a Celery worker runs the turns."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.processes import celery_worker, daphne, free_port
from tests.ws import connect, until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _is_event(kind: str):
    return lambda m: m["type"] == "event" and m["event"]["type"] == kind


async def _play_across(port_a: int, port_b: int, campaign, alice, bob) -> None:
    ws_a = await connect(port_a, campaign.id, alice)
    ws_b = await connect(port_b, campaign.id, bob)
    try:
        action_id = str(uuid.uuid4())
        text = f"I ring the bell ({action_id[:8]})"
        await ws_a.send(
            json.dumps({"type": "client.player_action", "action_id": action_id, "text": text})
        )
        ack = (await until(ws_a, lambda m: m["type"] == "server.ack"))[-1]
        seen_by_b = await until(ws_b, _is_event("dm_narration"))
        events = [m["event"] for m in seen_by_b if m["type"] == "event"]
        [action] = [e for e in events if e["type"] == "player_action"]
        assert action["seq"] == ack["seq"] and action["payload"]["text"] == text
        assert text in events[-1]["payload"]["text"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(set(seqs))
    finally:
        await ws_a.close()
        await ws_b.close()


@pytest.fixture
def players(campaign, join, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    join(alice, "Alice")
    join(bob, "Bob")
    return alice, bob


async def test_an_action_on_one_process_reaches_a_player_on_another(campaign, players):
    port_a, port_b = free_port(), free_port()
    with daphne(port_a, TASKS_IN_PROCESS="1"), daphne(port_b, TASKS_IN_PROCESS="1"):
        await _play_across(port_a, port_b, campaign, *players)


@pytest.mark.celery_worker
async def test_a_celery_worker_runs_the_turn(campaign, players):
    port_a, port_b = free_port(), free_port()
    with (
        daphne(port_a, TASKS_IN_PROCESS="0"),
        daphne(port_b, TASKS_IN_PROCESS="0"),
        celery_worker(TASKS_IN_PROCESS="0"),
    ):
        await _play_across(port_a, port_b, campaign, *players)
