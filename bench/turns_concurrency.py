"""Concurrent DM turns against a model stand-in that answers every call in 2 s.

10, 50 and 100 campaigns (BENCH_CONCURRENT_CAMPAIGNS), one player each on their own
WebSocket, all act at the same moment; the figure is action to `dm_narration`. Two
setups, each in a process of its own (`--setup embedded|worker`):

- embedded, as `make run` serves: one daphne, SQLite, the in-memory layer, turns run
  inside the server;
- one worker: PostgreSQL + Redis, one daphne, and the worker started by `make worker`
  itself (bench.common.start_make_worker).

The DM model is tests.openai_server.ConcurrentServer in a process of its own (so it competes with
nobody for a GIL): an OpenAI-compatible server that streams a valid DM answer over
BENCH_MODEL_SECONDS (2 s), every request in parallel, and counts the requests in
flight. Its floor is measured in the same run: a bare asyncio client making the same
number of concurrent requests straight to it. Worker memory is the summed RSS of the
process(es) that run turns (the daphne when embedded, every process `make worker`
started otherwise), sampled through the burst: its peak, and per turn in flight
(peak - idle) / the peak of requests in flight at the stand-in.

    python -m bench.turns_concurrency            # both setups, a markdown table
    python -m bench.turns_concurrency --setup worker --json
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    PG_ADMIN_URL,
    PG_BENCH_DB,
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    percentile,
    process_tree,
    rss_kib,
    start_daphne,
    start_make_worker,
    stop_all,
    stop_make_worker,
    wait_port,
)

COUNTS = [int(c) for c in os.environ.get("BENCH_CONCURRENT_CAMPAIGNS", "10,50,100").split(",")]
MODEL_SECONDS = float(os.environ.get("BENCH_MODEL_SECONDS", "2"))
# Before any burst: a few turns at once, so that every worker process has loaded what a
# turn needs (the first turn of a process is not what this measures).
WARMUP_CAMPAIGNS = int(os.environ.get("BENCH_CONCURRENT_WARMUP", "4"))
TURN_TIMEOUT_SECONDS = float(os.environ.get("BENCH_CONCURRENT_TIMEOUT", "300"))
SETUPS = {
    "embedded": "embedded (`make run`: SQLite, in-memory layer)",
    "worker": "one worker (`make worker`, PostgreSQL + Redis)",
}
STANDIN_MODEL = "bench-standin"
# A valid DM answer (orchestrator/schema.py) asking for no tool: one model step per turn.
DM_ANSWER: dict[str, Any] = {
    "narration": (
        "The torches gutter as the door grinds open; beyond it, a stair winds down into "
        "the dark, and somewhere below water drips on stone."
    ),
    "tool_calls": [],
    "options": ["Go down the stair", "Listen at the dark", "Light another torch"],
}
CHUNK_CHARS = 12  # characters of the answer per streamed delta (a few tokens)


# --- The model stand-in: tests.openai_server.ConcurrentServer, in a process of its own --------


def start_stand_in() -> Any:
    from tests.openai_server import Answer, ConcurrentServer

    return ConcurrentServer(
        seconds=MODEL_SECONDS, answer=Answer(DM_ANSWER, chunk_chars=CHUNK_CHARS), own_process=True
    ).start()


def _stand_in_port(stand_in: Any) -> int:
    return int(stand_in.url.rsplit(":", 1)[1].split("/")[0])


async def _http(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    """One bare HTTP/1.1 request; the whole answer (the server closes the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = json.dumps(body or {}).encode()
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
        + raw
    )
    try:
        return await reader.read()
    finally:
        writer.close()


