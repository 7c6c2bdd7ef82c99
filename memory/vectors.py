"""The passages' vectors: computed in the background, scored per campaign with numpy.

Each passage stores its vector (float32 bytes, `Passage.embedding`) and the id of the
model that made it (`Passage.embedding_model`); vectors of another model are ignored
and made again. `passages_embed` fills them in batches, each committed on its own, so
the GM sees indexing progress and a restarted task goes on where the last one stopped.
It runs in the Celery task `memory.tasks.embed_passages` (the CPU worker's queue).

Search is brute force: the campaign's vectors as one matrix times the query's vector.
pgvector is not available on these machines (nor sqlite-vec), and at 10,000 passages a
campaign the product takes about a millisecond. The matrix is read from the database
once and kept in the process (`MEMORY_VECTOR_CACHE_MB` for all campaigns, least
recently used out first), under a version token in the shared cache that every write of
vectors renews: a process holding an older matrix reads it again. Visibility is not
part of the matrix: which documents the searcher may read is asked of the database at
each search, so a document the GM hides leaves players' searches at once.

One campaign's matrix holds that campaign's passages only (read with its id), and its
key in the process is the campaign's id: a campaign's vectors never score another's
passages.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q

from . import embeddings
from .conf import setting
from .models import Document, Passage

log = logging.getLogger(__name__)

# Passages embedded and committed together: progress moves by this much.
COMMIT_BATCH = 32
VERSION_SECONDS = 7 * 24 * 3600


def passage_text(heading: str, text: str) -> str:
    """What is embedded for a passage: its heading path says what the text is about."""
    return f"{heading}\n{text}" if heading else text


def _version_key(campaign_id: uuid.UUID | str) -> str:
    return f"memory:vectors:{campaign_id}"


def _version_renew(campaign_id: uuid.UUID | str) -> None:
    cache.set(_version_key(campaign_id), uuid.uuid4().hex, VERSION_SECONDS)


def _version(campaign_id: uuid.UUID | str) -> str | None:
    """The token of the campaign's vectors as last written; None if the cache keeps
    nothing (then the matrix is read at every search)."""
    key = _version_key(campaign_id)
    token = cache.get(key)
    if token is None:
        # Unknown (never written since the cache started, or evicted): a new token makes
        # every process read the matrix again, which is always right.
        cache.add(key, uuid.uuid4().hex, VERSION_SECONDS)
        token = cache.get(key)
    return token


# --- Writing vectors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedRun:
    embedded: int  # passages embedded by this run
    remaining: int  # passages still without a vector of the model


def _missing(model_id: str) -> Q:
    return Q(embedding_model__isnull=True) | ~Q(embedding_model=model_id)


def passages_embed(
    *,
    document_id: uuid.UUID | str | None = None,
    campaign_id: uuid.UUID | str | None = None,
    seconds: float | None = None,
) -> EmbedRun:
    """Embed the passages (of a document, or of a campaign) that have no vector of the
    configured model, in committed batches; stop after `seconds` (the rest is left for
    another run). Nothing is done when MEMORY_EMBEDDINGS is off."""
    if document_id is None and campaign_id is None:
        raise ValueError("name a document or a campaign")
    model = embeddings.embedder()
    if model is None:
        return EmbedRun(0, 0)
    qs = Passage.objects.all()
    if document_id is not None:
        qs = qs.filter(document_id=document_id)
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    todo = qs.filter(_missing(model.model_id)).order_by("id")
    started = time.monotonic()
    done = 0
    while True:
        batch = list(todo.values_list("id", "campaign_id", "heading", "text")[:COMMIT_BATCH])
        if not batch:
            return EmbedRun(done, 0)
        vectors = model.embed([passage_text(heading, text) for _, _, heading, text in batch])
        with transaction.atomic():
            for (pid, _, _, _), vector in zip(batch, vectors, strict=True):
                # A passage deleted meanwhile updates nothing.
                Passage.objects.filter(pk=pid).update(
                    embedding=embeddings.vector_bytes(vector), embedding_model=model.model_id
                )
        # Committed (the task runs in autocommit): searches read the matrix again.
        for campaign in {c for _, c, _, _ in batch}:
            _version_renew(campaign)
        done += len(batch)
        if seconds is not None and time.monotonic() - started >= seconds:
            return EmbedRun(done, todo.count())


# --- Indexing progress ----------------------------------------------------------------------


def indexed_counts(*, document_ids: list[uuid.UUID]) -> dict[uuid.UUID, int] | None:
    """Per document, its passages that have a vector of the configured model; None when
    embeddings are off (nothing is indexed, and nothing is missing)."""
    model_id = embeddings.embedder_model_id()
    if model_id is None:
        return None
    rows = (
        Passage.objects.filter(document_id__in=list(document_ids), embedding_model=model_id)
        .order_by()
        .values("document_id")
        .annotate(n=Count("id"))
        .values_list("document_id", "n")
    )
    return dict(rows)


def indexing_text(indexed: int | None, total: int) -> str:
    """What the GM reads about a document's index: "indexing 340 of 1,000 passages"."""
    if indexed is None:
        return "full text only (embeddings are off)"
    if indexed >= total:
        return "indexed"
    return f"indexing {indexed:,} of {total:,} passages"


