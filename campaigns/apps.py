from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        # whispers and forks register their event types (whisper, campaign_forked).
        from . import forks, immutability, whispers  # noqa: F401

        connection_created.connect(immutability.register_sqlite_functions)
        post_migrate.connect(immutability.ensure_event_triggers, sender=self)
