"""Prompt tokens per turn, turn 1 to 2,000, with the campaign's memory beside the naive
prompt that carries the whole history.

A scripted campaign plays on the fake model in a scratch SQLite database, every turn
through `turn_run` with the memory tasks run after it as in production (the
`events_committed` hook; tasks run inline here). For each turn:
- memory: the tokens of the prompt the turn really sent (state, layered summaries, the
  events after the last summary, lore passages, NPC memories; DM_PROMPT_TOKEN_BUDGET),
- naive: the same prompt without memory and without a budget, carrying every event of
  the log the way the prompt renders recent events.
Both counted with the same tokenizer (DM_TOKENIZER).

Writes docs/memory_prompt_tokens.png (matplotlib) and prints a markdown section.
Run: `python -m bench.memory_prompt_tokens` (BENCH_MEMORY_TURNS, default 2000; bench/run.py
runs it with --json).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, machine

TURNS = int(os.environ.get("BENCH_MEMORY_TURNS", "2000"))
PNG = ROOT / "docs" / "memory_prompt_tokens.png"
ENV = {
    "DJANGO_SETTINGS_MODULE": "rpgai.settings",
    "LOG_LEVEL": "WARNING",
    "TTS_PROVIDER": "none",
    "DM_STREAM": "0",
    # Turns back to back, faster than any table plays; spend is not measured here.
    "MODEL_CALLS_PER_USER_PER_MINUTE": "100000000",
    "MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE": "100000000",
    "BILLING_DEFAULT_DAILY_CAP_USD": "1000000",
    # The default cap may not pass the ceiling (billing's system check refuses to start).
    "BILLING_MAX_DAILY_CAP_USD": "1000000",
}
ROUTINE = [
    "I attack the goblin",
    "I search the old chest",
    "I look around the common room",
    "I sneak past the sleeping guard",
    "I study the markings on the wall",
    "I listen at the cellar door",
    "I ask the innkeeper about the road north",
    "I light the rusty lantern",
    "I thank the innkeeper for the stew",
]
GIVEN = ["Aldo", "Bria", "Cato", "Dunya", "Efrem", "Galen", "Hesper", "Jorund", "Katrin", "Lio"]
PLACES = ["Vell", "Marsh", "Crag", "Dune", "Fjord", "Oak", "Brine", "Moor", "Ash", "Reed"]


def script(turn: int) -> str:
    if turn == 3:
        return "I greet the innkeeper"
    if turn % 7 == 0:  # a new face now and then: NPCs pile up as in a real campaign
        k = turn // 7
        return f"I greet the pilgrim {GIVEN[k % 10]} of {PLACES[(k // 10) % 10]} {k // 100 or ''}"
    return ROUTINE[turn % len(ROUTINE)]


def play(turns: int) -> list[tuple[int, int, int, int]]:
    """(turn, memory prompt tokens, naive prompt tokens, events left out) for each turn:
    left out are the events after the last summary that the budget kept out of the
    prompt (told neither by a summary nor verbatim)."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from campaigns.selectors import events_after, membership_get
    from campaigns.services import campaign_create, campaign_join, player_action_submit
    from llm.tokens import count_tokens
    from orchestrator.prompt import RecentEvent, _as_data, _event_for_prompt, prompt_build
    from orchestrator.receivers import turns_deferred
    from orchestrator.selectors import turn_context_get, turn_owed
    from orchestrator.services import turn_run

    users = get_user_model()
    gm = users.objects.create_user(username="bench-gm", password="x")
    alice = users.objects.create_user(username="bench-alice", password="x")
    campaign = campaign_create(
        name="The Long Road",
        creator=gm,
        scene={"location": "The Drowned Lantern inn", "description": "Rain on the shutters."},
    )
    campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)

    history_tokens = 0  # every event so far, rendered as the prompt renders recent events
    seen_seq = 0
    rows = []
    started = time.monotonic()
    for turn in range(1, turns + 1):
        with turns_deferred():
            player_action_submit(membership=membership, action_id=uuid.uuid4(), text=script(turn))
        answered, through = turn_owed(campaign_id=campaign.id)
        context = turn_context_get(
            campaign_id=campaign.id, answered_seq=answered, through_seq=through
        )
        this_turn = {a.seq for a in context.actions}
        # The naive prompt: no memory, no budget; its history is added up incrementally.
        bare = prompt_build(
            context=dataclasses.replace(context, recent=[], memory=None), budget=10**9
        )
        for event in events_after(campaign_id=campaign.id, after_seq=seen_seq, limit=1000):
            seen_seq = event.seq
            if event.seq in this_turn:
                continue
            item = _event_for_prompt(
                RecentEvent(
                    seq=event.seq,
                    type=event.type,
                    actor_kind=event.actor_kind,
                    actor_user_id=str(event.actor_user_id) if event.actor_user_id else None,
                    payload=event.payload,
                ),
                context.state,
            )
            if item is not None:
                history_tokens += count_tokens(_as_data(item)) + 1
        naive = bare.tokens + history_tokens + 20  # + the RECENT EVENTS block's fences
        # The turn's own prompt is built from the same context: what it left out.
        left_out = prompt_build(
            context=context, budget=settings.DM_PROMPT_TOKEN_BUDGET
        ).events_left_out
        outcome = turn_run(campaign_id=campaign.id)
        assert outcome is not None and outcome.failed_code is None, (turn, outcome)
        rows.append((turn, outcome.prompt_tokens, naive, left_out))
        if turn % 100 == 0:
            print(
                f"turn {turn}: memory {outcome.prompt_tokens}, naive {naive} "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(f"budget {settings.DM_PROMPT_TOKEN_BUDGET}", file=sys.stderr)
    return rows


# A turn's prompt rises and falls with the summaries: a chunk summarized takes some forty
# events out of it at once, a merge makes four summaries one. So "the prompt at turn N" is
# the median of the WINDOW turns up to N (a single turn lands anywhere in that saw-tooth:
# 4729 to 5938 tokens between turns 40 and 60 on 2026-12-07); single turns are shown too.
WINDOW = 20
GOAL_RATIO = 1.2


def plot(rows: list[tuple[int, int, int, int]], budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    ax.plot(turns, [r[2] for r in rows], label="naive: the whole history", color="#c0392b")
    ax.plot(
        turns, [r[1] for r in rows], label="with memory (summaries, lore, NPCs)", color="#2471a3"
    )
    ax.axhline(budget, color="#7f8c8d", linestyle=":", linewidth=1, label=f"budget {budget}")
    ax.set_yscale("log")
    ax.set_xlabel("turn")
    ax.set_ylabel("prompt tokens (cl100k_base, log scale)")
    ax.set_title("Prompt tokens per DM turn, fake model, one player")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    PNG.parent.mkdir(exist_ok=True)
    fig.savefig(PNG)
    plt.close(fig)


def _window(rows: list[tuple[int, int, int, int]], turn: int, column: int) -> float:
    import statistics

    return statistics.median(r[column] for r in rows[max(0, turn - WINDOW) : turn])


def run(turns: int = TURNS) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, **ENV, DATABASE_URL=f"sqlite:///{scratch}/bench.sqlite3")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
        )
        os.environ.update(env)
        started = time.monotonic()
        rows = play(turns)
        seconds = time.monotonic() - started
    from django.conf import settings

    budget = settings.DM_PROMPT_TOKEN_BUDGET
    plot(rows, budget)
    marks = [t for t in (1, 10, 50, 100, 500, 1000, 1500, 2000) if t <= len(rows)]
    last = len(rows)
    return {
        "turns": last,
        "seconds": seconds,
        "budget": budget,
        "marks": {
            t: {
                "memory": rows[t - 1][1],
                "naive": rows[t - 1][2],
                "window": _window(rows, t, 1),
                "left_out": _window(rows, t, 3),
            }
            for t in sorted({*marks, last})
        },
        "max": max(r[1] for r in rows),
        "left_out_max": max(r[3] for r in rows),
    }


