"""Offline embeddings: indexing cost, search latency at 10,000 passages, worker memory.

- Indexing: 1,000 passages of about 250 tokens (MiniLM's WordPiece) embedded and stored
  through `memory.vectors.passages_embed`, the task's own path (one onnxruntime thread),
  in a scratch PostgreSQL database. Floor: the bare model (`session.run` on the same
  token ids, one text at a time, no pooling, no database) on the first FLOOR_PASSAGES.
- Search: one campaign of 10,000 passages (10 documents) with vectors; a query embedded
  and searched through `passages_search` (hybrid: full text, vectors, fusion, rows read),
  median of QUERIES queries once the campaign's matrix is held, and the first (cold)
  one. Floor: the query's embedding alone plus the numpy product over the same matrix.
  The vectors stored for this part are random unit vectors: the cost of a search does
  not depend on what they mean, and embedding 10,000 passages would take half an hour.
- Memory: a fresh process that sets Django up and imports the memory tasks (as a worker
  does), then loads the embedder and embeds a batch of 16 long passages: its peak RSS
  (VmHWM) before and after. Floor: the peak once onnxruntime and tokenizers are imported,
  before the model is loaded (the runtime's own share).

Run: `python -m bench.memory_embeddings` (bench/run.py runs it with --json).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, fresh_pg_database

PASSAGES = int(os.environ.get("BENCH_EMBED_PASSAGES", "1000"))
FLOOR_PASSAGES = int(os.environ.get("BENCH_EMBED_FLOOR_PASSAGES", "200"))
SEARCH_PASSAGES = int(os.environ.get("BENCH_SEARCH_PASSAGES", "10000"))
QUERIES = int(os.environ.get("BENCH_SEARCH_QUERIES", "30"))
GOAL_INDEX_SECONDS = 120
GOAL_QUERY_MS = 50
GOAL_MEMORY_MIB = 250

WORDS = """harbour lantern tide ferry bell temple smuggler guild warden curfew lighthouse
fisher salt net storm wreck anchor chapel widow merchant coin debt oath relic shrine
drowned keeper beacon rope cellar market alley tavern captain crew galley cargo brandy
silver island marsh fog reef gull eel oyster tar plank mast sail rudder chart compass
priestess sister vigil offering prayer ghost haunting curse charm blessing sanctuary
street bridge gate tower wall dock quay pier warehouse toll tax ledger seal letter
secret rumour stranger traveller pilgrim guard thief spy noble council mayor festival
winter spring autumn summer night dawn dusk fire smoke ash iron copper bronze""".split()  # noqa: SIM905
VERBS = """keeps guards hides sells buys remembers forgets tolls burns drowns sails rows
carries watches whispers trades owes pays blesses curses mends opens closes""".split()  # noqa: SIM905


def passage_text(rng: random.Random, chars: int = 1340) -> str:
    """Lore-like English of about 250 WordPiece tokens."""
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
        words.insert(rng.randint(1, len(words) - 1), rng.choice(VERBS))
        sentences.append("The " + " ".join(words) + ".")
    return " ".join(sentences)


def _setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
    os.environ["TASKS_IN_PROCESS"] = "1"
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def _campaign(name: str):
    from django.contrib.auth import get_user_model

    from campaigns.services import campaign_create

    gm = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}")
    return gm, campaign_create(name=name, creator=gm)


def _documents(campaign, gm, texts: list[str], per_document: int, vectors=None) -> None:
    """Documents and passages written directly (no embedding task is queued)."""
    import hashlib

    from memory.embeddings import MiniLmEmbedder, vector_bytes
    from memory.models import Document, Passage

    for start in range(0, len(texts), per_document):
        chunk = texts[start : start + per_document]
        body = "\n\n".join(chunk)
        document = Document.objects.create(
            campaign=campaign,
            title=f"Lore {start // per_document + 1}",
            content_type="text/markdown",
            text=body,
            size_bytes=len(body),
            sha256=hashlib.sha256(f"{campaign.id}{start}".encode()).hexdigest(),
            uploaded_by=gm,
        )
        Passage.objects.bulk_create(
            Passage(
                document=document,
                campaign=campaign,
                ordinal=n,
                heading=f"Lore {start // per_document + 1} / Section {n}",
                text=text,
                tokens=250,
                embedding=None if vectors is None else vector_bytes(vectors[start + n - 1]),
                embedding_model=None if vectors is None else MiniLmEmbedder.model_id,
            )
            for n, text in enumerate(chunk, start=1)
        )


def indexing(rng: random.Random) -> dict[str, float]:
    import numpy as np

    from memory.embeddings import embedder
    from memory.vectors import passage_text as embedded_text
    from memory.vectors import passages_embed

    gm, campaign = _campaign("Indexing")
    texts = [passage_text(rng) for _ in range(PASSAGES)]
    _documents(campaign, gm, texts, per_document=1000)
    model = embedder()  # loaded before the clock: the worker loads it once
    model.embed(["warm up"])
    tokens = [len(e.ids) for e in model.tokenizer.encode_batch(texts)]

    started = time.perf_counter()
    run = passages_embed(campaign_id=campaign.id)
    seconds = time.perf_counter() - started
    assert run.embedded == PASSAGES and run.remaining == 0

    # Floor: the bare model on the same ids, one text at a time.
    sample = [embedded_text(f"Lore 1 / Section {n}", t) for n, t in enumerate(texts, start=1)]
    encodings = model.tokenizer.encode_batch(sample[:FLOOR_PASSAGES])
    started = time.perf_counter()
    for encoding in encodings:
        ids = np.asarray([encoding.ids], dtype=np.int64)
        model.session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids},
        )
    floor = (time.perf_counter() - started) / len(encodings)
    return {
        "passages": PASSAGES,
        "tokens_median": statistics.median(tokens),
        "index_seconds": seconds,
        "ms_per_passage": 1000 * seconds / PASSAGES,
        "floor_ms_per_passage": 1000 * floor,
    }


def search(rng: random.Random) -> dict[str, float]:
    import numpy as np

    from memory.embeddings import embedder
    from memory.retrieval import passages_search
    from memory.vectors import matrices_forget, vector_ranked

    gm, campaign = _campaign("Search")
    vectors = np.random.default_rng(7).standard_normal((SEARCH_PASSAGES, 384)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [passage_text(rng, chars=600) for _ in range(SEARCH_PASSAGES)]
    _documents(campaign, gm, texts, per_document=1000, vectors=vectors)
    model = embedder()
    queries = [
        f"I ask the {rng.choice(WORDS)} about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}"
        for _ in range(QUERIES)
    ]
    matrices_forget()
    started = time.perf_counter()
    cold_hits = passages_search(campaign_id=campaign.id, query=queries[0], limit=5)
    cold = time.perf_counter() - started
    assert cold_hits

    def timed(fn) -> float:
        times = []
        for q in queries:
            started = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    hybrid = timed(lambda q: passages_search(campaign_id=campaign.id, query=q, limit=5))
    fulltext = timed(
        lambda q: passages_search(campaign_id=campaign.id, query=q, limit=5, method="fulltext")
    )
    embed = timed(lambda q: model.embed([q]))
    query_vector = model.embed([queries[0]])[0]
    vector = timed(
        lambda q: vector_ranked(
            campaign_id=campaign.id,
            query_vector=query_vector,
            model_id=model.model_id,
            limit=30,
            include_gm_only=False,
            min_similarity=0.2,
        )
    )
    product = timed(lambda q: np.argpartition(-(vectors @ query_vector), 30)[:30])
    return {
        "search_passages": SEARCH_PASSAGES,
        "hybrid_ms": hybrid,
        "cold_ms": 1000 * cold,
        "fulltext_ms": fulltext,
        "embed_ms": embed,
        "vector_ms": vector,
        "floor_ms": embed + product,
    }


MEMORY_PROBE = """
import os, sys, json
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
import django
django.setup()
import memory.tasks  # what a worker imports
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
before = hwm()
import onnxruntime, tokenizers  # the runtime alone: what any ONNX embedder would add
runtime = hwm()
from memory.embeddings import embedder
model = embedder()
model.embed([("The harbour lantern keeps the drowned bell and the tide. " * 30)] * 16)
print(json.dumps({"before_mib": before, "runtime_mib": runtime, "after_mib": hwm()}))
"""


def memory_added() -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        **probe,
        "added_mib": probe["after_mib"] - probe["before_mib"],
        "floor_added_mib": probe["runtime_mib"] - probe["before_mib"],
    }


def run() -> dict[str, float]:
    url = fresh_pg_database()
    _setup(url)
    from django.conf import settings

    settings.MEMORY_EMBEDDINGS = "minilm"
    rng = random.Random(22)
    result: dict[str, float] = {}
    result.update(indexing(rng))
    result.update(search(rng))
    result.update(memory_added())
    return result


def markdown(r: dict[str, float]) -> list[str]:
    def ok(good: bool) -> str:
        return "met" if good else "**missed**"

    return [
        "## Offline embeddings: indexing, search, memory",
        "",
        "all-MiniLM-L6-v2 (int8 ONNX, onnxruntime, one thread) as `memory.vectors` runs it, on "
        "PostgreSQL (bench/memory_embeddings.py). Indexing embeds and stores "
        f"{r['passages']:,.0f} passages of about {r['tokens_median']:.0f} tokens through the "
        "task's own path; its floor is the bare model on the same token ids. Search is one "
        f"query embedded and searched (hybrid) in a campaign of {r['search_passages']:,.0f} "
        "passages, median once the campaign's vectors are held in the process; its floor is "
        "the query's embedding plus the numpy product alone. Memory is the peak RSS a fresh "
        "worker process adds by loading the model and embedding a batch; its floor is what "
        "importing onnxruntime and tokenizers alone adds, before any model is loaded.",
        "",
        "| measure | result | floor | goal | |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| index {r['passages']:,.0f} passages | {r['index_seconds']:.0f} s "
        f"({r['ms_per_passage']:.0f} ms each) | {r['floor_ms_per_passage']:.0f} ms each | "
        f"≤ {GOAL_INDEX_SECONDS} s | {ok(r['index_seconds'] <= GOAL_INDEX_SECONDS)} |",
        f"| one query, {r['search_passages']:,.0f} passages (hybrid) | {r['hybrid_ms']:.1f} ms | "
        f"{r['floor_ms']:.1f} ms | ≤ {GOAL_QUERY_MS} ms | {ok(r['hybrid_ms'] <= GOAL_QUERY_MS)} |",
        f"| … of which: embed the query | {r['embed_ms']:.1f} ms | | | |",
        f"| … vector ranking (held matrix) | {r['vector_ms']:.1f} ms | | | |",
        f"| … full text alone (same query) | {r['fulltext_ms']:.1f} ms | | | |",
        f"| first query (matrix read from the database) | {r['cold_ms']:.0f} ms | | | |",
        f"| worker memory added by the embedder | {r['added_mib']:.0f} MiB "
        f"({r['before_mib']:.0f} → {r['after_mib']:.0f} MiB peak) | "
        f"{r['floor_added_mib']:.0f} MiB | ≤ {GOAL_MEMORY_MIB} MiB | "
        f"{ok(r['added_mib'] <= GOAL_MEMORY_MIB)} |",
    ]


if __name__ == "__main__":
    if "--json" in sys.argv:  # bench/run.py runs each benchmark in its own process
        print("BENCH_JSON " + json.dumps(run()))
    else:
        print("\n".join(markdown(run())))
