import logging

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from rpgai.request_id import get_request_id

from . import scheduler, services

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="orchestrator.tasks.run_turn",
    # Acknowledged when the task returns: once its turn holds the campaign's lock (a turn
    # that dies then is found by the runners' sweep), or found nothing to run. A worker
    # that dies before that has the message delivered again.
    acks_late=True,
    # Only database errors before the lock are retried here: 2, 4, 8, 16 s, then every
    # 30 s, for about a quarter of an hour. Once the turn runs, the runner waits out an
    # outage itself (scheduler.turns_with_retries).
    max_retries=scheduler.DB_RETRIES_MAX,
)
def run_turn(self: Task, campaign_id: str) -> bool:
    """Start the campaign's owed DM turn on this worker's turn runner (scheduler.py).

    The task does not wait for the model: it returns as soon as the turn holds its lock,
    so one worker keeps up to TURNS_IN_FLIGHT_MAX turns in flight on one event loop. The
    lock holder is this task's id, which a redelivery keeps: a message delivered again
    after its worker died takes back the lock its first delivery held.
    """
    if self.request.called_directly or self.request.is_eager:
        return bool(services.turns_run_pending(campaign_id=campaign_id, max_turns=1))
    holder = f"task:{self.request.id}"
    try:
        return scheduler.runner().turn_start(
            campaign_id, holder=holder, request_id=get_request_id()
        )
    except scheduler.RunnerFull as exc:
        # This worker has TURNS_IN_FLIGHT_MAX turns in flight: back to the queue, for
        # another worker or for this one once a turn ends. Never dropped.
        log.warning("the turn of campaign %s waits: %s", campaign_id, exc)
        raise self.retry(exc=exc, countdown=1, max_retries=None) from exc
    except (OperationalError, InterfaceError) as exc:
        if self.request.retries >= scheduler.DB_RETRIES_MAX:
            log.error(
                "the turn of campaign %s gave up after %d database errors; the next action "
                "(or the turn lock's expiry) starts it again: %s",
                *(campaign_id, self.request.retries + 1, exc),
            )
            return False
        countdown = min(2 ** (self.request.retries + 1), scheduler.RETRY_BACKOFF_MAX_SECONDS)
        log.warning(
            "the turn of campaign %s hit a database error (try %d), retrying in %d s: %s",
            *(campaign_id, self.request.retries + 1, countdown, exc),
        )
        raise self.retry(exc=exc, countdown=countdown) from exc
