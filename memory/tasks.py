"""Memory tasks, queued after every turn (memory.receivers). Both are idempotent and
catch up from the log, so a lost or repeated task only delays memory."""

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import npc_memory, summaries

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
