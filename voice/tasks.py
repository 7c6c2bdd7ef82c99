"""The synthesis task: on the `voice` queue (CELERY_TASK_ROUTES `voice.tasks.*`)."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from rpgai import tracing

from . import services
from .engines import SpeechError

log = logging.getLogger(__name__)

RETRIES_MAX = 5


@shared_task(
    bind=True,
    name="voice.tasks.synthesize_narration",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    max_retries=RETRIES_MAX,
)
def synthesize_narration(self: Task, campaign_id: str, narration_seq: int) -> int:
    """Speak one committed narration, segment by segment (see `narration_speak`).

    A retry resumes at the first segment not yet announced: what was stored is reused,
    what was announced is not announced again. A speech server that is down or busy
    (429, 5xx, unreachable) and a long narration that meets the time limit are retried;
    a refusal (a bad voice, a 400) is not.
    """
    try:
        with tracing.span(
            "voice.speak", campaign_id=campaign_id, narration_seq=narration_seq
        ) as span:
            spoken = services.narration_speak(campaign_id=campaign_id, narration_seq=narration_seq)
            span.set_attribute("rpgai.segments", spoken)
            return spoken
    except SpeechError as exc:
        if exc.retryable and not self.request.called_directly:
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        log.warning(
            "narration %s of campaign %s not spoken: %s (%s)",
            narration_seq,
            campaign_id,
            exc.detail,
            exc.code,
        )
        return 0
    except (OperationalError, InterfaceError, SoftTimeLimitExceeded) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=1) from exc
