from django.apps import AppConfig


class VoiceConfig(AppConfig):
    name = "voice"
    verbose_name = "Voice"

    def ready(self) -> None:
        from celery.signals import worker_process_init
        from django.db.models.signals import post_delete

        from campaigns.signals import events_committed

        from . import checks, events  # noqa: F401  (registers dm_audio_ready, the checks)
        from .models import SpeechSegment
        from .receivers import (
            delete_speech_file,
            queue_speech_after_narration,
            warm_up_worker_process,
        )

        events_committed.connect(queue_speech_after_narration, dispatch_uid="voice.queue_speech")
        worker_process_init.connect(warm_up_worker_process, dispatch_uid="voice.warm_up")
        post_delete.connect(delete_speech_file, sender=SpeechSegment, dispatch_uid="voice.files")
