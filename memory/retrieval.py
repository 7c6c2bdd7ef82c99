"""Retrieval of passages: full text with the database's own engine, vectors (meaning)
with numpy, and the two fused.

Full text: PostgreSQL ranks with `ts_rank` over the generated `tsvector` (heading
weighted above text; GIN index); SQLite with FTS5's `bm25`. Both get the same query: the
words of the text, stop words dropped, any of them may match (a turn's action is not a
search phrase), and scores are mapped to 0..1 (higher is better; comparable within one
backend only).

Vectors: the query embedded by the configured model (memory.embeddings; the process
loads it once) against the campaign's passage vectors (memory.vectors), cosine
similarity, none below MEMORY_VECTOR_MIN_SIMILARITY. Passages not embedded yet (a
document just uploaded) are found by full text only. With MEMORY_EMBEDDINGS off, or
when the model cannot run, `hybrid` is full text alone.

Hybrid (the default): weighted reciprocal rank fusion of the two rankings (a passage
scores weight/(RRF_K + rank) in each list it is in), which needs no calibration between
ts_rank, bm25 and cosine scales; the weights were measured on the question set
(docs/memory.md). Reported scores are mapped to 0..1: 1 is first in both lists.

Every search is filtered by campaign first (SQL, and the vector matrix is the
campaign's own): a campaign never sees another's passages. Players search only the
documents everyone may read (`include_gm_only=False`).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
from django.conf import settings
from django.db import connection

from . import embeddings, vectors
from .documents import document_source
from .models import Document, Passage

log = logging.getLogger(__name__)

QUERY_TERMS_MAX = 32
RESULTS_MAX = 20
# Each method's candidates before fusion: a passage ranked low by one method and high by
# the other still makes the fused list.
CANDIDATES = 30
# Weighted reciprocal rank fusion: a passage scores weight/(RRF_K + rank) in each ranking
# it is in. Measured on the question set (docs/memory.md, "Retrieval quality"): the
# classic k=60 with equal weights lets full text's matches on common words ("river",
# "pay") bury the passages meaning found first (recall@1 0.09 against 0.65 by vectors
# alone), while vectors alone miss exact names and rare words that full text finds.
# With k=0.5 and full text at 0.35, full text's first passage is worth about meaning's
# fourth: it lifts an exact match that meaning also found, without overruling meaning.
RRF_K = 0.5
FULLTEXT_WEIGHT = 0.35
VECTOR_WEIGHT = 1.0
# How much the context (a turn's scene) pulls the query's vector: the query's vector
# plus this times the context's, normalized. The action stays what is searched ("I
# grapple the ogre" at "The Drowned Lantern inn" still finds Grappling, not "Drowned
# Magic"), the scene tips the balance between passages about as near.
CONTEXT_WEIGHT = 0.35
# A query embedded is at most this long (the model reads 256 tokens at most anyway).
QUERY_EMBED_MAX_CHARS = 2000

Method = Literal["hybrid", "fulltext", "vector"]
METHODS: tuple[str, ...] = ("hybrid", "fulltext", "vector")

# Words that say nothing about which passage is meant (English; PostgreSQL's own
# dictionary drops these too, SQLite's FTS5 would not).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves let lets im ill id try tries trying want wants""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


@dataclass(frozen=True)
class PassageHit:
    passage_id: int
    document_id: uuid.UUID
    document_title: str
    heading: str
    ordinal: int
    text: str
    tokens: int
    score: float  # the method's score, 0..1 for hybrid and full text, cosine for vector
    gm_only: bool = False  # from a document the players may not read
    fulltext_score: float | None = None  # None: full text did not find it (or not asked)
    vector_score: float | None = None  # cosine similarity; None: vectors did not find it

    @property
    def source(self) -> str:
        return document_source(self.document_title, self.heading)


def query_terms(text: str) -> list[str]:
    """The searchable words of a text, lower case, in order, each once."""
    terms: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group(0).replace("'", "")
        if len(word) < 2 or word in STOP_WORDS or word in terms:
            continue
        terms.append(word[:40])
        if len(terms) >= QUERY_TERMS_MAX:
            break
    return terms


def passages_search(
    *,
    campaign_id: uuid.UUID | str,
    query: str,
    limit: int = 5,
    include_gm_only: bool = False,
    method: Method = "hybrid",
    context: str = "",
) -> list[PassageHit]:
    """The campaign's passages that best match `query`, best first, by `method`:
    `hybrid` (full text and vectors fused), `fulltext` or `vector`. A query with no
    searchable word ("the of and") finds nothing by any method.

    `context` says where the query is asked (a turn's scene): it joins the query's
    meaning (vectors) but not its words (full text), so that the place's name alone
    never outranks what the player does ("Drowned" of "The Drowned Lantern inn" would
    match a section "Drowned Magic" better than "grapple the ogre" matches "Grappling")."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    terms = query_terms(query)
    limit = max(1, min(int(limit), RESULTS_MAX))
    if not terms:
        return []
    fulltext: list[tuple[int, float]] = []
    vector: list[tuple[int, float]] | None = []
    if method in ("hybrid", "fulltext"):
        fulltext = _fulltext_ranked(
            campaign_id, terms, CANDIDATES if method == "hybrid" else limit, include_gm_only
        )
    if method in ("hybrid", "vector"):
        vector = _vector_ranked(
            campaign_id,
            query,
            context.strip(),
            CANDIDATES if method == "hybrid" else limit,
            include_gm_only,
        )
    if method == "fulltext" or (method == "hybrid" and vector is None):
        ranked = fulltext  # hybrid without a model (off, or failing) is full text
    elif method == "vector":
        ranked = vector or []
    else:
        ranked = fused((fulltext, FULLTEXT_WEIGHT), (vector or [], VECTOR_WEIGHT))[:limit]
    if not ranked:
        return []
    fulltext_scores, vector_scores = dict(fulltext), dict(vector or [])
    passages = (
        Passage.objects.select_related("document")
        .defer("embedding")
        .in_bulk([pid for pid, _ in ranked])
    )
    hits = []
    for pid, score in ranked:
        passage = passages.get(pid)
        if passage is None or str(passage.campaign_id) != str(campaign_id):
            continue  # deleted meanwhile; the campaign check is the backstop of the SQL's
        gm_only = passage.document.visibility != Document.Visibility.ALL
        if gm_only and not include_gm_only:
            continue  # the backstop of the queries' visibility filters
        hits.append(
            PassageHit(
                passage_id=passage.id,
                document_id=passage.document_id,
                document_title=passage.document.title,
                heading=passage.heading,
                ordinal=passage.ordinal,
                text=passage.text,
                tokens=passage.tokens,
                score=round(float(score), 4),
                gm_only=gm_only,
                fulltext_score=_rounded(fulltext_scores.get(pid)),
                vector_score=_rounded(vector_scores.get(pid)),
            )
        )
    return hits


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(float(score), 4)


def fused(
    *rankings: tuple[list[tuple[int, float]], float], k: float = RRF_K
) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion of (ranking, weight) pairs, each ranking (passage
    id, score) best first. Each fused score is divided by the best possible (first in
    every ranking), so it lies in 0..1. Ties go to the passage ranked better by the
    earlier ranking, then to the smaller id."""
    total: dict[int, float] = {}
    first_rank: dict[int, tuple[int, int]] = {}
    for n, (ranking, weight) in enumerate(rankings):
        for rank, (pid, _) in enumerate(ranking, start=1):
            total[pid] = total.get(pid, 0.0) + weight / (k + rank)
            first_rank.setdefault(pid, (n, rank))
    best = sum(weight for _, weight in rankings) / (k + 1)
    order = sorted(total, key=lambda pid: (-total[pid], first_rank[pid], pid))
    return [(pid, total[pid] / best) for pid in order]


def _fulltext_ranked(
    campaign_id: uuid.UUID | str, terms: list[str], limit: int, include_gm_only: bool
) -> list[tuple[int, float]]:
    campaign_value = Passage._meta.get_field("campaign").get_db_prep_value(
        uuid.UUID(str(campaign_id)), connection
    )
    if connection.vendor == "postgresql":
        return _search_postgresql(campaign_value, terms, limit, include_gm_only)
    if connection.vendor == "sqlite":
        return _search_sqlite(campaign_value, terms, limit, include_gm_only)
    return []  # no full-text index on this database


def _vector_ranked(
    campaign_id: uuid.UUID | str, query: str, context: str, limit: int, include_gm_only: bool
) -> list[tuple[int, float]] | None:
    """The campaign's passages nearest the query's meaning (pulled towards `context`);
    None when embeddings are off or the model cannot run here (retrieval goes on with
    full text)."""
    model_id = embeddings.embedder_model_id()
    if model_id is None:
        return None  # embeddings are off
    if not vectors.campaign_has_vectors(campaign_id=campaign_id, model_id=model_id):
        # Nothing of this campaign is embedded (no lore, or not indexed yet): no query to
        # embed, and no model to load for it (a turn's query costs 8-20 ms of CPU).
        return []
    try:
        model = embeddings.embedder()
        if model is None:
            return None
        query_vector = model.embed([query[:QUERY_EMBED_MAX_CHARS]])[0]
        if context:
            query_vector = query_vector + CONTEXT_WEIGHT * _context_vector(
                model, context[:QUERY_EMBED_MAX_CHARS]
            )
            query_vector = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
    except Exception:
        # A search must answer: without the model it is a full-text search.
        log.exception("the query could not be embedded; searching by full text only")
        return None
    return vectors.vector_ranked(
        campaign_id=campaign_id,
        query_vector=query_vector,
        model_id=model.model_id,
        limit=limit,
        include_gm_only=include_gm_only,
        min_similarity=float(getattr(settings, "MEMORY_VECTOR_MIN_SIMILARITY", 0.2)),
    )


_context_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_context_lock = threading.Lock()
CONTEXT_VECTORS_KEPT = 256


def _context_vector(model: embeddings.Embedder, text: str) -> np.ndarray:
    """A context's vector, kept: a scene stays the same for many turns."""
    key = (model.model_id, text)
    with _context_lock:
        found = _context_vectors.get(key)
        if found is not None:
            _context_vectors.move_to_end(key)
            return found
    vector = model.embed([text])[0]
    with _context_lock:
        _context_vectors[key] = vector
        while len(_context_vectors) > CONTEXT_VECTORS_KEPT:
            _context_vectors.popitem(last=False)
    return vector


def _search_postgresql(
    campaign_value: object, terms: list[str], limit: int, include_gm_only: bool
) -> list[tuple[int, float]]:
    # Terms are letters and digits only, so joining them with | is a valid tsquery.
    tsquery = " | ".join(terms)
    sql = """
        SELECT p.id, ts_rank(p.search, q, 1 | 32) AS score
        FROM memory_passage p
        JOIN memory_document d ON d.id = p.document_id,
             to_tsquery('english'::regconfig, %s) q
        WHERE p.campaign_id = %s AND p.search @@ q AND (%s OR d.visibility = %s)
        ORDER BY score DESC, p.id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [tsquery, campaign_value, include_gm_only, Document.Visibility.ALL, limit]
        )
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def _search_sqlite(
    campaign_value: object, terms: list[str], limit: int, include_gm_only: bool
) -> list[tuple[int, float]]:
    # Each term quoted: FTS5 reads it as a string to tokenize, never as query syntax.
    match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    sql = """
        SELECT p.id, -bm25(memory_passage_fts, 4.0, 1.0) AS score
        FROM memory_passage_fts
        JOIN memory_passage p ON p.id = memory_passage_fts.rowid
        JOIN memory_document d ON d.id = p.document_id
        WHERE memory_passage_fts MATCH %s AND p.campaign_id = %s AND (%s OR d.visibility = %s)
        ORDER BY score DESC, p.id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [match, campaign_value, include_gm_only, Document.Visibility.ALL, limit]
        )
        # bm25 is unbounded (and tiny for a small corpus): map it to 0..1 like ts_rank's 32.
        return [
            (row[0], max(0.0, float(row[1])) / (1 + max(0.0, float(row[1]))))
            for row in cursor.fetchall()
        ]
