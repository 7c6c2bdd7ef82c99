from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "DM orchestrator"

    def ready(self) -> None:
        from campaigns.signals import events_committed

        from .receivers import queue_turn_after_actions

        events_committed.connect(queue_turn_after_actions, dispatch_uid="orchestrator.queue_turn")

        # A worker shutting down lets its turns in flight finish (for a while), then asks
        # for the rest again (scheduler.TurnRunner.stop).
        from celery import signals as celery_signals

        celery_signals.worker_shutting_down.connect(_stop_turns, weak=False)
        celery_signals.worker_process_shutdown.connect(_stop_turns, weak=False)
        # A worker starts its turn runner at once, not at its first turn: the runner's
        # sweep finds the turns a worker that died left behind, even if no new turn comes.
        celery_signals.worker_ready.connect(_start_turns, weak=False)
        celery_signals.worker_process_init.connect(_start_turns, weak=False)


def _start_turns(sender: object = None, **kwargs: object) -> None:
    from django.conf import settings

    from .scheduler import runner

    if not settings.CELERY_TASK_ALWAYS_EAGER:
        runner()


def _stop_turns(**kwargs: object) -> None:
    from .scheduler import runner_stop

    runner_stop()
