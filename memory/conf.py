"""Memory settings: a Django setting of the same name wins, then an environment variable
of that name, then these defaults (all integers)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    # Layered summaries (memory.summaries).
    "MEMORY_SUMMARY_CHUNK_TOKENS": 500,  # events summarized at once (layer 0)
    "MEMORY_SUMMARY_KEEP_TOKENS": 700,  # the newest events stay verbatim
    "MEMORY_SUMMARY_MAX_TOKENS": 160,  # the length of one summary, any layer
    "MEMORY_SUMMARY_FANOUT": 4,  # summaries of one layer merged into one of the next
    "MEMORY_SUMMARY_TOP_LAYER": 3,  # the top layer rolls: it is re-summarized in place
    "MEMORY_SUMMARY_CHUNKS_PER_RUN": 20,  # catch-up work per task; the rest is re-queued
    # What a turn's prompt gets (tokens of the tokenizer DM_TOKENIZER).
    "MEMORY_PROMPT_SUMMARY_TOKENS": 1000,
    "MEMORY_PROMPT_PASSAGE_TOKENS": 700,
    "MEMORY_PROMPT_PASSAGES_MAX": 3,
    "MEMORY_PROMPT_NPC_TOKENS": 600,
    "MEMORY_PROMPT_NPCS_MAX": 4,
    "MEMORY_PROMPT_NPC_MEMORIES_MAX": 6,  # recent memories per NPC, besides how they met
    # Uploaded documents (memory.documents).
    "MEMORY_DOCUMENT_MAX_BYTES": 1024 * 1024,
    "MEMORY_DOCUMENTS_MAX_PER_CAMPAIGN": 100,
    "MEMORY_PASSAGE_MAX_CHARS": 1200,
    # Passages one document may make: a file of 60,000 one-line sections would make as
    # many rows (and token counts) in one request. Refused while splitting, before any work.
    "MEMORY_DOCUMENT_MAX_PASSAGES": 2000,
    # Vectors (memory.vectors): the campaigns' matrices a process keeps between searches,
    # in MiB for all campaigns (10,000 passages make 15 MiB); the rest is read again.
    "MEMORY_VECTOR_CACHE_MB": 64,
    # Seconds one embedding task works before it queues the rest of its document (under
    # CELERY_TASK_SOFT_TIME_LIMIT, 120 s by default).
    "MEMORY_EMBED_SECONDS_PER_TASK": 60,
}


def setting(name: str) -> Any:
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULTS[name]
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
