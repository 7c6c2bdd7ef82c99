from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "DM orchestrator"

    def ready(self) -> None:
        from campaigns.signals import events_committed

        from .receivers import queue_turn_after_actions

        events_committed.connect(queue_turn_after_actions, dispatch_uid="orchestrator.queue_turn")
