"""A Celery worker killed outright (SIGKILL: the OOM killer, a lost machine) with turns of
two campaigns on it: each comes back, and is narrated exactly once.

A turn task (orchestrator.tasks.run_turn) hands its turn to the worker's turn runner and
is acknowledged once the turn holds its campaign's lock (orchestrator/scheduler.py). So a
worker killed mid-turn leaves two kinds of work behind:

- a task not yet handed over (here: waiting for a slot, TURNS_IN_FLIGHT_MAX=1): its
  message is unacknowledged and Redis has no acknowledgements: it stays in kombu's
  "unacked" set until some worker's periodic sweep finds it older than the visibility
  timeout (CELERY_VISIBILITY_TIMEOUT_SECONDS) and puts it back on its queue, not after
  kombu's default hour. Here the timeout is 8 s (the settings require it above the hard
  time limit, so that limit is 6 s).
- a turn that held its lock (its model call hung): its message is acknowledged; the lock
  it left is found by a turn runner's sweep once older than TURN_LOCK_SECONDS, and the
  turn is asked for again.

A second worker, started once the timeout has passed, must bring both back, once each.

Its own redis-server: kombu's sweep restores every stale message of the Redis database,
and with an 8 s timeout it would steal long-running tasks of other tests on a shared one.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from orchestrator.models import TurnLock
from orchestrator.receivers import turns_deferred
from orchestrator.tasks import run_turn
from rpgai.celery import app
from tests.openai_server import Hang, process_env, serving
from tests.processes import celery_worker, free_port, redis_server

pytestmark = [
    pytest.mark.services,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

VISIBILITY_TIMEOUT = 8
SWEEP_SECONDS = 110  # kombu: every 10 s, scanning on every 10th (the first one scans)
# Longer than the first worker lives with the turn (so that its own sweep leaves the
# turn alone), shorter than the wait before the second worker starts.
TURN_LOCK_SECONDS = 10
ENDINGS = ("dm_narration", "turn_failed")


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def a_table_acting(gm, make_user, name: str) -> tuple[str, Event]:
    """A campaign of `gm` with one player whose action awaits its turn (not asked for)."""
    player = make_user(f"{name}-{uuid.uuid4().hex[:6]}")
    campaign = campaign_create(name=f"{name}'s table", creator=gm)
    campaign_join(invite_code=campaign.invite_code, user=player, display_name=name)
    with turns_deferred():
        action = player_action_submit(
            membership=membership_get(campaign_id=campaign.id, user_id=player.id),
            action_id=uuid.uuid4(),
            text="I pick the lock",
        )
    return str(campaign.id), action


def endings(campaign_id: str, action: Event) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign_id, seq__gt=action.seq, type__in=ENDINGS))


def test_a_killed_workers_turns_come_back_once_by_redelivery_or_by_the_sweep(
    gm, make_user, settings
):
    running, waiting = (a_table_acting(gm, make_user, name) for name in ("alice", "bob"))
    redis_port = free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    with serving(settings) as model, redis_server(redis_port):
        model.script(Hang(60))  # the first model call hangs: the first worker dies in it
        env = {
            "REDIS_URL": broker,
            "TASKS_IN_PROCESS": "0",
            **process_env(model.url),
            "DM_TIMEOUT_SECONDS": "30",
            "DM_MAX_RETRIES": "0",
            "TTS_PROVIDER": "none",
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT),
            "CELERY_TASK_TIME_LIMIT": "6",
            "CELERY_TASK_SOFT_TIME_LIMIT": "5",
            "TURN_LOCK_SECONDS": str(TURN_LOCK_SECONDS),
            "TURN_SWEEP_SECONDS": "1",
        }
        unacked = redis.Redis.from_url(broker)
        # One turn at a time: the second task waits for a slot, its message unacknowledged.
        with celery_worker(TURNS_IN_FLIGHT_MAX="1", **env) as first:
            with app.connection_for_write(broker) as connection:
                run_turn.apply_async(kwargs={"campaign_id": running[0]}, connection=connection)
                assert wait_for(lambda: bool(model.requests), 30), "the first worker never called"
                run_turn.apply_async(kwargs={"campaign_id": waiting[0]}, connection=connection)
            # The first task was acknowledged when its turn took the lock; the second is
            # on the worker, waiting.
            assert wait_for(lambda: unacked.hlen("unacked") == 1, 15), unacked.hlen("unacked")
            first.kill()  # no warm shutdown: nothing is handed back
            first.wait(timeout=15)
        killed_at = time.monotonic()
        lock = TurnLock.objects.get(campaign_id=running[0])
        assert lock.holder.startswith("task:"), lock.holder  # left by the dead worker
        # Nothing comes back while no worker runs (the message is still "unacked").
        time.sleep(VISIBILITY_TIMEOUT + 1)
        assert endings(*running) == [] and endings(*waiting) == []

        with celery_worker(**env):
            # A worker sweeps the unacked set as it starts, then every 10 s, but scans Redis
            # only on every 10th sweep: after the timeout, within about 100 s at worst.
            assert wait_for(
                lambda: bool(endings(*running)) and bool(endings(*waiting)), SWEEP_SECONDS
            ), (endings(*running), endings(*waiting))
            took = time.monotonic() - killed_at
            time.sleep(2)  # a doubled turn would show up now

    for campaign_id, action in (running, waiting):
        assert [e.type for e in endings(campaign_id, action)] == ["dm_narration"]
    # The hung call, the running turn again, the waiting turn: each turn narrated once.
    assert len(model.requests) == 3
    assert not TurnLock.objects.filter(campaign_id__in=[running[0], waiting[0]]).exclude(holder="")
    assert took < VISIBILITY_TIMEOUT + 1 + SWEEP_SECONDS