async def _floor(stand_in: Any, n: int) -> dict[str, float]:
    """`n` streamed chat completions at once straight to the stand-in: its own latency."""
    body = {
        "model": STANDIN_MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": "You are the DM. Answer in JSON."},
            {"role": "user", "content": "I open the door."},
        ],
    }

    async def one() -> float:
        sent = time.perf_counter()
        answer = await _http(_stand_in_port(stand_in), "POST", "/v1/chat/completions", body)
        if b"data: [DONE]" not in answer:
            raise SystemExit("the stand-in's stream did not end with [DONE]")
        return time.perf_counter() - sent

    stand_in.reset()
    latencies = await asyncio.gather(*(one() for _ in range(n)))
    stats = stand_in.stats()
    return {
        "p50": percentile(latencies, 50),
        "max": max(latencies),
        "in_flight": stats["peak"],
    }


# --- Campaigns and players ------------------------------------------------------------------


def _campaigns(n: int) -> list[tuple[str, str]]:
    """`n` campaigns, each with a player; (campaign id, the player's session key)."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connections

    from campaigns.services import campaign_create, campaign_join

    users = get_user_model().objects
    out = []
    for _ in range(n):
        gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:8]}")
        player = users.create_user(f"bench-p-{uuid.uuid4().hex[:8]}")
        campaign = campaign_create(name="Concurrent turns", creator=gm)
        campaign_join(invite_code=campaign.invite_code, user=player)
        session = SessionStore()
        session[SESSION_KEY] = str(player.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = player.get_session_auth_hash()
        session.save()
        out.append((str(campaign.id), session.session_key))
    connections.close_all()  # not counted among the servers' connections
    return out


async def _open(port: int, campaign_id: str, key: str) -> Any:
    import websockets

    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={key}"},
        max_size=None,
        open_timeout=60,
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
    while json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] != "server.ready":
        pass
    return ws


async def _act(ws: Any, go: asyncio.Event) -> tuple[float, bool]:
    """Wait for `go`, act, and wait for the answer: (seconds, whether the turn failed:
    no narration, or not the stand-in's)."""
    await go.wait()
    sent = time.perf_counter()
    await ws.send(
        json.dumps(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I go in."}
        )
    )
    deadline = sent + TURN_TIMEOUT_SECONDS
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            return time.perf_counter() - sent, True  # never answered: a failure
        message = json.loads(raw)
        kind = message["event"]["type"] if message["type"] == "event" else ""
        if kind in ("dm_narration", "turn_failed"):
            # A turn_failed, or a fallback narration, is not the stand-in's answer.
            told = message["event"]["payload"].get("text")
            return time.perf_counter() - sent, told != DM_ANSWER["narration"]


class _Sampler(threading.Thread):
    """The peak summed RSS of the turn-running processes (and, on PostgreSQL, of the
    connections open to the benchmark's database), sampled every 50 ms."""

    def __init__(self, pids: Any, pg: bool) -> None:
        super().__init__(daemon=True)
        self.pids, self.pg = pids, pg
        self.peak_rss = 0
        self.peak_pg = 0
        self.done = threading.Event()

    def run(self) -> None:
        conn = None
        if self.pg:
            import psycopg

            conn = psycopg.connect(PG_ADMIN_URL, autocommit=True)
        try:
            while not self.done.is_set():
                self.peak_rss = max(self.peak_rss, rss_kib(self.pids()))
                if conn is not None:
                    [(count,)] = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        (PG_BENCH_DB,),
                    ).fetchall()
                    self.peak_pg = max(self.peak_pg, count)
                self.done.wait(0.05)
        finally:
            if conn is not None:
                conn.close()


