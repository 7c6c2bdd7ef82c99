"""A turn waiting on its model holds no worker (issue 17): one process keeps a hundred
turns in flight at once.

A hundred campaigns, one player each, all acting at the same moment; the DM model is an
OpenAI-compatible stand-in over real HTTP, in a process of its own, that answers every
request 2 s after it came, streamed, all in parallel, and counts the requests in flight
(tests.openai_server.ConcurrentServer). Both ways turns run:

- with a broker: ONE Celery worker process, started as `make worker` starts it
  (tests.processes.celery_worker), on PostgreSQL and Redis (a service test). It must
  hold many requests in flight at once (WORKER_AT_ONCE), on a few PostgreSQL connections: the
  turns' database work runs on DB_THREADS threads whatever the number of turns (and each
  of the worker's Celery threads may hold one while it runs a task of the default
  queue). PostgreSQL allows 100 connections, not one per turn.
- embedded (`make run`): the turns run on the server's own event loop, here the test's.
  At least EMBEDDED_AT_ONCE in flight, and no thread per turn.

The issue's goal is 95 of 100 in flight. Every turn first spends about 17-25 ms of CPU
(mostly ORM code: claim the lock, read the context, build the prompt, reserve the
budget) before its model call, and one process's turns share one GIL: a hundred of them
reach the model over 1.7-2.5 s, against the model's 2 s. Measured on 2 cores: embedded
89-100 in flight when the machine is quiet, 50-60 under load; one worker 35-43. On the
slower machine of session 6 (its whole suite ran 2.5 times as long), with the turn grown
since (two-step turns, setup, X-card, withheld names): embedded 50-53, one worker 14-17.
The bounds below are set under those figures, and well above what the design before held:
6 (embedded: asgiref's thread pool) and 2-8 (a worker's pool processes or threads), which
is what this test guards. Throughput itself is `make bench`'s, and the issue's 95 is not
met (issue 17 stays open on it).

The actions are stored first, and then every turn is asked for at once (what a hundred
commits at the same moment do): the figure is turns in flight, not how fast a hundred
actions can be stored. The tight figures (latency against the model's) are
`make bench`'s (bench/turns_concurrency.py); the bounds here are loose.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection

from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from llm.openai_adapter import output_shapes_forget
from orchestrator import scheduler
from orchestrator.receivers import turns_deferred
from rpgai.tasks import wait_idle
from tests.openai_server import Answer, ConcurrentServer
from tests.processes import celery_worker

TABLES = 100
# Requests the model must see in flight at the same moment (see the docstring).
EMBEDDED_AT_ONCE = 40
WORKER_AT_ONCE = 12
MODEL_SECONDS = 2.0
ALL_ANSWERED_WITHIN = 60.0  # seconds; loose (`make bench` has the tight figures)
MODEL = "test-model"
WORKER_THREADS = 8  # the Celery threads of the turns worker (Makefile, tests.processes)
# A valid DM answer (orchestrator/schema.py) asking for no tool: one model step a turn.
DM_ANSWER: dict[str, Any] = {
    "narration": "The door grinds open; beyond it a stair winds down into the dark.",
    "tool_calls": [],
    "options": ["Go down the stair", "Listen at the dark", "Light another torch"],
}
ENDINGS = ("dm_narration", "turn_failed")
# Every turn paid for and none refused: this is about turns in flight, not caps or
# rate limits (tests/test_billing_*.py, tests/test_model_call.py).
NO_LIMITS = {
    "BILLING_DEFAULT_DAILY_CAP_USD": "1000",
    "BILLING_MAX_DAILY_CAP_USD": "1000",
    "BILLING_USER_DAILY_CAP_USD": "1000",
    "MODEL_CALLS_PER_USER_PER_MINUTE": "100000",
    "MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE": "100000",
}


def tables_acting(gm: Any, count: int) -> list[str]:
    """`count` campaigns of `gm`, one player each, each player's action stored and its
    turn not yet asked for; their ids."""
    users = get_user_model().objects
    campaign_ids = []
    with turns_deferred():
        for n in range(count):
            player = users.create_user(f"player-{n}-{uuid.uuid4().hex[:6]}", password="pw")
            campaign = campaign_create(name=f"Table {n}", creator=gm)
            campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
            player_action_submit(
                membership=membership_get(campaign_id=campaign.id, user_id=player.id),
                action_id=uuid.uuid4(),
                text="I push the iron door open.",
            )
            campaign_ids.append(str(campaign.id))
    return campaign_ids


def endings_of(campaign_ids: list[str]) -> list[Event]:
    return list(Event.objects.filter(campaign_id__in=campaign_ids, type__in=ENDINGS))


def assert_each_narrated_once_by_the_model(campaign_ids: list[str]) -> None:
    endings = endings_of(campaign_ids)
    by_campaign: dict[str, list[Event]] = {}
    for event in endings:
        by_campaign.setdefault(str(event.campaign_id), []).append(event)
    unanswered = [c for c in campaign_ids if c not in by_campaign]
    assert not unanswered, f"{len(unanswered)} of {len(campaign_ids)} campaigns got no answer"
    twice = {c: len(e) for c, e in by_campaign.items() if len(e) > 1}
    assert not twice, f"answered more than once: {twice}"
    wrong = [
        (e.type, e.payload.get("code") or e.payload.get("text", "")[:60])
        for e in endings
        if e.type != "dm_narration"
        or e.payload["fallback"]
        or e.payload["text"] != DM_ANSWER["narration"]
    ]
    assert not wrong, f"{len(wrong)} turns did not narrate the model's answer: {wrong[:5]}"


def spread(stats: dict[str, Any]) -> float:
    """Seconds from the model's first request to its last."""
    arrivals = stats["arrivals"]
    return max(arrivals) - min(arrivals) if arrivals else 0.0


