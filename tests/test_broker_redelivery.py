"""A Celery worker killed outright (SIGKILL: the OOM killer, a lost machine) mid-turn: its
turn comes back after CELERY_VISIBILITY_TIMEOUT_SECONDS, not after kombu's default hour.

Redis has no acknowledgements: the task (acks_late) stays in kombu's "unacked" set until
some worker's periodic sweep finds it older than the visibility timeout and puts it back
on its queue. Here the timeout is 8 s (the settings require it above the hard time limit,
so that limit is 6 s); a second worker, started once the timeout has passed, must run the
turn to its narration, once.

Its own redis-server: the sweep restores every stale message of the Redis database, and
with an 8 s timeout it would steal long-running tasks of other tests on a shared one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from orchestrator.receivers import turns_deferred
from orchestrator.tasks import run_turn
from rpgai.celery import app
from tests import processes
from tests.openai_server import Hang, serving
from tests.processes import ROOT, free_port, redis_server

pytestmark = [
    pytest.mark.services,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]

VISIBILITY_TIMEOUT = 8
SWEEP_SECONDS = 110  # kombu: every 10 s, scanning on every 10th (the first one scans)


def start_worker(queue: str, **env: str) -> subprocess.Popen:
    # The prefork pool, as in docker-compose.yml (its event loop runs the periodic sweep).
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "rpgai", "worker", "-Q", queue),
            *(
                "-P",
                "prefork",
                "-c",
                "1",
                "--loglevel",
                os.environ.get("TEST_WORKER_LOGLEVEL", "WARNING"),
            ),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=ROOT,
        env=processes.test_env(**env),
        start_new_session=True,  # SIGKILL to the group kills the pool child too
    )


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=15)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_workers_turn_comes_back_after_the_visibility_timeout(
    campaign, make_user, join, settings
):
    alice = make_user("alice")
    join(alice, "Alice")
    redis_port = free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    queue = f"turns-{uuid.uuid4().hex[:8]}"
    with serving(settings) as model, redis_server(redis_port):
        model.script(Hang(60))  # the first model call hangs: the first worker dies in it
        env = {
            "REDIS_URL": broker,
            "TASKS_IN_PROCESS": "0",
            "DM_MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": model.url,
            "OPENAI_API_KEY": "sk-test",
            "DM_MODEL": "test-model",
            "DM_TIMEOUT_SECONDS": "30",
            "DM_MAX_RETRIES": "0",
            "TTS_PROVIDER": "none",
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT),
            "CELERY_TASK_TIME_LIMIT": "6",
            "CELERY_TASK_SOFT_TIME_LIMIT": "5",
        }
        membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
        with turns_deferred():
            action = player_action_submit(
                membership=membership, action_id=uuid.uuid4(), text="I pick the lock"
            )
        first = start_worker(queue, **env)
        try:
            with app.connection_for_write(broker) as connection:
                # No time limits in the message: the first call must hang until the kill.
                run_turn.apply_async(
                    kwargs={"campaign_id": str(campaign.id)},
                    queue=queue,
                    connection=connection,
                    soft_time_limit=None,
                    time_limit=None,
                )
            assert wait_for(lambda: bool(model.requests), 30), "the first worker never called"
        finally:
            kill_group(first)  # worker and pool child, no warm shutdown: nothing handed back
        killed_at = time.monotonic()
        # Nothing comes back before the timeout (the message is still "unacked").
        time.sleep(VISIBILITY_TIMEOUT + 1)
        assert not Event.objects.filter(campaign=campaign, seq__gt=action.seq).exists()

        second = start_worker(queue, **env)
        try:

            def answered() -> bool:
                return Event.objects.filter(
                    campaign=campaign, seq__gt=action.seq, type__in=("dm_narration", "turn_failed")
                ).exists()

            # A worker sweeps the unacked set as it starts, then every 10 s, but scans Redis
            # only on every 10th sweep: after the timeout, within about 100 s at worst.
            assert wait_for(answered, SWEEP_SECONDS), "the turn never came back"
            took = time.monotonic() - killed_at
            time.sleep(2)  # a doubled turn would show up now
        finally:
            kill_group(second, signal.SIGTERM)

    endings = list(
        Event.objects.filter(
            campaign=campaign, seq__gt=action.seq, type__in=("dm_narration", "turn_failed")
        )
    )
    assert [e.type for e in endings] == ["dm_narration"], [(e.seq, e.type) for e in endings]
    assert len(model.requests) == 2  # the hung call, then the redelivered turn's
    assert took < VISIBILITY_TIMEOUT + 1 + SWEEP_SECONDS
