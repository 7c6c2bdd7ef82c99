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


@shared_task(
    name="voice.tasks.speak_sentence",
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
)
def speak_sentence(campaign_id: str, turn_id: str, segment: int, text: str) -> bool:
    """Speak one sentence of a narration still streaming (see `sentence_speak`).

    Never retried: a sentence heard late is worth less than none, and the narration's
    commit speaks whatever the stream did not.
    """
    try:
        with tracing.span(
            "voice.speak_sentence", campaign_id=campaign_id, turn_id=turn_id, segment=segment
        ):
            return (
                services.sentence_speak(
                    campaign_id=campaign_id, turn_id=turn_id, segment=segment, text=text
                )
                is not None
            )
    except SpeechError as exc:
        log.warning(
            "sentence %s of turn %s not spoken as it streamed: %s (%s)",
            segment,
            turn_id,
            exc.detail,
            exc.code,
        )
        return False


@shared_task(
    bind=True,
    name="voice.tasks.discard_turn_speech",
    acks_late=True,
    max_retries=RETRIES_MAX,
)
def discard_turn_speech(self: Task, campaign_id: str, turn_id: str) -> int:
    """A failed turn: delete what was spoken for it as it streamed."""
    try:
        return services.turn_speech_discard(campaign_id=campaign_id, turn_id=turn_id)
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        raise self.retry(exc=exc, countdown=1) from exc
