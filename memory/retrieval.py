"""Full-text retrieval of passages with the database's own engine.

PostgreSQL ranks with `ts_rank` over the generated `tsvector` (heading weighted above
text; GIN index); SQLite with FTS5's `bm25`. Both get the same query: the words of the
text, stop words dropped, any of them may match (a turn's action is not a search
phrase), and scores are mapped to 0..1 (higher is better; comparable within one
backend only). Every query is filtered by campaign first: a campaign never sees
another's passages.

Embeddings are not used: the offline MiniLM package needs sentence-transformers and
PyTorch (gigabytes), which this project does not carry.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.db import connection

from .documents import document_source
from .models import Document, Passage

QUERY_TERMS_MAX = 32
RESULTS_MAX = 20

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
    score: float
    gm_only: bool = False  # from a document the players may not read

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
) -> list[PassageHit]:
    """The campaign's passages that best match `query`, best first."""
    terms = query_terms(query)
    limit = max(1, min(int(limit), RESULTS_MAX))
    if not terms:
        return []
    campaign_value = Passage._meta.get_field("campaign").get_db_prep_value(
        uuid.UUID(str(campaign_id)), connection
    )
    if connection.vendor == "postgresql":
        ranked = _search_postgresql(campaign_value, terms, limit, include_gm_only)
    elif connection.vendor == "sqlite":
        ranked = _search_sqlite(campaign_value, terms, limit, include_gm_only)
    else:  # no full-text index on this database
        return []
    if not ranked:
        return []
    passages = Passage.objects.select_related("document").in_bulk([pid for pid, _ in ranked])
    hits = []
    for pid, score in ranked:
        passage = passages.get(pid)
        if passage is None or str(passage.campaign_id) != str(campaign_id):
            continue  # deleted meanwhile; the campaign check is the backstop of the SQL's
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
                gm_only=passage.document.visibility != Document.Visibility.ALL,
            )
        )
    return hits


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
