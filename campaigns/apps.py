from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        # whispers, forks, retractions and characters register their event types (whisper,
        # campaign_forked, dm_narration_retracted, character_created, character_updated).
        from . import characters, forks, immutability, retractions, whispers  # noqa: F401

        connection_created.connect(immutability.register_sqlite_functions)
        post_migrate.connect(immutability.ensure_event_triggers, sender=self)
