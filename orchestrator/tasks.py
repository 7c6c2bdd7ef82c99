from celery import shared_task

from . import services


@shared_task(name="orchestrator.tasks.run_turn", acks_late=True)
def run_turn(campaign_id: str) -> None:
    """Answer every player action since the last narration (no-op when none is owed)."""
    services.turns_run_pending(campaign_id=campaign_id)
