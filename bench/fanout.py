"""Fan-out: one room, 50 and 200 clients across two daphne processes through Redis.

Ours: the clients are members of one campaign, half on each of two daphne processes
(PostgreSQL, Redis channel layer), all past `client.hello`. The benchmark process
appends BENCH_FANOUT_EVENTS events (`audio_cue`, each its own transaction through
`events_append`, stamped with the time it was sent) and every client times each event
it receives. Events per second is deliveries (clients x events) over the time from the
first append to the last delivery; latency is append-to-receipt, p50 and p99.

Baseline, in the same run: plain Redis pub/sub to two plain `websockets` servers (one
process each) that forward every published message to their clients. Each figure is
the median over BENCH_FANOUT_RUNS runs, with the ratio ours/baseline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from bench.common import (
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    median,
    percentile,
    wait_port,
)
from bench.memory_per_connection import django_setup, open_room, room_with_members, start_daphne

CLIENTS = [int(c) for c in os.environ.get("BENCH_FANOUT_CLIENTS", "50,200").split(",")]
EVENTS = int(os.environ.get("BENCH_FANOUT_EVENTS", "50"))
RUNS = int(os.environ.get("BENCH_FANOUT_RUNS", "3"))
CHANNEL = "bench-fanout"

PLAIN_SERVER = r"""
import asyncio, sys
import redis.asyncio as redis
import websockets

clients = set()

async def handler(ws):
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)

async def pump(url, channel):
    pubsub = redis.from_url(url, socket_timeout=None).pubsub()
    await pubsub.subscribe(channel)
    async for message in pubsub.listen():
        if message["type"] == "message":
            websockets.broadcast(clients, message["data"].decode())

async def main(port, url, channel):
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        await pump(url, channel)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


async def _collect(ws, expected: int, latencies: list[float], last: list[float], ours: bool):
    got = 0
    while got < expected:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        now = time.time()
        if ours:
            if message.get("type") != "event" or message["event"]["type"] != "audio_cue":
                continue
            sent = float(message["event"]["payload"]["cue"].split(":", 1)[1])
        else:
            sent = message["sent"]
        latencies.append((now - sent) * 1000)
        got += 1
    last.append(time.time())


def _summary(latencies: list[float], deliveries: int, started: float, last: list[float]):
    return {
        "events_per_s": deliveries / (max(last) - started),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


async def _ours_once(ports: list[int], n: int) -> dict[str, float]:
    from asgiref.sync import sync_to_async

    from campaigns.events import NewEvent
    from campaigns.services import events_append

    campaign_id, keys = await sync_to_async(room_with_members)(n)
    sockets = []
    for i in range(0, n, 25):
        sockets += await asyncio.gather(
            *(open_room(ports[j % 2], campaign_id, keys[j]) for j in range(i, min(i + 25, n)))
        )
    await asyncio.sleep(float(os.environ.get("BENCH_FANOUT_SETTLE", "1")))  # presence settles
    latencies: list[float] = []
    last: list[float] = []
    collectors = [
        asyncio.create_task(_collect(ws, EVENTS, latencies, last, ours=True)) for ws in sockets
    ]

    def append_all() -> None:
        for _ in range(EVENTS):
            events_append(
                campaign_id=campaign_id,
                events=[NewEvent("audio_cue", {"cue": f"b:{time.time()!r}", "volume": 0.5})],
            )

    started = time.time()
    await sync_to_async(append_all, thread_sensitive=False)()
    await asyncio.gather(*collectors)
    for ws in sockets:
        await ws.close()
    return _summary(latencies, n * EVENTS, started, last)


async def _plain_once(ports: list[int], n: int) -> dict[str, float]:
    import redis.asyncio as redis
    import websockets

    sockets = []
    for i in range(n):
        sockets.append(await websockets.connect(f"ws://127.0.0.1:{ports[i % 2]}/", max_size=None))
    await asyncio.sleep(0.5)
    latencies: list[float] = []
    last: list[float] = []
    collectors = [
        asyncio.create_task(_collect(ws, EVENTS, latencies, last, ours=False)) for ws in sockets
    ]
    client = redis.from_url(REDIS_BENCH_URL)
    started = time.time()
    for seq in range(EVENTS):
        # what ours sends: an envelope of about the same size
        body = {"type": "event", "seq": seq, "sent": time.time(), "pad": "x" * 300}
        await client.publish(CHANNEL, json.dumps(body))
    await asyncio.gather(*collectors)
    await client.aclose()
    for ws in sockets:
        await ws.close()
    return _summary(latencies, n * EVENTS, started, last)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run() -> dict[int, dict[str, dict[str, float]]]:
    env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    django_setup(env)
    ours_ports = [free_port(), free_port()]
    plain_ports = [free_port(), free_port()]
    procs = [start_daphne(p, env) for p in ours_ports]
    for port in plain_ports:
        proc = subprocess.Popen(
            [sys.executable, "-c", PLAIN_SERVER, str(port), REDIS_BENCH_URL, CHANNEL],
            cwd=ROOT,
        )
        procs.append(proc)
        wait_port(port, proc)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        for n in CLIENTS:
            runs: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
            for _ in range(RUNS):
                runs["ours"].append(asyncio.run(_ours_once(ours_ports, n)))
                runs["plain"].append(asyncio.run(_plain_once(plain_ports, n)))
            results[n] = {
                kind: {k: median([r[k] for r in rs]) for k in ("events_per_s", "p50", "p99")}
                for kind, rs in runs.items()
            }
            o, p = results[n]["ours"], results[n]["plain"]
            print(
                f"fanout {n} clients: ours {o['events_per_s']:.0f} ev/s p50 {o['p50']:.1f} ms "
                f"p99 {o['p99']:.1f} ms; plain pub/sub {p['events_per_s']:.0f} ev/s "
                f"p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms",
                flush=True,
            )
    finally:
        _stop(procs)
    return results


def markdown(results: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    lines = [
        "## Fan-out in one room across two daphne processes (Redis)",
        "",
        f"{EVENTS} events appended one per transaction, delivered to every client (half on "
        "each process); deliveries per second and append-to-receipt latency in ms. The "
        "baseline is plain Redis pub/sub forwarded by two plain `websockets` servers, in the "
        f"same run. Median of {RUNS} runs.",
        "",
        "| clients | ours ev/s | plain ev/s | ratio | ours p50 | ours p99 "
        "| plain p50 | plain p99 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, r in results.items():
        o, p = r["ours"], r["plain"]
        lines.append(
            f"| {n} | {o['events_per_s']:.0f} | {p['events_per_s']:.0f} | "
            f"{o['events_per_s'] / p['events_per_s']:.2f} | {o['p50']:.1f} | {o['p99']:.1f} | "
            f"{p['p50']:.1f} | {p['p99']:.1f} |"
        )
    return lines


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
