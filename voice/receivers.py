"""What the voice app does when things happen elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from rpgai.tasks import enqueue

log = logging.getLogger(__name__)

# campaign_import and campaign_fork append an old log under these request ids: its
# narrations were heard already (a fork's copied audio is served from where it was made).
IMPORT_REQUEST_ID = "import"
COPIED_REQUEST_IDS = frozenset({IMPORT_REQUEST_ID, "fork"})


def _speech_on() -> bool:
    return (settings.TTS_PROVIDER or "none").strip().lower() != "none"


def queue_speech_after_narration(
    sender: Any, campaign_id: Any, events: list[Any], **kwargs: Any
) -> None:
    """A committed `dm_narration` is spoken; a committed player action means one is
    coming, so the engine is warmed up while the DM thinks. A failed turn's sentences,
    spoken as it streamed, are deleted."""
    if not _speech_on():
        return
    from . import services
    from .tasks import discard_turn_speech, synthesize_narration

    for event in events:
        if event.type == "dm_narration" and event.request_id not in COPIED_REQUEST_IDS:
            enqueue(synthesize_narration, campaign_id=str(campaign_id), narration_seq=event.seq)
        elif (
            event.type == "turn_failed"
            and settings.VOICE_STREAM
            and event.request_id not in COPIED_REQUEST_IDS
            and isinstance(event.payload.get("turn_id"), str)
        ):
            enqueue(
                discard_turn_speech,
                campaign_id=str(campaign_id),
                turn_id=event.payload["turn_id"],
            )
        elif (
            event.type == "player_action"
            and settings.VOICE_PRELOAD
            # Only where the speech is made: Celery workers warm up as they start.
            and settings.CELERY_TASK_ALWAYS_EAGER
        ):
            services.engine_warm_up_in_background()


def warm_up_worker_process(**kwargs: Any) -> None:
    """Celery: each worker process loads the voice as it starts, not at the first task."""
    if _speech_on() and settings.VOICE_PRELOAD:
        from . import services

        services.engine_warm_up_in_background()


def delete_speech_file(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted segment row (its campaign deleted) takes its audio file with it, once
    the deletion has committed."""
    from . import services

    name = instance.storage_name
    transaction.on_commit(lambda: services.speech_file_delete(storage_name=name))
