"""Speech while the DM narrates (issue 23): action to first audio, today's path against
the streaming one, with piper.

A real daphne process serves the room (embedded: SQLite, in-memory layer, in-process
tasks, piper in the server process). A client acts and times, from the moment it sends
the action:
- the first sentence on screen: the `narration.delta` that completes the narration's
  first spoken segment (voice.text.narration_segments) in the text shown so far;
- the first audio: the first `narration.audio` (streaming, VOICE_STREAM=1) or the first
  `dm_audio_ready` of the narration (today's path, VOICE_STREAM=0): the moment the page
  can start playing.
Goal: first audio within 1.0 s of the first sentence on screen.

Two DMs: the fake DM (orchestrator/fake.py, its answer streamed at once), and an
OpenAI-compatible stand-in (tests.openai_server.OpenAIServer, in this process) that
answers in 4 s with its first token at 1.2 s, as a hosted model does, the same three
sentence narration every turn. Each (DM, path) runs on a fresh server; the first turn
warms up (the voice loads as the action commits) and is not counted.

    .venv/bin/python -m bench.voice_streaming          # BENCH_VOICE_STREAM_RUNS=12, fake 20
    .venv/bin/python -m bench.voice_streaming --json   # for bench/run.py
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    free_port,
    machine,
    percentile,
    start_daphne,
    stop_all,
    wait_port,
)
from bench.ws_latency import _setup

STANDIN_RUNS = int(os.environ.get("BENCH_VOICE_STREAM_RUNS", "12"))
FAKE_RUNS = int(os.environ.get("BENCH_VOICE_STREAM_FAKE_RUNS", "20"))
FIRST_TOKEN_SECONDS = 1.2
ANSWER_SECONDS = 4.0
CHUNK_CHARS = 8
NARRATION = (
    "The cellar door groans open, and cold air rolls up the stairs. "
    "Somewhere below, water drips onto stone in a slow, patient rhythm. "
    "A lantern flickers to life in the dark, held by a hand you cannot see."
)
ACTIONS = [
    "I push open the door of the inn",
    "I ask the innkeeper about the missing caravan",
    "I look for tracks in the mud outside",
    "I follow the tracks toward the old mill",
    "I listen at the mill door",
    "I search the sacks of grain",
]
PATHS = {"today (after the commit)": "0", "streaming": "1"}


def _standin() -> Any:
    """The stand-in, answering every turn with NARRATION over ANSWER_SECONDS, its first
    frame at FIRST_TOKEN_SECONDS."""
    from tests.openai_server import Answer, OpenAIServer

    content = {"narration": NARRATION, "tool_calls": [], "options": ["Go down", "Wait"]}
    frames = len(json.dumps(content)) // CHUNK_CHARS + 2
    delay = (ANSWER_SECONDS - FIRST_TOKEN_SECONDS) / frames
    server = OpenAIServer()
    server.default = Answer(content, chunk_chars=CHUNK_CHARS, delay=delay)
    base = server.httpd.RequestHandlerClass

    class SlowStart(base):  # type: ignore[misc, valid-type]
        def _sse(self, events: Any, delay: float, record: Any) -> None:
            if not self.owner.stopping.wait(max(0.0, FIRST_TOKEN_SECONDS - delay)):
                super()._sse(events, delay, record)

    server.httpd.RequestHandlerClass = SlowStart
    return server


async def _play(port: int, campaign_id: str, session_key: str, runs: int) -> list[dict]:
    import websockets

    from voice.text import narration_segments

    results: list[dict] = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session_key}"},
        max_size=None,
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
        for i in range(runs + 1):
            sent = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "type": "client.player_action",
                        "action_id": str(uuid.uuid4()),
                        "text": ACTIONS[i % len(ACTIONS)],
                    }
                )
            )
            shown: list[tuple[float, str]] = []  # (when, the text so far)
            text, turn_id, narration, first_audio = "", "", None, None
            while first_audio is None:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                now = time.perf_counter()
                if message["type"] == "narration.delta":
                    if message.get("offset") == 0:
                        text = ""
                    text += message["text"]
                    shown.append((now, text))
                elif message["type"] == "narration.audio" and first_audio is None:
                    first_audio = now
                elif message["type"] == "event":
                    event = message["event"]
                    if event["type"] == "dm_narration":
                        narration, turn_id = event, event["payload"]["turn_id"]
                    elif event["type"] == "dm_audio_ready" and narration is not None:
                        if event["payload"]["narration_seq"] == narration["seq"]:
                            first_audio = now
                    elif event["type"] == "turn_failed":
                        raise SystemExit(f"a turn failed: {event['payload']}")
            while narration is None:  # streaming: the narration comes after its audio
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message["type"] == "event" and message["event"]["type"] == "dm_narration":
                    narration = message["event"]
            first = narration_segments(narration["payload"])[0].text
            on_screen = next((at for at, so_far in shown if first in so_far), None)
            # Let the rest of the turn's speech finish before the next action.
            await _quiet(ws)
            results.append(
                {
                    "first_audio_ms": (first_audio - sent) * 1000,
                    "sentence_ms": (on_screen - sent) * 1000 if on_screen else float("nan"),
                    "turn_id": turn_id,
                }
            )
    return results[1:]  # the first turn warms up


async def _quiet(ws: Any, seconds: float = 1.5) -> None:
    while True:
        try:
            await asyncio.wait_for(ws.recv(), seconds)
        except TimeoutError:
            return


def _measure(env: dict[str, str], stream: str, standin_url: str | None, runs: int) -> list[dict]:
    """One server (a fresh campaign in the shared database) for one DM and one path."""
    media = tempfile.mkdtemp(prefix="rpgai-voice-stream-bench-")
    child = {
        **env,
        "TTS_PROVIDER": "piper",
        "VOICE_STREAM": stream,
        "VOICE_STORAGE_ALIAS": "default",
        "DJANGO_SETTINGS_MODULE": "bench.voice_settings",
        "BENCH_MEDIA_ROOT": media,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "LOG_LEVEL": "WARNING",
    }
    if standin_url:
        from tests.openai_server import process_env

        child.update(process_env(standin_url), DM_TIMEOUT_SECONDS="30")
    else:
        child["DM_MODEL_PROVIDER"] = "fake"
    port = free_port()
    procs = [start_daphne(port, child)]
    try:
        wait_port(port, procs[0])
        campaign_id, key = _setup(env)
        return asyncio.run(_play(port, campaign_id, key, runs))
    finally:
        stop_all(procs)
        shutil.rmtree(media, ignore_errors=True)


def _summary(runs: list[dict]) -> dict[str, float]:
    first = [r["first_audio_ms"] for r in runs]
    gap = [r["first_audio_ms"] - r["sentence_ms"] for r in runs]
    return {
        "first_audio_p50": percentile(first, 50),
        "first_audio_p99": percentile(first, 99),
        "sentence_p50": percentile([r["sentence_ms"] for r in runs], 50),
        "after_sentence_p50": percentile(gap, 50),
        "after_sentence_p99": percentile(gap, 99),
        "runs": len(runs),
    }


def run() -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    # One database for every server (one at a time): this process sets Django up once.
    db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=dict(os.environ, **env),
        check=True,
    )
    standin = _standin().start()
    try:
        for dm, url, runs in (
            ("fake DM", None, FAKE_RUNS),
            (
                f"stand-in ({ANSWER_SECONDS:g} s, first token {FIRST_TOKEN_SECONDS:g} s)",
                standin.url,
                STANDIN_RUNS,
            ),
        ):
            results[dm] = {}
            for path, stream in PATHS.items():
                results[dm][path] = _summary(_measure(env, stream, url, runs))
    finally:
        standin.stop()
        shutil.rmtree(db.parent, ignore_errors=True)
    print(f"speech while the DM narrates, piper, embedded (SQLite, in-memory), on {machine()}:")
    for dm, paths in results.items():
        for path, r in paths.items():
            print(
                f"  {dm}, {path}: action -> first audio p50 {r['first_audio_p50']:.0f} ms, "
                f"p99 {r['first_audio_p99']:.0f} ms; first sentence on screen p50 "
                f"{r['sentence_p50']:.0f} ms; first audio after it p50 "
                f"{r['after_sentence_p50']:.0f} ms, p99 {r['after_sentence_p99']:.0f} ms "
                f"({r['runs']:.0f} runs)",
                flush=True,
            )
    return results


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The section of docs/benchmarks.md."""
    lines = [
        "## Voice: speech while the DM narrates (piper)",
        "",
        "`python -m bench.voice_streaming`: from the action sent to the first audio the page "
        "can play (`narration.audio` when streaming, else the first `dm_audio_ready`), and "
        "how long after the first sentence appeared on screen; embedded server, warm voice; "
        "milliseconds. Goal: first audio within 1,000 ms of the first sentence on screen.",
        "",
        "| DM | path | first audio p50 | p99 | first sentence on screen p50 "
        "| audio after it p50 | p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dm, paths in results.items():
        for path, r in paths.items():
            lines.append(
                f"| {dm} | {path} | {r['first_audio_p50']:.0f} | {r['first_audio_p99']:.0f} "
                f"| {r['sentence_p50']:.0f} | {r['after_sentence_p50']:.0f} "
                f"| {r['after_sentence_p99']:.0f} |"
            )
    return lines


if __name__ == "__main__":
    result = run()
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(result))
    else:
        print("\n".join(markdown(result)))
