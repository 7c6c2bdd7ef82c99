"""Two-step turns (CONTRACTS §7): what rolling first, then narrating, costs a turn.

An uncertain action ("I attack the goblin") is answered in two model calls: one that only
rolls (narration "" and `roll` calls with a DC), then, given the results, one that
narrates. A certain action ("I look around") is one call. For each kind of turn, action
to narration (the `player_action` appended, then `turn_run` until its `dm_narration` is
committed), p50 and p99, each beside its floor measured in the same run:

- with the fake DM (orchestrator/fake.py, which rolls first for uncertain actions): the
  floor of a two-step turn is a one-step turn, so the gap is what the second step costs
  (a second prompt, the rolls committed, a second answer parsed);
- with a model stand-in that takes MODEL_SECONDS (2 s) per call: tests.openai_server's
  OpenAIServer in the child process, scripted for each turn (a rolling answer, then a
  narrating one; or the narrating one alone), each answer streamed over about 2 s (its
  chunk count and `delay`). The floor is a bare client making the same one or two
  streamed requests (the very bodies the turn sent) straight to the stand-in, one after
  the other.

And what the second step adds to a turn's bill: its input and output tokens (the usage
each call reported: the fake model and the stand-in both count with the tokenizer) and
their price for PRICED_MODEL (gpt-4o-mini) by billing.prices.model_cost.

Each DM runs in a child process of its own on SQLite (`--child fake|standin`; Django
settings are per process), with the per-minute model-call allowance lifted. Every turn is
in a fresh campaign (the same scene, one player), so the turns of both kinds answer the
same context and their prompts are the same size; one turn of each kind warms up first.

    python -m bench.two_step           # a markdown section
    python -m bench.two_step --json    # for bench/run.py
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, machine, percentile
from bench.orchestrator_turn import QUIET, _sqlite_env

FAKE_TURNS = int(os.environ.get("BENCH_TWO_STEP_TURNS", "30"))  # of each kind
STANDIN_TURNS = int(os.environ.get("BENCH_TWO_STEP_STANDIN_TURNS", "8"))  # of each kind
MODEL_SECONDS = float(os.environ.get("BENCH_MODEL_SECONDS", "2"))
PRICED_MODEL = os.environ.get("BENCH_PRICED_MODEL", "gpt-4o-mini")
CHUNKS = 24  # streamed content deltas per stand-in answer

KINDS = ("one-step", "two-step")
ACTIONS = {
    # Certain: the fake DM narrates at once.
    "one-step": ["I look around", "I greet the innkeeper"],
    # Uncertain: the fake DM rolls first, with a DC, and narrates given the results.
    "two-step": ["I attack the goblin", "I sneak past the guard", "I search the chest"],
}

# The stand-in's scripted answers (valid DM answers, orchestrator/schema.py).
ROLLING_ANSWER: dict[str, Any] = {
    "narration": "",
    "tool_calls": [
        {
            "name": "roll",
            "args": {"formula": "1d20+5", "reason": "Alice's attack on the goblin", "dc": 13},
        }
    ],
    "options": [],
}
NARRATING_ANSWER: dict[str, Any] = {
    "narration": (
        "Alice's blade flashes in the torchlight and the goblin staggers back against the "
        "crypt wall, clutching its arm; behind it, something larger shifts in the dark and "
        "a low growl rolls out of the passage."
    ),
    "tool_calls": [{"name": "trigger_audio", "args": {"cue": "combat"}}],
    "options": ["Press the attack", "Fall back to the stair", "Shout a warning"],
}


# --- In the child process -------------------------------------------------------------------


def _table() -> Any:
    """A fresh campaign with one player: their membership."""
    from django.contrib.auth import get_user_model

    from campaigns.selectors import membership_get
    from campaigns.services import campaign_create, campaign_join

    users = get_user_model().objects
    gm = users.create_user(f"bench-gm-{uuid.uuid4().hex[:8]}")
    player = users.create_user(f"bench-p-{uuid.uuid4().hex[:8]}")
    campaign = campaign_create(
        name="Two steps",
        creator=gm,
        scene={"location": "the crypt", "description": "Cold stone, a goblin by the stair."},
    )
    campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
    return membership_get(campaign_id=campaign.id, user_id=player.id)


def _turn(kind: str, text: str) -> tuple[float, Any]:
    """One action in a fresh campaign and the turn answering it: (seconds from the action
    to the committed narration, the TurnOutcome)."""
    from campaigns.selectors import turn_rolls_logged
    from campaigns.services import player_action_submit
    from orchestrator.receivers import turns_deferred
    from orchestrator.services import turn_run

    membership = _table()
    started = time.perf_counter()
    with turns_deferred():  # the turn is run here, not queued
        player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
    outcome = turn_run(campaign_id=membership.campaign_id)
    seconds = time.perf_counter() - started
    steps = KINDS.index(kind) + 1
    if outcome is None or outcome.fallback or outcome.failed_code is not None:
        code = outcome and (outcome.failed_code or "fallback")
        raise SystemExit(f"{kind} turn {text!r} was not answered ({code})")
    if outcome.steps != steps or len(outcome.usage) != steps:
        raise SystemExit(
            f"{text!r}: {outcome.steps} step(s) and {len(outcome.usage)} model call(s), "
            f"not the {steps} of a {kind} turn"
        )
    rolled = turn_rolls_logged(campaign_id=membership.campaign_id, turn_id=outcome.turn_id)
    if outcome.events[-1].type != "dm_narration" or (kind == "two-step") != bool(rolled):
        raise SystemExit(f"{text!r}: a {kind} turn logged {len(rolled)} roll(s)")
    return seconds, outcome


def _order(i: int) -> tuple[str, ...]:
    """The kinds in turn, alternating which goes first (drift on the machine hits both)."""
    return KINDS if i % 2 == 0 else KINDS[::-1]


def _usage(outcomes: list[Any]) -> dict[str, Any]:
    """Mean tokens per turn, by step, and the prompt's size."""
    steps = len(outcomes[0].usage)
    return {
        "steps": [
            {
                "input": sum(o.usage[s].input_tokens for o in outcomes) / len(outcomes),
                "output": sum(o.usage[s].output_tokens for o in outcomes) / len(outcomes),
                "estimated": any(o.usage[s].estimated for o in outcomes),
            }
            for s in range(steps)
        ],
        "prompt_tokens": sum(o.prompt_tokens for o in outcomes) / len(outcomes),
    }


