"""Fan-out: one room, 50 and 200 members across two daphne processes, beside a bare floor.

Ours: the members of one campaign, half on each of two daphne processes (PostgreSQL,
Redis), all past `client.hello`. A sender (a thread with its own event loop, as a daphne
process sends from its loop) sends events at a steady rate (BENCH_FANOUT_RATES events a
second for BENCH_FANOUT_SECONDS), and every member times each event from the moment it
was sent to its receipt. Two ways of sending, each in its own load:

- *fan-out*: the events were appended beforehand, without broadcast; each is then
  broadcast by `campaigns.services.broadcast_events` (what a commit calls). Sent = just
  before that call. This is what the floor does: publish, relay, receive.
- *append*: each event is appended by `events_append` in its own transaction, which
  broadcasts it after the commit. Sent = just before the append: the append's own time
  (*append p50*, its median) is part of the latency.

Every member checks that it got every event once and in order: *lost* counts the
(member, event) pairs missing, duplicated or out of order; it must be 0.

The floor, in the same run and in turn with ours: two bare `websockets` servers (one
process each, no compression, as daphne) that relay every message published on a Redis
channel to all their clients; the same sender publishes messages of the same size at the
same rate, and the same client code times them.

CPU: the two servers' user + system time (from /proc) during a load, per 1,000
deliveries; the clients, Redis and PostgreSQL are not counted.

BENCH_FANOUT_LAYERS picks the channel layers the daphne processes run, side by side in one
run (default `hub`, the project's; `pubsub` is channels-redis's RedisPubSubChannelLayer,
`core` its RedisChannelLayer, which the project ran before issue 21).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import (
    REDIS_BENCH_URL,
    ROOT,
    free_port,
    fresh_pg_database,
    median,
    percentile,
    server_env,
    wait_port,
)
from bench.memory_per_connection import django_setup, room_with_members

CLIENTS = [int(c) for c in os.environ.get("BENCH_FANOUT_CLIENTS", "50,200").split(",")]
RATES = [int(r) for r in os.environ.get("BENCH_FANOUT_RATES", "10,50").split(",")]
SECONDS = float(os.environ.get("BENCH_FANOUT_SECONDS", "4"))
RUNS = int(os.environ.get("BENCH_FANOUT_RUNS", "1"))
LAYERS = os.environ.get("BENCH_FANOUT_LAYERS", "hub").split(",")
MODES = ("fan-out", "append")
CHANNEL = "bench-fanout"
# About the size of a roll's envelope (the floor's messages are padded to the size of
# ours, measured in the same run).
CUE_URL = "/static/campaigns/sounds/" + "x" * 240 + ".ogg"

# The floor: a bare websockets server relaying a Redis pub/sub channel to its clients.
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
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None, compression=None):
        await pump(url, channel)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


def start_daphne(port: int, env: dict[str, str]) -> subprocess.Popen:
    """A daphne process, its access log (one line per socket) and errors discarded."""
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*command, "rpgai.asgi:application"],
        cwd=ROOT,
        env=server_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def start_plain(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAIN_SERVER, str(port), REDIS_BENCH_URL, CHANNEL],
        cwd=ROOT,
        env=server_env({}),
    )
    wait_port(port, proc)
    return proc


async def open_room(port: int, campaign_id: str, key: str):
    """A member's socket past `client.hello`; no client pings (an overloaded client loop
    must not time its own sockets out), and no flow control of its own."""
    import websockets

    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={key}"},
        max_size=None,
        open_timeout=60,
        ping_interval=None,
        compression=None,
        # Take in whatever arrives, read or not: between loads nobody reads (presence
        # lists as 200 members come in), and a client that stopped reading would be a
        # slow member, closed with 4408 past the server's per-socket bound.
        max_queue=None,
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
    while json.loads(await ws.recv())["type"] != "server.ready":
        pass
    return ws


async def close_all(sockets: list) -> None:
    async def close(ws) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 10)

    await asyncio.gather(*(close(ws) for ws in sockets))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


# --- One load -------------------------------------------------------------------------------


class Load:
    """One load's marker and send times, shared by the sender thread and the clients:
    `rate` sends a second for `seconds`, each of `batch` events (ours: one message, one
    transaction)."""

    def __init__(self, tag: str, rate: int, seconds: float = SECONDS, batch: int = 1) -> None:
        self.rate, self.batch = rate, batch
        self.sends = max(1, round(rate * seconds))
        self.count = self.sends * batch  # events
        self.mark = f"{tag}{time.time_ns() % 10**9}"
        self.sent: list[float] = [0.0] * self.count
        self.took: list[float] = []


async def _collect(ws, load: Load, ours: bool, got: list, sizes: list, deadline: float):
    """Read until every event of `load` came (or the deadline passed)."""
    mark = load.mark
    while len(got) < load.count:
        left = deadline - time.time()
        if left <= 0:
            return
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            return
        now = time.time()
        if mark not in raw:  # presence and the like: only this load's events count
            continue
        message = json.loads(raw)
        # ours: the event's cue is "<mark>:<index>"; the floor's message says `i`.
        index = int(message["event"]["payload"]["cue"].rsplit(":", 1)[1]) if ours else message["i"]
        got.append((index, (now - load.sent[index]) * 1000))
        sizes.append(len(raw))


async def _pace(load: Load, send) -> None:
    start = time.time() + 0.05
    for k in range(load.sends):
        delay = start + k / load.rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = time.time()
        load.sent[k * load.batch : (k + 1) * load.batch] = [stamp] * load.batch
        await send(k)
        load.took.append((time.time() - stamp) * 1000)


async def _run_load(sockets, load: Load, sender, ours: bool, pids: list[int]) -> dict:
    """`sender(load)`: an async context manager (entered in the sender's loop) giving the
    coroutine that sends event i."""
    got: list[list] = [[] for _ in sockets]
    sizes: list[int] = []
    deadline = time.time() + SECONDS + 60
    collectors = [
        asyncio.create_task(_collect(ws, load, ours, g, sizes, deadline))
        for ws, g in zip(sockets, got, strict=True)
    ]
    await asyncio.sleep(0)
    cpu0 = cpu_seconds(pids)

    async def sending() -> None:
        async with sender(load) as send:
            await _pace(load, send)

    # A thread with its own event loop, as a daphne process sends from its loop: the
    # clients' work in this loop must not delay the sends (nor, ours, the publish after
    # each commit, which runs on the sender's loop: rpgai.tasks.call_async).
    thread = threading.Thread(target=asyncio.run, args=(sending(),))
    thread.start()
    await asyncio.gather(*collectors)
    cpu = cpu_seconds(pids) - cpu0
    thread.join()
    latencies = [ms for g in got for _, ms in g]
    lost = 0
    for g in got:
        indexes = [i for i, _ in g]
        # Missing, duplicated and out-of-order deliveries all count.
        lost += sum(1 for k in range(load.count) if k >= len(indexes) or indexes[k] != k)
        lost += max(0, len(indexes) - load.count)
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "lost": lost,
        "cpu_ms_per_1000": cpu * 1000 / (len(sockets) * load.count) * 1000,
        "size": sum(sizes) / len(sizes) if sizes else 0,
        "append_p50": percentile(load.took, 50),
    }


# --- Ours -----------------------------------------------------------------------------------


def _use_layer(layer: str) -> None:
    """Point this process's channel layer (the producer's side) at `layer`."""
    from channels.layers import channel_layers
    from django.conf import settings

    from rpgai.settings import channel_layer_config

    backend = settings.CHANNEL_LAYER_BACKENDS[layer]
    config = channel_layer_config(layer, REDIS_BENCH_URL)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": config}}
    channel_layers.backends.clear()


class Ours:
    """One room of `n` members on a pair of daphne processes running `layer`."""

    def __init__(self, layer: str, ports: list[int], pids: list[int]) -> None:
        self.layer, self.ports, self.pids = layer, ports, pids
        self.sockets: list = []
        self.campaign_id = ""

    async def open(self, n: int) -> None:
        from asgiref.sync import sync_to_async

        self.campaign_id, keys = await sync_to_async(room_with_members)(n)
        for i in range(0, n, 25):  # in batches, as a crowd arrives
            self.sockets += await asyncio.gather(
                *(
                    open_room(self.ports[j % 2], self.campaign_id, keys[j])
                    for j in range(i, min(i + 25, n))
                )
            )

    async def close(self) -> None:
        await close_all(self.sockets)
        self.sockets = []

    def _append(self, load: Load, k: int) -> list:
        """Send k's events, in one transaction."""
        from campaigns.events import NewEvent
        from campaigns.services import events_append

        cues = [
            {"cue": f"{load.mark}:{i}", "volume": 0.5, "url": CUE_URL}
            for i in range(k * load.batch, (k + 1) * load.batch)
        ]
        events = [NewEvent("audio_cue", cue) for cue in cues]
        return events_append(campaign_id=self.campaign_id, events=events)

    def _append_silently(self, load: Load) -> list:
        """The load's events, committed with no broadcast (the fan-out load sends them),
        one list per send."""
        import campaigns.services as services

        broadcast = services.broadcast_events
        services.broadcast_events = lambda *args, **kwargs: None
        try:
            return [self._append(load, k) for k in range(load.sends)]
        finally:
            services.broadcast_events = broadcast

    async def run(self, load: Load, mode: str) -> dict:
        from asgiref.sync import sync_to_async
        from django.db import connection

        from campaigns.services import broadcast_events

        _use_layer(self.layer)
        events = await sync_to_async(self._append_silently)(load) if mode == "fan-out" else []

        @contextlib.asynccontextmanager
        async def sender(load: Load):
            # Thread-sensitive: every database call in one thread (one connection), and
            # each publish on the sender's loop, as in a daphne process.
            if mode == "fan-out":
                yield lambda k: sync_to_async(broadcast_events)(self.campaign_id, events[k])
            else:
                yield lambda k: sync_to_async(self._append)(load, k)
            await sync_to_async(lambda: connection.close())()

        return await _run_load(self.sockets, load, sender, True, self.pids)


