"""Action-to-narration latency with the fake model for 1, 10 and 50 concurrent campaigns.

PostgreSQL + Redis + one daphne + one Celery worker (solo pool, as in ws_latency). Each
campaign has one player on its own WebSocket, who sends an action, waits for the
`dm_narration` answering it, and sends the next. All campaigns play at once; the
latencies of every turn of a run give its p50 and p99, and each figure is the median
over BENCH_TURN_RUNS runs. With one worker the turns queue: the p99 at 50 campaigns
is mostly waiting for the worker, which is what adding workers buys.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

from bench.common import (
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    median,
    percentile,
    start_daphne,
    start_worker,
    wait_port,
)

CONCURRENCY = [int(c) for c in os.environ.get("BENCH_TURN_CONCURRENCY", "1,10,50").split(",")]
TURNS_TOTAL = int(os.environ.get("BENCH_TURNS_TOTAL", "100"))  # per run, over all campaigns
RUNS = int(os.environ.get("BENCH_TURN_RUNS", "3"))


def _campaigns(n: int) -> list[tuple[str, str]]:
    """`n` campaigns, each with a player; (campaign id, the player's session key)."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from campaigns.services import campaign_create, campaign_join

    users = get_user_model().objects
    out = []
    for _ in range(n):
        gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:8]}")
        player = users.create_user(f"bench-p-{uuid.uuid4().hex[:8]}")
        campaign = campaign_create(name="Turns", creator=gm)
        campaign_join(invite_code=campaign.invite_code, user=player)
        session = SessionStore()
        session[SESSION_KEY] = str(player.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = player.get_session_auth_hash()
        session.save()
        out.append((str(campaign.id), session.session_key))
    return out


async def _player(port: int, campaign_id: str, key: str, turns: int) -> list[float]:
    import websockets

    latencies = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={key}"},
        max_size=None,
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
        for i in range(turns):
            sent = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "type": "client.player_action",
                        "action_id": str(uuid.uuid4()),
                        "text": f"step {i}",
                    }
                )
            )
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message["type"] == "event" and message["event"]["type"] in {
                    "dm_narration",
                    "turn_failed",
                }:
                    latencies.append((time.perf_counter() - sent) * 1000)
                    break
    return latencies


async def _round(port: int, campaigns: list[tuple[str, str]], turns: int) -> list[float]:
    results = await asyncio.gather(*(_player(port, c, k, turns) for c, k in campaigns))
    return [x for r in results for x in r]


def run() -> dict[int, dict[str, float]]:
    env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    child_env = dict(
        os.environ,
        **env,
        DJANGO_SETTINGS_MODULE="rpgai.settings",
        LOG_LEVEL="WARNING",
        DM_MODEL_PROVIDER="fake",
        TTS_PROVIDER="none",
        # many players from one address: the benchmark measures turns, not the throttle
        WS_THROTTLE_CAMPAIGN_BURST="100000",
        WS_THROTTLE_USER_BURST="100000",
        WS_THROTTLE_CONNECTION_BURST="100000",
    )
    port = free_port()
    procs = [
        start_daphne(port, child_env),
        start_worker(child_env, "default,turns", "-P", "solo"),
    ]
    results: dict[int, dict[str, float]] = {}
    try:
        wait_port(port, procs[0])
        for n in CONCURRENCY:
            turns = max(1, TURNS_TOTAL // n)
            p50s, p99s = [], []
            for _ in range(RUNS):
                campaigns = _campaigns(n)
                latencies = asyncio.run(_round(port, campaigns, turns))
                p50s.append(percentile(latencies, 50))
                p99s.append(percentile(latencies, 99))
            results[n] = {"p50": median(p50s), "p99": median(p99s), "turns": turns}
            print(
                f"turns, {n} campaigns x {turns} turns: p50 {results[n]['p50']:.0f} ms "
                f"p99 {results[n]['p99']:.0f} ms (median of {RUNS})",
                flush=True,
            )
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return results


def markdown(results: dict[int, dict[str, float]]) -> list[str]:
    lines = [
        "## DM turns with the fake model (milliseconds, action to narration)",
        "",
        "Every campaign has one player sending an action and waiting for its narration; "
        "all campaigns play at once against one daphne and one Celery worker (solo pool), "
        f"PostgreSQL and Redis. Median over {RUNS} runs of each run's p50 and p99.",
        "",
        "| concurrent campaigns | turns each | p50 | p99 |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n, r in results.items():
        lines.append(f"| {n} | {r['turns']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} |")
    return lines


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