def model_settings(settings: Any, url: str) -> None:
    """This process's settings: the stand-in as the DM model, no limits."""
    settings.DM_MODEL_PROVIDER = "openai"
    settings.DM_MODEL = MODEL
    settings.OPENAI_BASE_URL = url
    settings.OPENAI_API_KEY = "sk-test"
    for name, value in NO_LIMITS.items():
        setattr(settings, name, int(value) if name.startswith("MODEL_CALLS") else value)
    output_shapes_forget(base_url=url, model=MODEL)


# --- One worker process ------------------------------------------------------------------------


def worker_connections(app_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name]
        )
        return cursor.fetchone()[0]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_answered(campaign_ids: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(endings_of(campaign_ids)) >= len(campaign_ids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.services
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_one_worker_process_holds_a_hundred_turns_in_flight_on_a_few_connections(
    gm, settings, tmp_path: Path
):
    warmup, *tables = tables_acting(gm, 1 + TABLES)
    app_name = f"rpgai-test-worker-{uuid.uuid4().hex[:8]}"
    log_file = tmp_path / "worker.log"
    model = ConcurrentServer(seconds=MODEL_SECONDS, answer=Answer(DM_ANSWER), own_process=True)
    with model:
        model_settings(settings, model.url)
        env = {
            **NO_LIMITS,
            "TASKS_IN_PROCESS": "0",
            "DM_MODEL_PROVIDER": "openai",
            "DM_MODEL": MODEL,
            "OPENAI_BASE_URL": model.url,
            "OPENAI_API_KEY": "sk-test",
            "TTS_PROVIDER": "none",
            "DB_THREADS": str(settings.DB_THREADS),
            "PGAPPNAME": app_name,  # libpq: the worker's connections, and only them
        }
        try:
            with celery_worker(log_file=log_file, **env) as worker:
                # The first turn of a process loads what turns need: not measured.
                scheduler.turn_request(campaign_id=warmup)
                assert wait_answered([warmup], 60), "the worker never answered the first turn"
                model.reset()

                started = time.monotonic()
                for campaign_id in tables:  # everyone acts at the same moment
                    scheduler.turn_request(campaign_id=campaign_id)
                connections, at_peak = 0, []
                while time.monotonic() < started + ALL_ANSWERED_WITHIN:
                    in_flight = model.in_flight
                    count = worker_connections(app_name)
                    connections = max(connections, count)
                    if in_flight >= WORKER_AT_ONCE:
                        at_peak.append(count)
                    if len(endings_of(tables)) >= TABLES:
                        break
                    time.sleep(0.05)
                took = time.monotonic() - started
                processes = [worker.pid, *children_of(worker.pid)]
                time.sleep(1)  # a doubled turn would show up now
                stats = model.stats()
        finally:
            print(log_file.read_text(errors="replace")[-3000:])

    print(
        f"{TABLES} turns, one worker: peak {stats['peak']} in flight, all answered in "
        f"{took:.1f} s, the model's requests came over {spread(stats):.1f} s; the worker's "
        f"connections at most {connections} ({max(at_peak, default=0)} at the peak)"
    )
    assert stats["peak"] >= WORKER_AT_ONCE, f"the model saw at most {stats['peak']} at once"
    assert len(processes) == 1, f"the turns ran in several processes: {processes}"
    assert_each_narrated_once_by_the_model(tables)
    assert took < ALL_ANSWERED_WITHIN
    # The turns' database work runs on DB_THREADS threads, however many turns there
    # are; each of the worker's Celery threads may hold one more while it runs a task
    # of the default queue (the memory tasks after a turn). Not one per turn.
    bound = settings.DB_THREADS + WORKER_THREADS
    assert at_peak, "no sample was taken while the peak was on"
    assert max(at_peak) <= bound, f"{max(at_peak)} connections at the peak (bound {bound})"
    assert connections <= bound, f"{connections} connections during the burst (bound {bound})"


# --- Embedded: the server's own event loop -----------------------------------------------------


async def answered_within(campaign_ids: list[str], timeout: float) -> bool:
    for _ in range(int(timeout / 0.1)):
        if len(await sync_to_async(endings_of)(campaign_ids)) >= len(campaign_ids):
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
async def test_the_server_process_holds_a_hundred_turns_in_flight_on_a_few_threads(gm, settings):
    warmup, *tables = await sync_to_async(tables_acting)(gm, 1 + TABLES)
    # The stand-in in a process of its own: neither its thread nor its share of the
    # GIL counts against this one.
    model = ConcurrentServer(seconds=MODEL_SECONDS, answer=Answer(DM_ANSWER), own_process=True)
    with model:
        model_settings(settings, model.url)
        scheduler.turn_request(campaign_id=warmup)  # loads what turns need: not measured
        assert await answered_within([warmup], 60), "the first turn was never answered"
        await wait_idle(timeout=30)
        await asyncio.to_thread(model.reset)
        threads_before = threading.active_count()
        threads = threads_before
        done = asyncio.Event()

        async def count_threads() -> None:
            nonlocal threads
            while not done.is_set():
                threads = max(threads, threading.active_count())
                await asyncio.sleep(0.01)

        counting = asyncio.ensure_future(count_threads())
        started = time.monotonic()
        # Called on the loop, the scheduler runs each turn as a task of this loop.
        for campaign_id in tables:
            scheduler.turn_request(campaign_id=campaign_id)
        try:
            await answered_within(tables, ALL_ANSWERED_WITHIN)
            took = time.monotonic() - started
            await wait_idle(timeout=30)  # each turn's last look at the log
        finally:
            done.set()
            await counting
        stats = await asyncio.to_thread(model.stats)

    print(
        f"{TABLES} turns, embedded: peak {stats['peak']} in flight, all answered in "
        f"{took:.1f} s, the model's requests came over {spread(stats):.1f} s; "
        f"threads {threads_before} before, at most {threads}"
    )
    assert stats["peak"] >= EMBEDDED_AT_ONCE, f"the model saw at most {stats['peak']} at once"
    await sync_to_async(assert_each_narrated_once_by_the_model)(tables)
    assert took < ALL_ANSWERED_WITHIN
    # No thread per turn: at most the database work's (DB_THREADS) and those of asyncio's
    # default executor (its name lookups, memory tasks after the turns).
    default_executor = min(32, (os.cpu_count() or 1) + 4)
    assert threads - threads_before <= settings.DB_THREADS + default_executor, (
        f"{threads - threads_before} threads more than before the turns"
    )