class Floor:
    """`n` clients of the two bare relays."""

    def __init__(self, ports: list[int], pids: list[int]) -> None:
        self.ports, self.pids = ports, pids
        self.sockets: list = []

    async def open(self, n: int) -> None:
        import websockets

        for i in range(n):
            url = f"ws://127.0.0.1:{self.ports[i % 2]}/"
            self.sockets.append(
                await websockets.connect(
                    url, max_size=None, compression=None, ping_interval=None, max_queue=None
                )
            )

    async def close(self) -> None:
        await close_all(self.sockets)
        self.sockets = []

    async def run(self, load: Load, size: int) -> dict:
        from redis import asyncio as aioredis

        @contextlib.asynccontextmanager
        async def sender(load: Load):
            client = aioredis.Redis.from_url(REDIS_BENCH_URL)

            async def send(i: int) -> None:
                body = {"type": "event", "i": i, "mark": load.mark, "pad": ""}
                pad = "x" * max(0, size - len(json.dumps(body)))
                await client.publish(CHANNEL, json.dumps({**body, "pad": pad}))

            yield send
            await client.aclose()

        return await _run_load(self.sockets, load, sender, False, self.pids)


# --- The run --------------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _line(what: str, n: int, rate: int, r: dict) -> str:
    return (
        f"fanout {what}, {n} members, {rate} events/s: p50 {r['p50']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms, lost {r['lost']}, "
        f"CPU {r['cpu_ms_per_1000']:.0f} ms per 1,000 deliveries"
        + (f", append p50 {r['append_p50']:.1f} ms" if "append" in what else "")
    )