def _fake_child() -> dict[str, Any]:
    import django

    django.setup()
    for kind in KINDS:  # warm-up: the first turn of a process loads what a turn needs
        _turn(kind, ACTIONS[kind][0])
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    outcomes: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for i in range(FAKE_TURNS):
        for kind in _order(i):
            took, outcome = _turn(kind, ACTIONS[kind][i % len(ACTIONS[kind])])
            seconds[kind].append(took)
            outcomes[kind].append(outcome)
    return {
        kind: {
            "p50": percentile(seconds[kind], 50) * 1000,
            "p99": percentile(seconds[kind], 99) * 1000,
            "turns": len(seconds[kind]),
            "usage": _usage(outcomes[kind]),
        }
        for kind in KINDS
    }


def _timed(content: dict[str, Any], seconds: float) -> Any:
    """`content` streamed in CHUNKS deltas over about `seconds`: the stand-in waits `delay`
    before each frame but the last ([DONE]): the role frame, the content deltas, the
    finish frame and the usage frame."""
    from tests.openai_server import Answer

    text = Answer(content).text
    chunk_chars = math.ceil(len(text) / CHUNKS)
    frames = math.ceil(len(text) / chunk_chars) + 3
    return Answer(content, chunk_chars=chunk_chars, delay=seconds / frames)


def _script(kind: str, seconds: float) -> list[Any]:
    narrating = _timed(NARRATING_ANSWER, seconds)
    return [_timed(ROLLING_ANSWER, seconds), narrating] if kind == "two-step" else [narrating]


