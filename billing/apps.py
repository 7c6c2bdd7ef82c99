from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from orchestrator.signals import model_call_finished, model_call_starting

        from . import checks, events  # noqa: F401  (registers budget_warning and the checks)
        from .immutability import ensure_usage_triggers
        from .receivers import reserve_model_call, settle_model_call

        post_migrate.connect(ensure_usage_triggers, sender=self)
        model_call_starting.connect(reserve_model_call, dispatch_uid="billing.reserve")
        model_call_finished.connect(settle_model_call, dispatch_uid="billing.settle")
