"""Retrieval quality on the question set (memory/evalset): recall@1, recall@5, MRR and
milliseconds per query for each search method, full text, vectors and hybrid.

The lore is uploaded to a fresh campaign through the GM's upload service (passages cut
and embedded as in play; tasks run in this process), then every question of the set is
searched as a player searches, by each method of `memory.evaluation.METHODS`. Quality
is deterministic; the time per query (the query's embedding included) is the median of
BENCH_RETRIEVAL_RUNS passes over the whole set, after one warm-up query per method (the
model's load is not a query's cost).

Embedded (a scratch SQLite database: FTS5 bm25) by default; with --postgres on a fresh
PostgreSQL database (ts_rank). Full text ranks differently on the two, so both are shown.
`python -m bench.memory_retrieval [--postgres] [--json]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, fresh_pg_database, median

RUNS = int(os.environ.get("BENCH_RETRIEVAL_RUNS", "3"))
ENV = {
    "DJANGO_SETTINGS_MODULE": "rpgai.settings",
    "LOG_LEVEL": "WARNING",
    "TTS_PROVIDER": "none",
    "REDIS_URL": "",  # tasks (the passages' embedding) run in this process
}
GOALS = "hybrid recall@5 ≥ 0.95 and recall@1 ≥ 0.8 (issue 22)"


def measure() -> dict[str, dict[str, Any]]:
    """{method: figures} for the database this process is set up with."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from campaigns.services import campaign_create
    from memory import evaluation

    gm = get_user_model().objects.create_user(username=f"bench-gm-{uuid.uuid4().hex[:8]}")
    campaign = campaign_create(name="Brinemouth", creator=gm)
    documents = evaluation.lore_ingest(campaign_id=campaign.id, uploaded_by=gm)
    questions = evaluation.questions_load()
    answers = evaluation.answers_resolve(questions, documents)
    results: dict[str, dict[str, Any]] = {}
    for name, search in evaluation.METHODS.items():
        search(campaign.id, "warm-up: the model loads here, not in a timed query", 1)
        passes = [
            evaluation.method_evaluate(
                name, campaign_id=campaign.id, questions=questions, answers=answers
            )
            for _ in range(max(1, RUNS))
        ]
        first = passes[0]
        results[name] = {
            "questions": first.questions,
            "recall_at_1": first.recall_at_1,
            "recall_at_5": first.recall_at_5,
            "mrr": first.mrr,
            "ms_per_query": median([p.ms_per_query for p in passes]),
        }
        # The test's fixed subset and the rest apart: what was tuned on the whole set
        # shows whether it holds on each part.
        for part, chosen in (("subset", True), ("rest", False)):
            ranks = [r for q, r in zip(questions, first.ranks, strict=True) if q.subset is chosen]
            score = evaluation.scores(name, ranks, 0.0)
            results[name][part] = {
                "questions": score.questions,
                "recall_at_1": score.recall_at_1,
                "recall_at_5": score.recall_at_5,
                "mrr": score.mrr,
            }
        sub, rest = results[name]["subset"], results[name]["rest"]
        print(
            f"{name}: recall@1 {first.recall_at_1:.2f}, recall@5 {first.recall_at_5:.2f}, "
            f"MRR {first.mrr:.2f}, {results[name]['ms_per_query']:.1f} ms per query "
            f"({first.questions} questions; subset of {sub['questions']}: "
            f"{sub['recall_at_1']:.2f} / {sub['recall_at_5']:.2f} / {sub['mrr']:.2f}, "
            f"rest: {rest['recall_at_1']:.2f} / {rest['recall_at_5']:.2f} / {rest['mrr']:.2f})",
            flush=True,
        )
    return results


def run(postgres: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
    """{database label: {method: figures}}, measured in a child process (Django is set
    up once per process, for one database)."""
    label = "PostgreSQL" if postgres else "SQLite"
    with tempfile.TemporaryDirectory() as scratch:
        if postgres:
            url = fresh_pg_database()
        else:
            url = f"sqlite:///{scratch}/bench.sqlite3"
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v0"],
                cwd=ROOT,
                env={**os.environ, **ENV, "DATABASE_URL": url},
                check=True,
            )
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory_retrieval", "--measure"],
            cwd=ROOT,
            env={**os.environ, **ENV, "DATABASE_URL": url},
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        print(done.stdout, done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"bench.memory_retrieval on {label} failed")
    lines = done.stdout.splitlines()
    print(*(f"{label} {x}" for x in lines if not x.startswith("MEASURED ")), sep="\n")
    [line] = [x for x in lines if x.startswith("MEASURED ")]
    return {label: json.loads(line.removeprefix("MEASURED "))}


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    any_db = next(iter(results.values()))
    n = next(iter(any_db.values()))["questions"]
    lines = [
        "## Retrieval quality on the question set",
        "",
        f"`python -m bench.memory_retrieval`: the {n} questions of memory/evalset, each worded "
        "unlike the lore passage that answers it, searched as a player searches; recall@k is "
        "the share of questions whose answer is among the first k results, MRR the mean of "
        "1/rank (0 past rank 10); milliseconds per query the median of "
        f"{RUNS} passes, the query's embedding included. Goals: {GOALS}.",
        "",
        "Each cell is recall@1 / recall@5 / MRR; the test's fixed subset and the other "
        "questions apart.",
        "",
        f"| database | method | all {n} | subset | rest | ms per query |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]

    def cell(r: dict[str, Any]) -> str:
        return f"{r['recall_at_1']:.2f} / {r['recall_at_5']:.2f} / {r['mrr']:.2f}"

    for database, methods in results.items():
        for method, r in methods.items():
            lines.append(
                f"| {database} | {method} | {cell(r)} | {cell(r['subset'])} | "
                f"{cell(r['rest'])} | {r['ms_per_query']:.1f} |"
            )
    return lines


if __name__ == "__main__":
    if "--measure" in sys.argv:  # the child process run() starts
        print("MEASURED " + json.dumps(measure()))
    else:
        figures = run(postgres="--postgres" in sys.argv)
        if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
            print("BENCH_JSON " + json.dumps(figures))
        else:
            print("\n".join(markdown(figures)))