def _bare(url: str, bodies: list[dict[str, Any]]) -> float:
    """The same streamed requests, one after the other, from a bare HTTP client straight
    to the stand-in: seconds until the last stream ended."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    started = time.perf_counter()
    for body in bodies:
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
        try:
            conn.request(
                "POST",
                f"{where.path}/chat/completions",
                body=json.dumps(body),
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
            )
            answer = conn.getresponse().read()  # HTTP/1.0: to the end of the stream
        finally:
            conn.close()
        if b"data: [DONE]" not in answer:
            raise SystemExit("the stand-in's stream did not end with [DONE]")
    return time.perf_counter() - started


def _standin_child() -> dict[str, Any]:
    from tests.openai_server import OpenAIServer

    with OpenAIServer() as server:
        # Settings are read as Django starts: the stand-in is up first.
        os.environ.update(
            {
                "DM_MODEL_PROVIDER": "openai",
                "OPENAI_BASE_URL": server.url,
                "OPENAI_API_KEY": "sk-bench",
                "DM_MODEL": PRICED_MODEL,  # billing charges what the table below prices
            }
        )
        import django

        django.setup()
        for kind in KINDS:  # warm-up (and the output shape found), with instant answers
            server.script(*_script(kind, 0.0))
            _turn(kind, ACTIONS[kind][0])
        seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
        floors: dict[str, list[float]] = {kind: [] for kind in KINDS}
        outcomes: dict[str, list[Any]] = {kind: [] for kind in KINDS}
        for i in range(STANDIN_TURNS):
            for kind in _order(i):
                before = len(server.requests)
                server.script(*_script(kind, MODEL_SECONDS))
                took, outcome = _turn(kind, ACTIONS[kind][i % len(ACTIONS[kind])])
                sent = server.requests[before:]
                if len(sent) != len(outcome.usage):
                    raise SystemExit(f"a {kind} turn made {len(sent)} requests to the stand-in")
                # The floor: the very requests of this turn, from a bare client.
                server.script(*_script(kind, MODEL_SECONDS))
                floors[kind].append(_bare(server.url, [r.body for r in sent]))
                seconds[kind].append(took)
                outcomes[kind].append(outcome)
                print(
                    f"stand-in {kind} turn {i + 1}/{STANDIN_TURNS}: {took:.2f} s "
                    f"(bare client {floors[kind][-1]:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return {
        kind: {
            "p50": percentile(seconds[kind], 50) * 1000,
            "p99": percentile(seconds[kind], 99) * 1000,
            "floor_p50": percentile(floors[kind], 50) * 1000,
            "floor_p99": percentile(floors[kind], 99) * 1000,
            "turns": len(seconds[kind]),
            "usage": _usage(outcomes[kind]),
        }
        for kind in KINDS
    }


def _priced(figures: dict[str, dict[str, Any]]) -> None:
    """Each kind's cost per turn, and each step's, at PRICED_MODEL's price (in place)."""
    from billing.prices import model_cost

    for r in figures.values():
        for step in r["usage"]["steps"]:
            step["usd"] = float(
                model_cost(
                    model=PRICED_MODEL,
                    input_tokens=round(step["input"]),
                    output_tokens=round(step["output"]),
                )
            )


def _child(which: str) -> None:
    figures = _fake_child() if which == "fake" else _standin_child()
    _priced(figures)
    print("TWO_STEP_JSON " + json.dumps(figures), flush=True)


# --- In the parent --------------------------------------------------------------------------


def _run_child(which: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.two_step", "--child", which],
        cwd=ROOT,
        env=dict(os.environ, **_sqlite_env(), **QUIET),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"bench.two_step --child {which} failed")
    [line] = [x for x in done.stdout.splitlines() if x.startswith("TWO_STEP_JSON ")]
    figures = json.loads(line.removeprefix("TWO_STEP_JSON "))
    for kind, r in figures.items():
        floor = f" (bare client {r['floor_p50']:.0f} ms)" if "floor_p50" in r else ""
        print(
            f"two-step bench, {which} DM, {kind} turns: p50 {r['p50']:.1f} ms{floor}, "
            f"p99 {r['p99']:.1f} ms",
            flush=True,
        )
    return figures


def run() -> dict[str, Any]:
    return {
        "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "fake": _run_child("fake"),
        "standin": _run_child("standin"),
    }


def _turn_tokens(r: dict[str, Any]) -> tuple[float, float, float]:
    steps = r["usage"]["steps"]
    return (
        sum(s["input"] for s in steps),
        sum(s["output"] for s in steps),
        sum(s["usd"] for s in steps),
    )