async def _size(n: int, rate: int, rooms: dict, floor: Floor) -> dict:
    """Every load at (n, rate): the floor and each layer's modes, in turn."""
    out: dict = {}
    size = 0
    for layer, room in rooms.items():
        for mode in MODES:
            runs = [await room.run(Load("b", rate), mode) for _ in range(RUNS)]
            out[f"{layer} {mode}"] = r = _median(runs)
            size = size or round(r["size"])
            print(_line(f"ours ({layer}, {mode})", n, rate, r), flush=True)
    runs = [await floor.run(Load("p", rate), size or 650) for _ in range(RUNS)]
    out["floor"] = r = _median(runs)
    print(_line("bare floor", n, rate, r), flush=True)
    return out


async def _members(n: int, daphnes: dict, plain: list) -> dict:
    rooms = {layer: Ours(layer, *daphnes[layer]) for layer in LAYERS}
    floor = Floor([p for p, _ in plain], [pid for _, pid in plain])
    try:
        for room in rooms.values():
            await room.open(n)
        await floor.open(n)
        await asyncio.sleep(float(os.environ.get("BENCH_FANOUT_SETTLE", "1.5")))  # presence
        return {rate: await _size(n, rate, rooms, floor) for rate in RATES}
    finally:
        for room in rooms.values():
            await room.close()
        await floor.close()


