"""Event append throughput on PostgreSQL: `events_append` beside plain psycopg.

Each writer is its own OS process appending one event per transaction to the same
campaign for a fixed time. The baseline does the same work with plain psycopg on the
same tables (lock the snapshot row, insert the event, update the snapshot) so that the
ratio shows what the Django service costs on top of the database's own work.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import uuid

from bench.common import ROOT, fresh_pg_database, median

DURATION = float(os.environ.get("BENCH_APPEND_SECONDS", "4"))
WRITERS = [1, 4, 16]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _wait_for_go(ready: mp.Queue, go) -> float:
    ready.put(1)
    go.wait()
    return time.time()


def _service_writer(url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    _django(url)
    from campaigns.events import NewEvent
    from campaigns.services import events_append

    start = _wait_for_go(ready, go)
    count, end = 0, start + DURATION
    while time.time() < end:
        payload = {"user_id": str(uuid.uuid4()), "display_name": "bench", "role": "player"}
        events_append(campaign_id=campaign_id, events=[NewEvent("player_left", payload)])
        count += 1
    out.put(count)


def _plain_writer(url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    import psycopg

    conn = psycopg.connect(url)
    start = _wait_for_go(ready, go)
    count, end = 0, start + DURATION
    while time.time() < end:
        with conn.transaction():
            version, state = conn.execute(
                "SELECT version, state FROM campaigns_snapshot WHERE campaign_id = %s FOR UPDATE",
                [campaign_id],
            ).fetchone()
            seq = version + 1
            payload = {"user_id": str(uuid.uuid4()), "display_name": "bench", "role": "player"}
            conn.execute(
                "INSERT INTO campaigns_event (id, campaign_id, seq, type, actor_kind, payload,"
                " visibility, request_id, created_at) VALUES (%s, %s, %s, 'player_left', 'system',"
                " %s, '{\"kind\": \"all\"}', '', now())",
                [uuid.uuid4(), campaign_id, seq, json.dumps(payload)],
            )
            conn.execute(
                "UPDATE campaigns_snapshot SET version = %s, state = %s, updated_at = now()"
                " WHERE campaign_id = %s",
                [seq, json.dumps(state), campaign_id],
            )
        count += 1
    conn.close()
    out.put(count)


def _new_campaign(url: str) -> str:
    _django(url)
    from django.contrib.auth import get_user_model

    from campaigns.services import campaign_create

    user, _ = get_user_model().objects.get_or_create(username="bench-gm")
    return str(campaign_create(name=f"bench {uuid.uuid4().hex[:6]}", creator=user).id)


def _measure(url: str, writer, writers: int) -> float:
    campaign_id = _new_campaign(url)
    out: mp.Queue = mp.Queue()
    ready: mp.Queue = mp.Queue()
    go = mp.Event()
    procs = [
        mp.Process(target=writer, args=(url, campaign_id, ready, go, out)) for _ in range(writers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every writer set up and connected before the clock starts
        ready.get()
    go.set()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    _check_gapless(url, campaign_id)
    return total / DURATION


def _check_gapless(url: str, campaign_id: str) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        count, top = conn.execute(
            "SELECT count(*), max(seq) FROM campaigns_event WHERE campaign_id = %s", [campaign_id]
        ).fetchone()
    if count != top:
        raise SystemExit(f"gap in the log of {campaign_id}: {count} events, max seq {top}")


def run() -> dict[str, dict[int, float]]:
    mp.set_start_method("spawn", force=True)
    url = fresh_pg_database()
    results: dict[str, dict[int, float]] = {"events_append": {}, "plain psycopg": {}}
    for writers in WRITERS:
        service = [_measure(url, _service_writer, writers) for _ in range(RUNS)]
        plain = [_measure(url, _plain_writer, writers) for _ in range(RUNS)]
        results["events_append"][writers] = median(service)
        results["plain psycopg"][writers] = median(plain)
        print(
            f"append, {writers:>2} writers: events_append {median(service):8.0f}/s, "
            f"plain psycopg {median(plain):8.0f}/s",
            flush=True,
        )
    return results


if __name__ == "__main__":
    result = run()
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(result))
