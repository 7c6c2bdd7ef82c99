"""Narration-to-first-audio latency with piper, as a player in the room sees it.

A real daphne process serves the room (embedded: SQLite, in-memory layer, in-process
tasks; with BENCH_SERVICES=1: PostgreSQL, Redis and a Celery worker on the `voice`
queue). A client acts, the fake DM answers, and the client times, from the moment the
`dm_narration` event reaches it, the first `dm_audio_ready` of that narration (the
first sentence can play) and the last one (all of it is spoken). The first run loads
the voice in the web server process (it is warmed when the action commits); the
median is over the runs after it.

    .venv/bin/python -m bench.voice_latency     # BENCH_VOICE_RUNS=7 by default
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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
    machine,
    median,
    start_daphne,
    start_worker,
    stop_all,
    wait_port,
)
from bench.ws_latency import _setup

RUNS = int(os.environ.get("BENCH_VOICE_RUNS", "7"))
ACTIONS = [
    "I push open the door of the inn",
    "I ask the innkeeper about the missing caravan",
    "I look for tracks in the mud outside",
    "I follow the tracks toward the old mill",
    "I listen at the mill door",
    "I draw my sword and step inside",
    "I search the sacks of grain",
    "I call out to whoever is hiding",
]


async def _play(port: int, campaign_id: str, session_key: str) -> list[dict[str, float]]:
    import websockets

    runs: list[dict[str, float]] = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session_key}"},
        max_size=None,
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
        for i in range(RUNS + 1):
            await ws.send(
                json.dumps(
                    {
                        "type": "client.player_action",
                        "action_id": str(uuid.uuid4()),
                        "text": ACTIONS[i % len(ACTIONS)],
                    }
                )
            )
            narration_seq, narrated, first, segments, speech_ms = 0, 0.0, 0.0, 0, 0
            seen: set[int] = set()
            while not segments or len(seen) < segments:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["type"] != "event":
                    continue
                event = message["event"]
                if event["type"] == "dm_narration":
                    narration_seq, narrated = event["seq"], time.perf_counter()
                elif (
                    event["type"] == "dm_audio_ready"
                    and event["payload"]["narration_seq"] == narration_seq
                ):
                    if not seen:
                        first = time.perf_counter()
                    seen.add(event["payload"]["segment"])
                    segments = event["payload"]["segments"]
                    speech_ms += event["payload"]["duration_ms"]
            runs.append(
                {
                    "first_ms": (first - narrated) * 1000,
                    "all_ms": (time.perf_counter() - narrated) * 1000,
                    "segments": segments,
                    "speech_ms": speech_ms,
                }
            )
    return runs


def run(services: bool | None = None) -> dict[str, dict[str, float]]:
    services = os.environ.get("BENCH_SERVICES") == "1" if services is None else services
    media = tempfile.mkdtemp(prefix="rpgai-voice-bench-")
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
    env.update(TTS_PROVIDER="piper", VOICE_STORAGE_ALIAS="default")
    child_env = dict(
        os.environ, **env, DJANGO_SETTINGS_MODULE="rpgai.settings", LOG_LEVEL="WARNING"
    )
    # The audio goes to a scratch folder: the settings' MEDIA_ROOT comes from here.
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    child_env["DJANGO_SETTINGS_MODULE"] = "bench.voice_settings"
    child_env["BENCH_MEDIA_ROOT"] = media
    procs: list[subprocess.Popen] = []
    port = free_port()
    try:
        procs.append(start_daphne(port, child_env))
        if services:
            procs.append(start_worker(child_env, "default,turns,voice", "-c", "2"))
            time.sleep(3)  # the worker's processes start and load the voice
        wait_port(port, procs[0])
        campaign_id, key = _setup(env)
        runs = asyncio.run(_play(port, campaign_id, key))
    finally:
        stop_all(procs)
        shutil.rmtree(media, ignore_errors=True)
    cold, warm = runs[0], runs[1:]
    label = "PostgreSQL + Redis + Celery" if services else "embedded (SQLite, in-memory)"
    result = {
        "first_p50": median([r["first_ms"] for r in warm]),
        "first_max": max(r["first_ms"] for r in warm),
        "first_cold": cold["first_ms"],
        "all_p50": median([r["all_ms"] for r in warm]),
        "speech_p50": median([r["speech_ms"] for r in warm]),
        "segments_p50": median([r["segments"] for r in warm]),
        "runs": len(warm),
    }
    each = ", ".join(f"{r['first_ms']:.0f}" for r in runs)
    print(
        f"voice latency with piper, {label}, on {machine()}:\n"
        f"  narration event -> first dm_audio_ready: median {result['first_p50']:.0f} ms "
        f"(max {result['first_max']:.0f} ms) over {result['runs']} runs; "
        f"first run {result['first_cold']:.0f} ms\n"
        f"  narration event -> last segment: median {result['all_p50']:.0f} ms for "
        f"{result['speech_p50'] / 1000:.1f} s of speech in {result['segments_p50']:.0f} segments\n"
        f"  each run (first audio, ms): {each}",
        flush=True,
    )
    return {label: result}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    result = run(services="--services" in sys.argv or None)
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(result))
