"""Memory tasks: summaries and NPC memories, queued after every turn (memory.receivers),
and the passages' vectors, queued when a document is uploaded (memory.documents). All are
idempotent and catch up from what is stored, so a lost or repeated task only delays memory."""

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from rpgai.tasks import enqueue

from . import npc_memory, summaries, vectors
from .conf import setting

RETRIES_MAX = 3


@shared_task(
    bind=True,
    name="memory.tasks.summarize_campaign",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    max_retries=RETRIES_MAX,
)
def summarize_campaign(self: Task, campaign_id: str) -> int:
    """Append the summaries the campaign's log is due (none when under the budget)."""
    try:
        return len(summaries.summaries_update(campaign_id=campaign_id))
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc


@shared_task(
    bind=True,
    name="memory.tasks.extract_npc_memories",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    max_retries=RETRIES_MAX,
)
def extract_npc_memories(self: Task, campaign_id: str) -> int:
    """Read the turns since the last extraction into the NPCs' memories."""
    try:
        return npc_memory.npc_memories_extract(campaign_id=campaign_id)
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc


@shared_task(
    bind=True,
    # CPU work: routed to MEMORY_EMBEDDINGS_QUEUE (the worker that speaks), never the turns
    # worker's, by CELERY_TASK_ROUTES (rpgai/settings.py; Celery deprecates a task's own
    # `queue` attribute).
    name="memory.tasks.embed_passages",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    max_retries=RETRIES_MAX,
)
def embed_passages(self: Task, document_id: str) -> int:
    """Embed a document's passages that have no vector yet, for at most
    MEMORY_EMBED_SECONDS_PER_TASK seconds; the rest goes on in a new task."""
    try:
        run = vectors.passages_embed(
            document_id=document_id, seconds=setting("MEMORY_EMBED_SECONDS_PER_TASK")
        )
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
    if run.remaining:
        # Committed batches stay: the next task starts where this one stopped.
        enqueue(embed_passages, document_id=document_id)
    return run.embedded
