"""Event append throughput on PostgreSQL: `events_append` beside plain psycopg.

Each writer is its own OS process appending one event per transaction to the same
campaign for a fixed time. The baseline does the same work with plain psycopg on the
same tables (lock the snapshot row, insert the event, update the snapshot) so that the
ratio shows what the Django service costs on top of the database's own work.

`events_append` runs twice: as `make bench` configures a process (the in-memory channel
layer: each append's broadcast goes through `rpgai.tasks.call_async`), and in a process
with no channel layer, where everything runs but the room broadcast (the metrics and
the `events_committed` listeners too). The difference is the broadcast's cost.

Every writer makes one append before the clock starts (connection, imports, caches).
The Django processes run with DEBUG off, as in production.

With BENCH_APPEND_BEFORE=<another checkout> (a `git worktree` of the last commit, say),
that checkout's `events_append` runs as a series too, interleaved with the others in the
same run and on the same database: a before/after pair that the machine's load skews alike.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import sys
import time
import uuid

from bench.common import ROOT, fresh_pg_database, median

DURATION = float(os.environ.get("BENCH_APPEND_SECONDS", "4"))
WRITERS = [1, 4, 16]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BEFORE = os.environ.get("BENCH_APPEND_BEFORE", "")


def _django(url: str, root: str = str(ROOT)) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    # As a production process runs: DEBUG off, so no query log in each process (the
    # settings then want real secrets; throwaway ones do for a benchmark).
    os.environ["DEBUG"] = "0"
    for name in ("SECRET_KEY", "JWT_SIGNING_KEY", "INTERNAL_TOOLS_SECRET"):
        os.environ[name] = secrets.token_urlsafe(50)
    sys.path.insert(0, root)
    import django

    django.setup()


def _wait_for_go(ready: mp.Queue, go) -> float:
    ready.put(1)
    go.wait()
    return time.time()


def _service_writer(url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    _django(url)
    _service_appends(campaign_id, ready, go, out)


def _service_writer_no_layer(
    url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue
) -> None:
    _django(url)
    from django.conf import settings

    # Before the first `get_channel_layer()`: the process has no layer, so the
    # broadcast returns at once, as in a process configured without one.
    settings.CHANNEL_LAYERS = {}
    _service_appends(campaign_id, ready, go, out)


def _service_writer_before(url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    # Nothing of the project is imported yet in this (spawned) process: first on the
    # path, the other checkout provides all of it. Started in it too: Celery's Django
    # fixup puts the working directory first on the path when the app loads.
    os.chdir(BEFORE)
    _django(url, root=BEFORE)
    import campaigns

    if not campaigns.__file__.startswith(os.path.abspath(BEFORE)):
        raise SystemExit(f"campaigns came from {campaigns.__file__}, not from {BEFORE}")
    _service_appends(campaign_id, ready, go, out)


def _service_appends(campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    from campaigns.events import NewEvent
    from campaigns.services import events_append

    def append() -> None:
        payload = {"user_id": str(uuid.uuid4()), "display_name": "bench", "role": "player"}
        events_append(campaign_id=campaign_id, events=[NewEvent("player_left", payload)])

    append()
    start = _wait_for_go(ready, go)
    count, end = 0, start + DURATION
    while time.time() < end:
        append()
        count += 1
    out.put(count)


def _plain_writer(url: str, campaign_id: str, ready: mp.Queue, go, out: mp.Queue) -> None:
    import psycopg

    conn = psycopg.connect(url)
    _plain_append(conn, campaign_id)
    start = _wait_for_go(ready, go)
    count, end = 0, start + DURATION
    while time.time() < end:
        _plain_append(conn, campaign_id)
        count += 1
    conn.close()
    out.put(count)


def _plain_append(conn, campaign_id: str) -> None:
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


SERIES = {
    "events_append": _service_writer,
    "events_append, no channel layer": _service_writer_no_layer,
    "plain psycopg": _plain_writer,
}
if BEFORE:
    SERIES[f"events_append at {BEFORE}"] = _service_writer_before


def run() -> dict[str, dict[int, float]]:
    mp.set_start_method("spawn", force=True)
    url = fresh_pg_database()
    rates: dict[str, dict[int, list[float]]] = {name: {} for name in SERIES}
    for writers in WRITERS:
        # Interleaved, run after run: a burst of other work on the machine then skews
        # every series alike instead of one of them.
        for _ in range(RUNS):
            for name, writer in SERIES.items():
                rates[name].setdefault(writers, []).append(_measure(url, writer, writers))
        ours, bare, plain, *before = (median(rates[name][writers]) for name in SERIES)
        print(
            f"append, {writers:>2} writers: events_append {ours:6.0f}/s ({ours / plain:.2f}x), "
            f"no channel layer {bare:6.0f}/s ({bare / plain:.2f}x), plain psycopg {plain:6.0f}/s"
            + "".join(f", before {b:6.0f}/s ({b / plain:.2f}x)" for b in before),
            flush=True,
        )
    return {
        name: {writers: median(runs) for writers, runs in by_writers.items()}
        for name, by_writers in rates.items()
    }


if __name__ == "__main__":
    result = run()
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(result))
