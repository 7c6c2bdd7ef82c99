"""A worker killed outright after its turn rolled (CONTRACTS §7 "Rolls are facts"): the turn
taken up again by another worker narrates with the same rolls, under the same turn_id, and
appends no new `roll_result`."""

from __future__ import annotations

import time
import uuid

import pytest

from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from orchestrator.receivers import turns_deferred
from orchestrator.tasks import run_turn
from rpgai.celery import app
from tests.openai_server import Answer, Hang, process_env, serving
from tests.processes import celery_worker, free_port, redis_server

pytestmark = [
    pytest.mark.services,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

ROLL_FIRST = {
    "narration": "",
    "tool_calls": [
        {"name": "roll", "args": {"formula": "1d20+5", "reason": "Alice's attack", "dc": 14}}
    ],
    "options": [],
}
NARRATION = "The goblin reels back from the blow."
NARRATE = {"narration": NARRATION, "tool_calls": [], "options": ["Press on", "Fall back"]}


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_turn_whose_worker_died_after_rolling_narrates_with_the_same_rolls(
    gm, make_user, settings
):
    player = make_user(f"alice-{uuid.uuid4().hex[:6]}")
    campaign = campaign_create(name="Redelivered dice", creator=gm)
    campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
    with turns_deferred():
        action = player_action_submit(
            membership=membership_get(campaign_id=campaign.id, user_id=player.id),
            action_id=uuid.uuid4(),
            text="I attack the goblin",
        )

    def of(kind: str) -> list[Event]:
        return list(Event.objects.filter(campaign=campaign, seq__gt=action.seq, type=kind))

    redis_port = free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    with serving(settings) as model, redis_server(redis_port):
        # The rolling step answers; the narrating step hangs: the worker dies in it.
        model.script(Answer(ROLL_FIRST), Hang(60))
        env = {
            "REDIS_URL": broker,
            "TASKS_IN_PROCESS": "0",
            **process_env(model.url),
            "DM_TIMEOUT_SECONDS": "30",
            "DM_MAX_RETRIES": "0",
            "TTS_PROVIDER": "none",
            "TURN_LOCK_SECONDS": "4",
            "TURN_SWEEP_SECONDS": "1",
        }
        with celery_worker(**env) as first:
            with app.connection_for_write(broker) as connection:
                run_turn.apply_async(
                    kwargs={"campaign_id": str(campaign.id)}, connection=connection
                )
            assert wait_for(lambda: len(model.requests) >= 2, 30), "the turn never narrated"
            [rolled] = of("roll_result")
            first.kill()  # mid-call, after the rolls: no warm shutdown
            first.wait(timeout=15)
        assert of("dm_narration") == [] and of("turn_failed") == []

        model.script(Answer(NARRATE))
        with celery_worker(**env):  # its sweep finds the dead worker's lock
            assert wait_for(lambda: bool(of("dm_narration")), 60), "the turn never came back"
            time.sleep(1)  # a doubled turn would show up now

    assert [e.seq for e in of("roll_result")] == [rolled.seq]  # no new roll
    [narration] = of("dm_narration")
    assert narration.payload["text"] == NARRATION
    assert narration.payload["turn_id"] == rolled.payload["turn_id"]
    assert of("turn_failed") == []
    # The narrating call of the turn taken up again was given the logged roll's result.
    last = model.requests[-1].body["messages"]
    assert f'"total":{rolled.payload["total"]}' in last[-1]["content"].replace(" ", "")