def markdown(r: dict) -> list[str]:
    marks = {int(t): m for t, m in r["marks"].items()}
    last = r["turns"]
    lines = [
        "## Prompt tokens per turn with memory, beside the whole history",
        "",
        f"Measured on {machine()} by `python -m bench.memory_prompt_tokens`: a scripted "
        f"campaign of {last} turns on the fake model (SQLite), memory tasks after every "
        f"turn, {r['seconds']:.0f} s; DM_PROMPT_TOKEN_BUDGET {r['budget']}. The median is "
        f"that of the {WINDOW} turns up to the one named (a single turn's prompt rises and "
        "falls as summaries are made); left out: events after the last summary that the "
        f"budget kept out of the prompt (median). Plot: [{PNG.name}]({PNG.name}).",
        "",
        "| turn | with memory | median | naive (whole history) | ratio | left out |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for turn, m in sorted(marks.items()):
        lines.append(
            f"| {turn} | {m['memory']} | {m['window']:.0f} | {m['naive']} | "
            f"{m['naive'] / m['memory']:.1f} | {m['left_out']:.0f} |"
        )
    if 50 in marks and last > 50:
        median = marks[last]["window"] / marks[50]["window"]
        single = marks[last]["memory"] / marks[50]["memory"]
        verdict = "met" if median <= GOAL_RATIO else "**missed**"
        lines += [
            "",
            f"With memory the prompt at turn {last} is {median:.2f} times the prompt at turn 50 "
            f"(medians; goal ≤ {GOAL_RATIO}: {verdict}); single turns {last} and 50: "
            f"{single:.2f} times. The largest prompt over all turns is {r['max']} tokens; "
            f"at most {r['left_out_max']} events were left out of one prompt.",
        ]
    return lines


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
