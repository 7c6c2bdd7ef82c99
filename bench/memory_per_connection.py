"""Memory per open room connection: the RSS of one daphne before and after N sockets.

PostgreSQL + Redis (the production layer). N members of one campaign open the room and
send `client.hello`; once every socket is ready, the server's resident set size is read
from /proc. The figure is (RSS after - RSS before) / N, median over BENCH_MEM_RUNS runs,
each on a fresh daphne.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import (
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    median,
    server_env,
    wait_port,
)

CONNECTIONS = int(os.environ.get("BENCH_MEM_CONNECTIONS", "200"))
RUNS = int(os.environ.get("BENCH_MEM_RUNS", "3"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def room_with_members(n: int) -> tuple[str, list[str]]:
    """A campaign with `n` players; (campaign id, their session keys)."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from campaigns.services import campaign_create, campaign_join

    users = get_user_model().objects
    gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:8]}")
    campaign = campaign_create(name="Crowd", creator=gm)
    keys = []
    for _ in range(n):
        player = users.create_user(f"bench-p-{uuid.uuid4().hex[:8]}")
        campaign_join(invite_code=campaign.invite_code, user=player)
        session = SessionStore()
        session[SESSION_KEY] = str(player.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = player.get_session_auth_hash()
        session.save()
        keys.append(session.session_key)
    return str(campaign.id), keys


async def open_room(port: int, campaign_id: str, key: str):
    import websockets

    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={key}"},
        max_size=None,
        open_timeout=60,
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
    while json.loads(await ws.recv())["type"] != "server.ready":
        pass
    return ws


def start_daphne(port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "rpgai.asgi:application",
        ],
        cwd=ROOT,
        env=server_env(env),
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


async def _measure(port: int, pid: int, campaign_id: str, keys: list[str]) -> float:
    # Warm up: one connection and a pause, so that lazy imports are not counted.
    first = await open_room(port, campaign_id, keys[0])
    await asyncio.sleep(1)
    before = rss_kib(pid)
    sockets = [first]
    for start in range(1, len(keys), 25):  # in batches, as a crowd arrives
        sockets += await asyncio.gather(
            *(open_room(port, campaign_id, k) for k in keys[start : start + 25])
        )
    await asyncio.sleep(1)
    after = rss_kib(pid)
    for ws in sockets:
        await ws.close()
    return (after - before) / (len(keys) - 1)


def run() -> dict[str, float]:
    env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    django_setup(env)
    per_connection = []
    baseline = []
    for _ in range(RUNS):
        campaign_id, keys = room_with_members(CONNECTIONS + 1)
        port = free_port()
        proc = start_daphne(port, env)
        try:
            time.sleep(0.5)
            baseline.append(rss_kib(proc.pid))
            per_connection.append(asyncio.run(_measure(port, proc.pid, campaign_id, keys)))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {
        "connections": CONNECTIONS,
        "kib_per_connection": median(per_connection),
        "idle_rss_mib": median(baseline) / 1024,
    }
    print(
        f"memory: {result['kib_per_connection']:.1f} KiB per open room connection "
        f"({CONNECTIONS} connections; idle daphne {result['idle_rss_mib']:.0f} MiB)",
        flush=True,
    )
    return result


def markdown(result: dict[str, float]) -> list[str]:
    return [
        "## Memory per open room connection",
        "",
        f"RSS of one daphne (PostgreSQL, Redis layer) before and after {CONNECTIONS:.0f} members "
        f"open the room and say hello; median of {RUNS} runs on fresh processes.",
        "",
        "| idle daphne RSS | per open connection |",
        "| ---: | ---: |",
        f"| {result['idle_rss_mib']:.0f} MiB | {result['kib_per_connection']:.1f} KiB |",
    ]


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