async def _burst(
    port: int, standin: Any, campaigns: list[tuple[str, str]], pids: Any, pg: bool
) -> dict[str, Any]:
    sockets = await asyncio.gather(*(_open(port, c, k) for c, k in campaigns))
    try:
        await asyncio.sleep(1.0)  # the server settles after the connections
        idle = rss_kib(pids())
        standin.reset()
        sampler = _Sampler(pids, pg)
        sampler.start()
        go = asyncio.Event()
        players = [asyncio.ensure_future(_act(ws, go)) for ws in sockets]
        await asyncio.sleep(0.1)
        go.set()  # every player acts at the same moment
        results = await asyncio.gather(*players)
        sampler.done.set()
        await asyncio.to_thread(sampler.join)
        stats = standin.stats()
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    latencies = [seconds for seconds, _ in results]
    peak = max(sampler.peak_rss, idle)
    return {
        "p50": percentile(latencies, 50),
        "max": max(latencies),
        "failed": sum(failed for _, failed in results),
        "in_flight": stats["peak"],
        "requests": stats["requests"],
        "idle_rss_kib": idle,
        "peak_rss_kib": peak,
        "per_turn_kib": (peak - idle) / stats["peak"] if stats["peak"] else float("nan"),
        "processes": len(pids()),
        "pg_connections": sampler.peak_pg if pg else None,
    }


# --- One setup ------------------------------------------------------------------------------


