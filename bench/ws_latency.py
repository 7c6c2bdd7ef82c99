"""Action-to-ack and action-to-narration latency over the WebSocket, fake model.

A real daphne process serves the room; a client sends actions one after another and
times the `server.ack` and the `dm_narration` event that answers each. Embedded
(SQLite, in-memory layer, in-process tasks) by default; with BENCH_SERVICES=1 on
PostgreSQL and Redis with a Celery worker running the turns.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import (
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    median,
    percentile,
    start_daphne,
    start_worker,
    stop_all,
    wait_port,
)

ACTIONS = int(os.environ.get("BENCH_ACTIONS", "100"))
RUNS = int(os.environ.get("BENCH_WS_RUNS", "3"))


def _setup(env: dict[str, str]) -> tuple[str, str]:
    """A campaign and a player's session key, made in the database the server uses."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from campaigns.services import campaign_create, campaign_join

    users = get_user_model().objects
    gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:6]}")
    player = users.create_user(f"bench-p-{uuid.uuid4().hex[:6]}")
    campaign = campaign_create(name="Latency", creator=gm)
    campaign_join(invite_code=campaign.invite_code, user=player)
    session = SessionStore()
    session[SESSION_KEY] = str(player.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = player.get_session_auth_hash()
    session.save()
    return str(campaign.id), session.session_key


async def _play(port: int, campaign_id: str, session_key: str) -> tuple[list[float], list[float]]:
    import websockets

    acks, narrations = [], []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session_key}"},
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
        for i in range(ACTIONS):
            action_id = str(uuid.uuid4())
            sent = time.perf_counter()
            await ws.send(
                json.dumps(
                    {"type": "client.player_action", "action_id": action_id, "text": f"step {i}"}
                )
            )
            acked = None
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] == "server.ack" and message["action_id"] == action_id:
                    acked = time.perf_counter()
                elif message["type"] == "event" and message["event"]["type"] == "dm_narration":
                    narrations.append((time.perf_counter() - sent) * 1000)
                    break
            acks.append(((acked or time.perf_counter()) - sent) * 1000)
    return acks, narrations


def run(services: bool | None = None) -> dict[str, dict[str, float]]:
    services = os.environ.get("BENCH_SERVICES") == "1" if services is None else services
    procs: list[subprocess.Popen] = []
    if services:
        env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    else:
        db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
        env = {"DATABASE_URL": f"sqlite:///{db}"}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env=dict(os.environ, **env),
            check=True,
        )
    # Speech off: this measures the text path (bench/voice_latency.py measures the voice).
    child_env = dict(
        os.environ,
        **env,
        DJANGO_SETTINGS_MODULE="rpgai.settings",
        LOG_LEVEL="WARNING",
        TTS_PROVIDER="none",
    )
    port = free_port()
    try:
        procs.append(start_daphne(port, child_env))
        if services:
            procs.append(start_worker(child_env, "default,turns", "-P", "solo"))
        wait_port(port, procs[0])
        runs: list[dict[str, float]] = []
        for _ in range(RUNS):  # a fresh campaign each run, on the same server
            campaign_id, key = _setup(env)
            acks, narrations = asyncio.run(_play(port, campaign_id, key))
            runs.append(
                {
                    "ack_p50": percentile(acks, 50),
                    "ack_p99": percentile(acks, 99),
                    "narration_p50": percentile(narrations, 50),
                    "narration_p99": percentile(narrations, 99),
                }
            )
    finally:
        stop_all(procs)
    label = "PostgreSQL + Redis + Celery" if services else "embedded (SQLite, in-memory)"
    # Each figure: the median over the runs of that run's percentile.
    result = {key: median([r[key] for r in runs]) for key in runs[0]}
    print(
        f"ws latency, {label}: ack p50 {result['ack_p50']:.1f} ms p99 {result['ack_p99']:.1f} ms; "
        f"narration p50 {result['narration_p50']:.1f} ms p99 {result['narration_p99']:.1f} ms",
        flush=True,
    )
    return {label: result}


if __name__ == "__main__":
    result = run(services="--services" in sys.argv)
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(result))