def run() -> dict:
    env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    django_setup(env)
    procs: list[subprocess.Popen] = []
    daphnes: dict = {}
    try:
        for layer in LAYERS:
            ports = [free_port(), free_port()]
            started = [start_daphne(p, {**env, "CHANNEL_LAYER": layer}) for p in ports]
            procs += started
            daphnes[layer] = (ports, [p.pid for p in started])
        plain = []
        for port in (free_port(), free_port()):
            proc = start_plain(port)
            procs.append(proc)
            plain.append((port, proc.pid))
        return {n: asyncio.run(_members(n, daphnes, plain)) for n in CLIENTS}
    finally:
        _stop(procs)


def _median(runs: list[dict]) -> dict:
    out = {k: median([r[k] for r in runs]) for k in runs[0]}
    out["lost"] = max(r["lost"] for r in runs)  # any loss shows
    return out


def markdown(results: dict) -> list[str]:
    first = next(iter(results.values()))
    sample = next(iter(first.values()))
    size = round(next(r["size"] for k, r in sample.items() if k != "floor"))
    lines = [
        "## Fan-out in one room across two daphne processes (Redis)",
        "",
        "Members of one campaign, half on each of two daphne processes (PostgreSQL, Redis), "
        "all past `client.hello`; one sender sends `audio_cue` events at a steady rate for "
        f"{SECONDS:g} s and every member times each event from its sending to its receipt "
        "(ms). *fan-out*: the events were committed beforehand and each is sent by "
        "`broadcast_events` (what a commit calls), the floor's path; *append*: each is "
        "appended by `events_append` in its own transaction (its median time in *append*), "
        "which then broadcasts it. *Lost*: (member, event) pairs missing, duplicated or out "
        "of order. *CPU*: the two servers' CPU time per 1,000 deliveries (ms). *Floor*, in "
        "the same run, in turn with ours: two bare `websockets` servers relaying a Redis "
        "pub/sub channel to the same clients, sent the same way, messages of the same size "
        f"({size} bytes). `hub` is the project's channel layer (realtime/hub.py); `pubsub` "
        "and `core` are channels-redis's RedisPubSubChannelLayer and RedisChannelLayer "
        "(the project's before issue 21), run by the same consumer. "
        + (f"Median of {RUNS} runs." if RUNS > 1 else "One run per row."),
        "",
        "| members | events/s | layer, sent by | p50 | p99 | max | lost | CPU | append "
        "| floor p50 | floor p99 | floor CPU | p99 / floor p99 |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for n, per_rate in results.items():
        for rate, loads in per_rate.items():
            f = loads["floor"]
            for what, o in loads.items():
                if what == "floor":
                    continue
                append = f"{o['append_p50']:.1f}" if what.endswith("append") else "-"
                lines.append(
                    f"| {n} | {rate} | {what} | {o['p50']:.1f} | {o['p99']:.1f} | "
                    f"{o['max']:.1f} | {o['lost']} | {o['cpu_ms_per_1000']:.0f} | {append} | "
                    f"{f['p50']:.1f} | {f['p99']:.1f} | {f['cpu_ms_per_1000']:.0f} | "
                    f"{o['p99'] / f['p99']:.1f}x |"
                )
    return lines


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