def markdown(results: dict[str, Any]) -> list[str]:
    m = MODEL_SECONDS
    fake, standin = results["fake"], results["standin"]
    one, two = fake["one-step"], fake["two-step"]
    s_one, s_two = standin["one-step"], standin["two-step"]
    lines = [
        "## Two-step turns: the dice first, then the narration",
        "",
        f"Measured {results['measured']} on {results['machine']} by `python -m bench.two_step`.",
        "",
        "An uncertain action (an attack, sneaking, a search) is answered in two model calls: "
        'one that only rolls (narration `""`, `roll` calls with a DC), then one that narrates '
        "given the results; a certain one (looking around, a greeting) in one (CONTRACTS §7). "
        "Action to narration (the `player_action` appended, then `turn_run` until its "
        "`dm_narration` is committed), in milliseconds, on SQLite in a process of its own, "
        "each turn in a fresh campaign (the same scene, one player; the two kinds "
        "alternate). In brackets, the floor from the same run. With the fake DM, the floor "
        "of a two-step turn is a one-step turn. With the model stand-in "
        "(tests/openai_server.py in the same process, scripted per turn: a rolling answer "
        f"then a narrating one, or the narrating one alone, each streamed over about {m:g} s), "
        "the floor is a bare HTTP client sending the same one or two streamed requests (the "
        "bodies the turn sent) straight to the stand-in, one after the other.",
        "",
        "| DM | turn | turns | p50 (floor) | p99 (floor) | p50 over floor |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| fake | one-step | {one['turns']} | {one['p50']:.1f} | {one['p99']:.1f} | - |",
        f"| fake | two-step | {two['turns']} | {two['p50']:.1f} ({one['p50']:.1f}) | "
        f"{two['p99']:.1f} ({one['p99']:.1f}) | {two['p50'] - one['p50']:+.1f} |",
    ]
    for kind, r in (("one-step", s_one), ("two-step", s_two)):
        lines.append(
            f"| {m:g} s stand-in | {kind} | {r['turns']} | {r['p50']:.0f} ({r['floor_p50']:.0f}) "
            f"| {r['p99']:.0f} ({r['floor_p99']:.0f}) | {r['p50'] - r['floor_p50']:+.0f} |"
        )
    lines += [
        "",
        "What the second step adds to a turn's bill: mean tokens per turn as the calls "
        "reported them (both count with the tokenizer; the stand-in counts the request's "
        "messages as JSON, a little more than the prompt), and "
        f"their price for `{PRICED_MODEL}` by `billing.prices.model_cost` (USD). The second "
        "call sends the whole prompt again, plus the first answer and the roll results, so "
        "its input grows with the prompt (up to `DM_PROMPT_TOKEN_BUDGET`, 6,000 tokens, in a "
        "long campaign).",
        "",
        "| DM | turn | prompt | input / turn | output / turn | USD / turn | USD / 1,000 turns |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    extras = []
    for label, kinds in (("fake", fake), (f"{m:g} s stand-in", standin)):
        for kind in KINDS:
            r = kinds[kind]
            tokens_in, tokens_out, usd = _turn_tokens(r)
            lines.append(
                f"| {label} | {kind} | {r['usage']['prompt_tokens']:.0f} | {tokens_in:.0f} | "
                f"{tokens_out:.0f} | {usd:.7f} | {usd * 1000:.4f} |"
            )
        second = kinds["two-step"]["usage"]["steps"][1]
        lines.append(
            f"| {label} | second step alone | - | {second['input']:.0f} | "
            f"{second['output']:.0f} | {second['usd']:.7f} | {second['usd'] * 1000:.4f} |"
        )
        one_usd = _turn_tokens(kinds["one-step"])[2]
        extras.append((label, second, one_usd))
    for label, second, one_usd in extras:
        lines.append("")
        lines.append(
            f"With the {label} DM the second step costs {second['input']:.0f} input and "
            f"{second['output']:.0f} output tokens, ${second['usd']:.7f} per turn at "
            f"`{PRICED_MODEL}` prices ({second['usd'] / one_usd:.0%} of a one-step turn's "
            f"${one_usd:.7f})."
        )
    return lines


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child(sys.argv[sys.argv.index("--child") + 1])
    elif "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
