"""Run the benchmarks and write docs/benchmarks.md (run by hand: `make bench`).

Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379); it uses a scratch
database `rpgai_bench` (BENCH_PG_DB) and Redis db 9, and starts `make worker`. Every
figure is the median of several runs or a ratio to a baseline measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    append,
    fanout,
    memory_embeddings,
    memory_per_connection,
    memory_prompt_tokens,
    memory_retrieval,
    slow_member,
    turns,
    turns_concurrency,
    two_step,
    voice_streaming,
    ws_latency,
)
from bench.common import ROOT, machine


def _separately(module: str, *args: str) -> object:
    """Run bench/<module>.py in its own process (each sets Django up for its own
    database) and return what it measured."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"bench.{module} {' '.join(args)} failed with exit code {done.returncode}")
    out = done.stdout
    [line] = [x for x in out.splitlines() if x.startswith("BENCH_JSON ")]
    print(*(x for x in out.splitlines() if not x.startswith("BENCH_JSON ")), sep="\n")
    return json.loads(line.removeprefix("BENCH_JSON "))


def main() -> None:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Each benchmark in its own process: each sets Django up for its own database.
    appends = {
        name: {int(writers): rate for writers, rate in rates.items()}
        for name, rates in _separately("append").items()
    }
    latency = {}
    latency.update(_separately("ws_latency"))
    latency.update(_separately("ws_latency", "--services"))

    lines = [
        "# Benchmarks",
        "",
        f"Measured {started} on {machine()} by `make bench` (bench/run.py).",
        "Numbers on a 2-core machine; other work on the machine skews them, so re-run when quiet.",
        "",
        "## Event append throughput on PostgreSQL (events per second)",
        "",
        f"Each writer is a process appending one event per transaction for {append.DURATION:g} s "
        f"to one campaign; median of {append.RUNS} runs. The baseline does the same lock, insert "
        "and update with plain psycopg on the same tables.",
        "",
        "| writers | events_append | plain psycopg | ratio |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for writers in append.WRITERS:
        ours, plain = appends["events_append"][writers], appends["plain psycopg"][writers]
        lines.append(f"| {writers} | {ours:.0f} | {plain:.0f} | {ours / plain:.2f} |")
    lines += [
        "",
        "## WebSocket latency with the fake model (milliseconds)",
        "",
        f"One client sends {ws_latency.ACTIONS} actions one after another to a real daphne "
        "process and times the `server.ack` and the `dm_narration` event answering each; "
        f"each figure is the median over {ws_latency.RUNS} runs (a fresh campaign each) of "
        "that run's percentile.",
        "",
        "| setup | ack p50 | ack p99 | narration p50 | narration p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, r in latency.items():
        lines.append(
            f"| {label} | {r['ack_p50']:.1f} | {r['ack_p99']:.1f} | "
            f"{r['narration_p50']:.1f} | {r['narration_p99']:.1f} |"
        )
    lines += ["", *_separately("orchestrator_turn").splitlines()]
    lines += ["", *fanout.markdown(_separately("fanout"))]
    lines += [
        "",
        "## A member who never reads (one daphne process, the hub)",
        "",
        *slow_member.markdown(_separately("slow_member")),
    ]
    lines += ["", *turns.markdown(_separately("turns"))]
    lines += ["", *turns_concurrency.markdown(_separately("turns_concurrency"))]
    lines += ["", *two_step.markdown(_separately("two_step"))]
    lines += ["", *memory_per_connection.markdown(_separately("memory_per_connection"))]
    retrieval = {}
    retrieval.update(_separately("memory_retrieval"))
    retrieval.update(_separately("memory_retrieval", "--postgres"))
    lines += ["", *memory_retrieval.markdown(retrieval)]
    lines += ["", *memory_embeddings.markdown(_separately("memory_embeddings"))]
    voice = {}
    voice.update(_separately("voice_latency"))
    voice.update(_separately("voice_latency", "--services"))
    lines += [
        "",
        "## Voice: narration to first audio (piper)",
        "",
        "From the `dm_narration` event reaching a WebSocket client to the first `dm_audio_ready`"
        " (the first sentence spoken and stored), and to the last segment; milliseconds, "
        "median of the warm runs. The first run of each setup is shown apart: an embedded "
        "server loads the voice at its first turn, Celery workers load it as they start.",
        "",
        "| setup | first audio p50 | first audio max | first run | all segments p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, r in voice.items():
        lines.append(
            f"| {label} | {r['first_p50']:.0f} | {r['first_max']:.0f} | "
            f"{r['first_cold']:.0f} | {r['all_p50']:.0f} |"
        )
    lines += ["", *voice_streaming.markdown(_separately("voice_streaming"))]
    # The 2,000-turn campaign (10-25 minutes; BENCH_MEMORY_TURNS shortens it).
    lines += ["", *memory_prompt_tokens.markdown(_separately("memory_prompt_tokens"))]
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
