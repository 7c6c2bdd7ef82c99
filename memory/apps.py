from django.apps import AppConfig


class MemoryConfig(AppConfig):
    name = "memory"
    verbose_name = "Campaign memory"

    def ready(self) -> None:
        from campaigns.signals import events_committed

        from . import events  # noqa: F401  (registers summary_created)
        from .receivers import queue_memory_after_turns

        events_committed.connect(queue_memory_after_turns, dispatch_uid="memory.after_turns")
