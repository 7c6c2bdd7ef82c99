import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from rpgai.tasks import enqueue_later

from . import selectors, services

log = logging.getLogger(__name__)

# A database outage (a restart, a failover) is waited out, however long it lasts: the
# task retries with backoff up to this many seconds apart. Giving up would leave the
# actions unanswered, and the turn lock held by this task until it went stale.
DB_RETRIES_MAX = 30
RETRY_BACKOFF_MAX_SECONDS = 30


@shared_task(
    bind=True,
    name="orchestrator.tasks.run_turn",
    acks_late=True,
    # A turn's own deadline (DM_TURN_DEADLINE_SECONDS) ends it before these; they are
    # the backstop. At the soft limit the turn appends turn_failed (turn_timeout). The
    # limits travel in each message, from the sender's settings.
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    # Only database errors are retried (below): 2, 4, 8, 16 s, then every 30 s, for about
    # a quarter of an hour. A fault that lasts longer (or never clears: a schema error is
    # an OperationalError too) is given up, not paid for in model calls forever.
    max_retries=DB_RETRIES_MAX,
)
def run_turn(self: Task, campaign_id: str) -> int:
    """Answer every player action since the last narration (no-op when none is owed).

    One turn per task; more owed afterwards queues another task. A retry after a
    database failure cannot duplicate an event: a turn that was committed makes the
    retry a no-op (`turn_commit` refuses to answer the same actions twice). A failed
    one appended nothing: the retry runs the turn again, once the database is back.
    """
    try:
        # The lock holder is this task's id, which a redelivery (acks_late, after the
        # worker died mid-turn) keeps: the retry reclaims the lock its first try held.
        holder = f"task:{self.request.id}" if self.request.id else None
        ran = services.turns_run_pending(campaign_id=campaign_id, max_turns=1, holder=holder)
        if not ran and not settings.CELERY_TASK_ALWAYS_EAGER:
            _look_again_if_the_holder_died(campaign_id)
        return ran
    except SoftTimeLimitExceeded:
        # The turn recorded its failure (turn_failed, turn_timeout) and freed its lock.
        log.warning("the turn of campaign %s ran past its soft time limit", campaign_id)
        return 0
    except (OperationalError, InterfaceError) as exc:
        if self.request.called_directly:
            raise
        if self.request.retries >= DB_RETRIES_MAX:
            log.error(
                "the turn of campaign %s gave up after %d database errors; the next action "
                "(or the turn lock's expiry) starts it again: %s",
                *(campaign_id, self.request.retries + 1, exc),
            )
            return 0
        countdown = min(2 ** (self.request.retries + 1), RETRY_BACKOFF_MAX_SECONDS)
        log.warning(
            "the turn of campaign %s hit a database error (try %d), retrying in %d s: %s",
            *(campaign_id, self.request.retries + 1, countdown, exc),
        )
        raise self.retry(exc=exc, countdown=countdown) from exc


def _look_again_if_the_holder_died(campaign_id: str) -> None:
    """Actions are owed but another worker holds the lock. It re-checks after its turn,
    unless it died in it (killed, out of memory): then nobody would. So look again once
    its lock may be taken over; if the holder was alive, that finds nothing owed."""
    if selectors.turn_owed(campaign_id=campaign_id) is None:
        return
    stale_in = services.turn_lock_stale_in(campaign_id=campaign_id)
    if stale_in is not None:
        enqueue_later(run_turn, stale_in + 1, campaign_id=campaign_id)