# --- Searching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matrix:
    passage_ids: np.ndarray  # (n,) int64
    document_codes: np.ndarray  # (n,) int32: index into document_ids
    document_ids: tuple[uuid.UUID, ...]
    vectors: np.ndarray  # (n, dimensions) float32

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.passage_ids.nbytes + self.document_codes.nbytes


_matrices: OrderedDict[tuple[str, str], tuple[str | None, _Matrix]] = OrderedDict()
_matrices_lock = threading.Lock()


def _matrix_read(campaign_id: uuid.UUID | str, model_id: str, dimensions: int) -> _Matrix:
    rows = (
        Passage.objects.filter(campaign_id=campaign_id, embedding_model=model_id)
        .order_by("id")
        .values_list("id", "document_id", "embedding")
    )
    ids: list[int] = []
    docs: list[uuid.UUID] = []
    blobs: list[bytes] = []
    size = 4 * dimensions
    for pid, document_id, blob in rows.iterator(chunk_size=2000):
        if blob is not None and len(blob) == size:
            ids.append(pid)
            docs.append(document_id)
            blobs.append(bytes(blob))
    document_ids = tuple(dict.fromkeys(docs))
    code = {d: n for n, d in enumerate(document_ids)}
    return _Matrix(
        passage_ids=np.asarray(ids, dtype=np.int64),
        document_codes=np.asarray([code[d] for d in docs], dtype=np.int32),
        document_ids=document_ids,
        vectors=embeddings.vectors_from_bytes(blobs, dimensions),
    )


def _matrix(campaign_id: uuid.UUID | str, model_id: str, dimensions: int) -> _Matrix:
    key = (str(campaign_id), model_id)
    version = _version(campaign_id)
    with _matrices_lock:
        held = _matrices.get(key)
        if held is not None and version is not None and held[0] == version:
            _matrices.move_to_end(key)
            return held[1]
    # Read outside the lock: other campaigns' searches need not wait for this one.
    matrix = _matrix_read(campaign_id, model_id, dimensions)
    if version is None:
        return matrix
    budget = setting("MEMORY_VECTOR_CACHE_MB") * 1024 * 1024
    with _matrices_lock:
        _matrices[key] = (version, matrix)
        _matrices.move_to_end(key)
        total = sum(m.nbytes for _, m in _matrices.values())
        while total > budget and len(_matrices) > 1:
            _, (_, dropped) = _matrices.popitem(last=False)
            total -= dropped.nbytes
        if total > budget:  # this campaign alone is larger than the budget
            _matrices.pop(key, None)
    return matrix


def campaign_has_vectors(*, campaign_id: uuid.UUID | str, model_id: str) -> bool:
    """Whether any of the campaign's passages has a vector of this model (the process's
    matrix when it is current, else one EXISTS query)."""
    version = _version(campaign_id)
    with _matrices_lock:
        held = _matrices.get((str(campaign_id), model_id))
        if held is not None and version is not None and held[0] == version:
            return len(held[1].passage_ids) > 0
    return (
        Passage.objects.filter(campaign_id=campaign_id, embedding_model=model_id)
        .exclude(embedding=None)
        .exists()
    )


def vector_ranked(
    *,
    campaign_id: uuid.UUID | str,
    query_vector: np.ndarray,
    model_id: str,
    limit: int,
    include_gm_only: bool,
    min_similarity: float,
) -> list[tuple[int, float]]:
    """(passage id, cosine similarity) of the campaign's passages nearest the query,
    best first: at most `limit`, none below `min_similarity`, and only from documents
    the searcher may read."""
    matrix = _matrix(campaign_id, model_id, int(query_vector.shape[0]))
    if not len(matrix.passage_ids):
        return []
    readable = Document.objects.filter(campaign_id=campaign_id)
    if not include_gm_only:
        readable = readable.filter(visibility=Document.Visibility.ALL)
    allowed = set(readable.values_list("id", flat=True))
    allowed_codes = [n for n, d in enumerate(matrix.document_ids) if d in allowed]
    if not allowed_codes:
        return []
    # numpy's own loop, not BLAS: OpenBLAS wakes its threads for a matrix-vector product,
    # which on a busy 2-core machine took 13 ms at 10,000 passages against 2 ms for this.
    scores = np.einsum("ij,j->i", matrix.vectors, query_vector.astype(np.float32))
    keep = np.isin(matrix.document_codes, allowed_codes) & (scores >= min_similarity)
    candidates = np.flatnonzero(keep)
    if not len(candidates):
        return []
    if len(candidates) > limit:
        part = np.argpartition(-scores[candidates], limit - 1)[:limit]
        candidates = candidates[part]
    # Best first; equal scores by passage id, as full text orders them.
    order = sorted(candidates, key=lambda i: (-float(scores[i]), int(matrix.passage_ids[i])))
    return [(int(matrix.passage_ids[i]), float(scores[i])) for i in order]


def matrices_forget() -> None:
    """Drop the process's matrices (tests; a changed MEMORY_VECTOR_CACHE_MB)."""
    with _matrices_lock:
        _matrices.clear()
