from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import checks, events  # noqa: F401  (registers budget_warning and the checks)
        from .immutability import ensure_usage_triggers

        post_migrate.connect(ensure_usage_triggers, sender=self)
