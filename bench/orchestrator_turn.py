"""The DM orchestrator's own cost, and how fast streamed narration reaches a player.

1. Overhead per turn with the fake model: `turn_run` end to end (context read, prompt
   built and counted with the tokenizer, the fake answer, parse, `turn_commit` appending
   the tool events and the narration), p50 and p99, on SQLite and on PostgreSQL. Each
   database runs in its own child process (`--overhead`), as Django settings are per
   process.
2. Token to delta: a real daphne process plays with the `openai` provider against the
   local OpenAI-compatible test server (tests/openai_server.py) running in this process;
   for each turn, the time from the server writing the first SSE frame that carries
   narration text to a WebSocket client receiving the first `narration.delta`. Both
   ends read CLOCK_MONOTONIC, which is system-wide. Target: under 50 ms.

Run by hand: `python -m bench.orchestrator_turn` (prints a markdown section).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, fresh_pg_database, machine, percentile

TURNS = int(os.environ.get("BENCH_TURNS", "200"))
STREAM_TURNS = int(os.environ.get("BENCH_STREAM_TURNS", "30"))
QUIET = {
    "LOG_LEVEL": "WARNING",
    "TTS_PROVIDER": "none",
    "DJANGO_SETTINGS_MODULE": "rpgai.settings",
    # Turns back to back, faster than any table plays: lift the per-minute allowance.
    "MODEL_CALLS_PER_USER_PER_MINUTE": "100000",
    "MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE": "100000",
}

ACTIONS = [
    "I attack the goblin",
    "I pick up the silver coin",
    "I greet the hooded stranger",
    "I sneak past the guard",
    "I search the chest",
    "I look around",
]


# --- 1. Overhead, in a child process ---------------------------------------------------------


def _overhead_child() -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from campaigns.selectors import membership_get
    from campaigns.services import campaign_create, campaign_join, player_action_submit
    from orchestrator.prompt import prompt_build
    from orchestrator.receivers import turns_deferred
    from orchestrator.schema import answer_parse
    from orchestrator.selectors import turn_context_get, turn_owed
    from orchestrator.services import turn_run

    users = get_user_model().objects
    gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:6]}")
    player = users.create_user(f"bench-p-{uuid.uuid4().hex[:6]}")
    campaign = campaign_create(
        name="Overhead", creator=gm, scene={"location": "the crypt", "description": "Cold."}
    )
    campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
    membership = membership_get(campaign_id=campaign.id, user_id=player.id)
    turns, prompts, parses = [], [], []
    for i in range(TURNS):
        with turns_deferred():
            player_action_submit(
                membership=membership,
                action_id=uuid.uuid4(),
                text=f"{ACTIONS[i % len(ACTIONS)]} ({i})",
            )
        answered, through = turn_owed(campaign_id=campaign.id)
        context = turn_context_get(
            campaign_id=campaign.id, answered_seq=answered, through_seq=through
        )
        started = time.perf_counter()
        prompt_build(context=context, budget=6000)
        prompts.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        outcome = turn_run(campaign_id=campaign.id)
        turns.append((time.perf_counter() - started) * 1000)
        assert outcome is not None and not outcome.fallback and outcome.failed_code is None
        narration = outcome.events[-1].payload
        text = json.dumps({"narration": narration["text"], "options": narration["options"]})
        started = time.perf_counter()
        answer_parse(text)
        parses.append((time.perf_counter() - started) * 1000)
    print(
        json.dumps(
            {
                "turn_p50": percentile(turns, 50),
                "turn_p99": percentile(turns, 99),
                "prompt_p50": percentile(prompts, 50),
                "parse_p50": percentile(parses, 50),
                "events": outcome.events[-1].seq,
            }
        )
    )


def _overhead(label: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.orchestrator_turn", "--overhead"],
        cwd=ROOT,
        env=dict(os.environ, **env, **QUIET),
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"turn overhead, {label}: p50 {result['turn_p50']:.1f} ms, p99 {result['turn_p99']:.1f} ms",
        flush=True,
    )
    return result


def _sqlite_env() -> dict[str, str]:
    db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=dict(os.environ, **env, **QUIET),
        check=True,
    )
    return env


# --- 2. First streamed token to first delta --------------------------------------------------


async def _stream_latencies(port: int, campaign_id: str, session_key: str, server) -> list[float]:
    import websockets

    gaps: list[float] = []
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session_key}"},
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
        for i in range(STREAM_TURNS):
            before = len(server.requests)
            await ws.send(
                json.dumps(
                    {
                        "type": "client.player_action",
                        "action_id": str(uuid.uuid4()),
                        "text": f"go {i}",
                    }
                )
            )
            first_delta = None
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] == "narration.delta" and first_delta is None:
                    first_delta = time.monotonic()
                if message["type"] == "event" and message["event"]["type"] == "dm_narration":
                    break
            # The turn's streamed call (a summary of older turns may be asked first, unstreamed).
            request = next(r for r in server.requests[before:] if r.body.get("stream"))
            # Frame 0 is the role chunk; frame 1 is the first with narration text.
            gaps.append((first_delta - request.frames_at[1]) * 1000)
    return gaps


def _token_to_delta() -> dict[str, float]:
    from bench.common import free_port, wait_port
    from bench.ws_latency import _setup
    from tests.openai_server import Answer, OpenAIServer

    env = _sqlite_env()
    with OpenAIServer() as server:
        # 24 characters per frame: the first content frame already carries narration.
        server.default = Answer(chunk_chars=24, delay=0.02)
        env.update(
            {
                "DM_MODEL_PROVIDER": "openai",
                "OPENAI_BASE_URL": server.url,
                "OPENAI_API_KEY": "sk-bench",
                "DM_MODEL": "bench-model",
            }
        )
        port = free_port()
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
            env=dict(os.environ, **env, **QUIET),
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, proc)
            campaign_id, key = _setup(env)
            gaps = asyncio.run(_stream_latencies(port, campaign_id, key, server))
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    result = {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99), "max": max(gaps)}
    print(
        f"first token to first narration.delta: p50 {result['p50']:.1f} ms, "
        f"p99 {result['p99']:.1f} ms",
        flush=True,
    )
    return result


def run() -> str:
    """The benchmark's markdown section."""
    sqlite = _overhead("SQLite", _sqlite_env())
    postgres = _overhead("PostgreSQL", {"DATABASE_URL": fresh_pg_database()})
    stream = _token_to_delta()
    lines = [
        "## DM orchestrator",
        "",
        f"Measured on {machine()} by `python -m bench.orchestrator_turn`.",
        "",
        f"Overhead of one DM turn with the fake model ({TURNS} turns in a row, one action each; "
        "`turn_run` end to end: context, prompt counted with the tokenizer, answer, parse, "
        "`turn_commit` appending the tool events and the narration), in milliseconds:",
        "",
        "| database | turn p50 | turn p99 | prompt build p50 | answer parse p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, r in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        lines.append(
            f"| {label} | {r['turn_p50']:.1f} | {r['turn_p99']:.1f} | "
            f"{r['prompt_p50']:.1f} | {r['parse_p50']:.2f} |"
        )
    lines += [
        "",
        f"From the first streamed narration token leaving the local OpenAI-compatible server to "
        f"the first `narration.delta` at a WebSocket client of a real daphne process (embedded, "
        f"{STREAM_TURNS} turns): p50 {stream['p50']:.1f} ms, p99 {stream['p99']:.1f} ms, "
        f"max {stream['max']:.1f} ms (target: under 50 ms).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--overhead" in sys.argv:
        _overhead_child()
    elif "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print(run())