def run_setup(setup: str) -> dict[str, dict[str, Any]]:
    """Every count of campaigns on one setup: {str(count): figures}."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-turns-concurrency-"))
    standin = start_stand_in()
    procs: list[subprocess.Popen] = []
    worker = None
    env = {
        "DM_MODEL_PROVIDER": "openai",
        "DM_MODEL": STANDIN_MODEL,
        "OPENAI_BASE_URL": standin.url,
        "OPENAI_API_KEY": "sk-bench",
        # Every turn is paid for and none refused: the benchmark measures turns, not the
        # caps (billing/, tests/test_budget*.py). The model-call rate limits of
        # realtime/throttle.py are lifted by bench.common.SERVER_ENV.
        "BILLING_DEFAULT_DAILY_CAP_USD": "1000000",
        "BILLING_MAX_DAILY_CAP_USD": "1000000",
        "BILLING_USER_DAILY_CAP_USD": "1000000",
        "MODEL_CALLS_PER_USER_PER_MINUTE": "100000",
        "MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE": "100000",
        "TTS_PROVIDER": "none",
    }
    if setup == "embedded":
        db = tmp / "bench.sqlite3"
        env |= {"DATABASE_URL": f"sqlite:///{db}", "REDIS_URL": "", "TASKS_IN_PROCESS": "true"}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
    else:
        import redis

        redis.Redis.from_url(REDIS_BENCH_URL).flushdb()  # no task left by an earlier run
        env |= {
            "DATABASE_URL": fresh_pg_database(),
            "REDIS_URL": REDIS_BENCH_URL,
            "TASKS_IN_PROCESS": "false",
        }
    # This process makes the campaigns: same database, same defaults (a budget's cap).
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    import django

    django.setup()

    port = free_port()
    results: dict[str, dict[str, Any]] = {}
    try:
        daphne = start_daphne(port, env)
        procs.append(daphne)
        wait_port(port, daphne)
        if setup == "embedded":

            def pids() -> list[int]:
                return [daphne.pid]
        else:
            worker = start_make_worker(env, tmp / "worker.log")

            def pids() -> list[int]:
                return process_tree(worker.pid)

        warm = asyncio.run(_burst(port, standin, _campaigns(WARMUP_CAMPAIGNS), pids, False))
        if warm["failed"]:
            raise SystemExit(f"{warm['failed']} warm-up turns failed (the worker's log: {tmp})")
        for n in COUNTS:
            floor = asyncio.run(_floor(standin, n))
            figures = asyncio.run(_burst(port, standin, _campaigns(n), pids, pg=setup == "worker"))
            figures["floor"] = floor
            results[str(n)] = figures
            print(
                f"turns at once, {SETUPS[setup]}, {n} campaigns: p50 {figures['p50']:.2f} s "
                f"(floor {floor['p50']:.2f}) max {figures['max']:.2f} s (floor "
                f"{floor['max']:.2f}); in flight {figures['in_flight']} (floor "
                f"{floor['in_flight']}); model calls {figures['requests']}; failed "
                f"{figures['failed']}; RSS "
                f"{figures['idle_rss_kib'] / 1024:.0f} -> {figures['peak_rss_kib'] / 1024:.0f} "
                f"MiB in {figures['processes']} process(es), "
                f"{figures['per_turn_kib'] / 1024:.2f} MiB per turn in flight",
                flush=True,
            )
    finally:
        if worker is not None:
            stop_make_worker(worker)
        stop_all(procs)
        standin.stop()
    shutil.rmtree(tmp)  # kept when the run failed: the worker's log is there
    return results


def run() -> dict[str, dict[str, dict[str, Any]]]:
    """Both setups, each in a process of its own (each sets Django up for its database)."""
    out = {}
    for setup in SETUPS:
        done = subprocess.run(
            [sys.executable, "-m", "bench.turns_concurrency", "--setup", setup, "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        lines = done.stdout.splitlines()
        # Our own lines only (daphne's access log goes to the same output).
        print(*(x for x in lines if x.startswith("turns at once")), sep="\n", flush=True)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"bench.turns_concurrency --setup {setup} failed")
        [line] = [x for x in lines if x.startswith("BENCH_JSON ")]
        out[setup] = json.loads(line.removeprefix("BENCH_JSON "))
    return out


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    m = MODEL_SECONDS
    lines = [
        f"## Concurrent turns with a {m:g} s model stand-in",
        "",
        "N campaigns, one player each on their own WebSocket, act at the same moment; action "
        "to `dm_narration`, in seconds, one burst per row. *Embedded* is `make run`'s set-up "
        "(one daphne, SQLite, the in-memory layer, turns inside the server); *worker* is "
        "PostgreSQL + Redis, one daphne and the worker that `make worker` starts. The DM "
        "model is an OpenAI-compatible stand-in (a process of its own) streaming a valid "
        f"answer over {m:g} s, every request in parallel. In brackets, the floor from the "
        "same run: the stand-in's own latency for a bare client sending N requests at once "
        "straight to it. *In flight*: the peak of requests open at the stand-in. *Worker "
        "RSS*: the summed resident memory of the processes running turns (the daphne when "
        "embedded, everything `make worker` started), idle with the sockets open and at its "
        "peak in the burst; *per turn* = (peak - idle) / turns in flight. *Failed*: turns "
        "not answered with the stand-in's narration (`turn_failed`, a fallback, or nothing "
        f"within {TURN_TIMEOUT_SECONDS:g} s). *PG conns*: the peak of connections to the "
        "database, all processes.",
        "",
        f"| setup | N | p50 (floor) | max (floor) | p50 / {m:g} s | max / {m:g} s "
        "| in flight (floor) | failed | worker RSS idle → peak | per turn | PG conns |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for setup, by_count in results.items():
        for n, r in by_count.items():
            f = r["floor"]
            pg = "-" if r["pg_connections"] is None else str(r["pg_connections"])
            lines.append(
                f"| {setup} | {n} | {r['p50']:.2f} ({f['p50']:.2f}) | "
                f"{r['max']:.2f} ({f['max']:.2f}) | {r['p50'] / m:.1f}x ({f['p50'] / m:.2f}x) | "
                f"{r['max'] / m:.1f}x ({f['max'] / m:.2f}x) | {r['in_flight']} ({f['in_flight']}) "
                f"| {r['failed']} | {r['idle_rss_kib'] / 1024:.0f} → "
                f"{r['peak_rss_kib'] / 1024:.0f} MiB ({r['processes']} proc.) | "
                f"{r['per_turn_kib'] / 1024:.2f} MiB | {pg} |"
            )
    return lines


if __name__ == "__main__":
    if "--setup" in sys.argv:
        figures = run_setup(sys.argv[sys.argv.index("--setup") + 1])
        if "--json" in sys.argv:
            print("BENCH_JSON " + json.dumps(figures))
    else:
        results = run()
        if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
            print("BENCH_JSON " + json.dumps(results))
        else:
            print("\n".join(markdown(results)))
