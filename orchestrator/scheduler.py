"""The one place a DM turn is asked for, and where turns run.

Everything that owes the table an answer calls `turn_request(campaign_id=..., delay=...)`:
a committed player action (receivers.py), a round's timer or its players coming and
going (rounds.py), a follow-up after a turn (services.py), a look again at a lock whose
holder may have died (tasks.py). What runs is always `services.aturns_run_pending`, a
coroutine, so a turn waiting on its model holds no thread, no process and no database
connection (DESIGN: one process keeps many turns in flight):

- **Embedded** (no broker): on the server's own event loop, as a task of that loop.
  Called where no loop runs (a management command, a plain test), inline.
- **With a broker**: a Celery task (`tasks.run_turn`, queue `turns`) carries the request,
  so any worker may take it. The task hands the turn to its process's `TurnRunner` (an
  event loop on a thread of its own, shared by every turn of the process) and returns
  once the turn holds its campaign's lock, or found nothing to do: its message is then
  acknowledged. A worker that dies mid-turn leaves its lock behind; every runner sweeps
  for locks older than TURN_LOCK_SECONDS (every TURN_SWEEP_SECONDS, and when it starts)
  and asks for their turns again. A worker shutting down waits for its turns for a
  while, then cancels the rest (their locks are released) and asks for them again.

Per campaign, turns never overlap (the turn lock) and answer actions in order (each turn
answers every action since the last answer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import uuid
from collections.abc import Coroutine
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from rpgai import tasks as background
from rpgai.aio import db
from rpgai.request_id import request_id_bound

from . import selectors

log = logging.getLogger(__name__)

# A database outage (a restart, a failover) is waited out: the turn is tried again with
# backoff up to this many seconds apart, for about a quarter of an hour, then given up
# (the next action, or the lock's expiry, starts it again).
DB_RETRIES_MAX = 30
RETRY_BACKOFF_MAX_SECONDS = 30
# How long the Celery task waits for its turn to take the lock before letting the
# message go back to the queue (the runner is saturated or the database is away).
HANDOFF_TIMEOUT_SECONDS = 60.0
# At a worker's warm shutdown, turns in flight get this long to finish.
SHUTDOWN_GRACE_SECONDS = 20.0


class RunnerFull(Exception):
    """This worker's turn runner keeps TURNS_IN_FLIGHT_MAX turns in flight already."""


def turn_request(*, campaign_id: uuid.UUID | str, delay: float = 0.0) -> None:
    """Ask for the campaign's DM turn (after `delay` seconds). Safe to call early, late or
    twice: a turn re-checks from the log whether one is owed."""
    campaign_id = str(campaign_id)
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        from .tasks import run_turn

        if delay > 0:
            background.enqueue_later(run_turn, delay, campaign_id=campaign_id)
        else:
            background.enqueue(run_turn, campaign_id=campaign_id)
        return
    loop = background.server_loop()
    if loop is None:
        # No event loop here (a command, a plain test): the turn runs now, inline.
        if delay > 0:
            timer = threading.Timer(delay, _inline, (campaign_id,))
            timer.daemon = True
            timer.start()
        else:
            _inline(campaign_id)
        return
    context = contextvars.copy_context()  # the request id (and trace) follow the turn

    def spawn() -> None:
        background.track(asyncio.ensure_future(turns_with_retries(campaign_id)))

    if delay > 0:
        loop.call_soon_threadsafe(lambda: loop.call_later(delay, spawn, context=context))
    else:
        loop.call_soon_threadsafe(spawn, context=context)


def _inline(campaign_id: str) -> None:
    """The owed turn, run now on this thread (no event loop of ours here)."""
    from .services import turns_run_pending

    try:
        turns_run_pending(campaign_id=campaign_id, max_turns=1)
    except Exception:
        log.exception("the turn of campaign %s failed", campaign_id)


async def turns_with_retries(
    campaign_id: str,
    *,
    holder: str | None = None,
    locked: concurrent.futures.Future[bool] | None = None,
) -> int:
    """The campaign's owed turn (one; more owed afterwards asks for another), tried again
    while the database is away. `locked` is resolved once the turn holds its lock (True)
    or there was nothing to run (False)."""
    from . import services

    holder = holder or f"run:{uuid.uuid4().hex}"

    def on_locked() -> None:
        if locked is not None and not locked.done():
            locked.set_result(True)

    try:
        for attempt in range(DB_RETRIES_MAX + 1):
            try:
                ran = await services.aturns_run_pending(
                    campaign_id=campaign_id, max_turns=1, holder=holder, on_locked=on_locked
                )
                if not ran:
                    await _look_again_if_the_holder_died(campaign_id)
                return ran
            except (OperationalError, InterfaceError) as exc:
                if locked is not None and not locked.done():
                    raise  # before the lock: the Celery task retries, as for any task
                countdown = min(2 ** (attempt + 1), RETRY_BACKOFF_MAX_SECONDS)
                log.warning(
                    "the turn of campaign %s hit a database error (try %d), retrying in %d s: %s",
                    *(campaign_id, attempt + 1, countdown, exc),
                )
                await asyncio.sleep(countdown)
        log.error(
            "the turn of campaign %s gave up after %d database errors; the next action (or "
            "the turn lock's expiry) starts it again",
            *(campaign_id, DB_RETRIES_MAX + 1),
        )
        return 0
    except BaseException as exc:
        if locked is not None and not locked.done():
            locked.set_exception(exc)
            if isinstance(exc, Exception):
                return 0
        raise
    finally:
        if locked is not None and not locked.done():
            locked.set_result(False)


async def _look_again_if_the_holder_died(campaign_id: str) -> None:
    """Actions are owed but another holder has the lock. It re-checks after its turn,
    unless it died in it (killed, out of memory): then nobody would. So look again once
    its lock may be taken over; if the holder was alive, that finds nothing owed."""
    from . import services

    if await db(selectors.turn_owed, campaign_id=campaign_id) is None:
        return
    stale_in = await db(services.turn_lock_stale_in, campaign_id=campaign_id)
    if stale_in is not None:
        await db(turn_request, campaign_id=campaign_id, delay=stale_in + 1)


# --- A worker's turn runner ------------------------------------------------------------------


class TurnRunner:
    """One event loop per worker process, on a thread of its own, running every turn the
    process takes (at most TURNS_IN_FLIGHT_MAX at once)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._slots = threading.BoundedSemaphore(max(1, settings.TURNS_IN_FLIGHT_MAX))
        self._thread = threading.Thread(target=self._serve, name="rpgai-turns", daemon=True)
        self._thread.start()
        self.submit_soon(self._sweep_forever())

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit_soon(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def turn_start(self, campaign_id: str, *, holder: str, request_id: str = "") -> bool:
        """Hand a turn to the loop; wait until it holds its lock (True) or found nothing
        to run (False). Blocks while the runner is full: the queue keeps the rest."""
        if not self._slots.acquire(timeout=HANDOFF_TIMEOUT_SECONDS):
            raise RunnerFull("this worker has TURNS_IN_FLIGHT_MAX turns in flight")
        locked: concurrent.futures.Future[bool] = concurrent.futures.Future()
        context = contextvars.copy_context()

        def start() -> None:
            async def turn() -> None:
                with request_id_bound(request_id):
                    await turns_with_retries(campaign_id, holder=holder, locked=locked)

            task = self.loop.create_task(turn(), name=campaign_id, context=context)
            self.in_flight.add(task)

            def done(task: asyncio.Task[Any]) -> None:
                self.in_flight.discard(task)
                self._slots.release()
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "the turn of campaign %s failed",
                        campaign_id,
                        exc_info=task.exception(),
                    )

            task.add_done_callback(done)

        self.loop.call_soon_threadsafe(start)
        try:
            return locked.result(timeout=HANDOFF_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            # The turn is on the loop and goes on; only the acknowledgement comes early.
            log.warning("the turn of campaign %s is slow to take its lock", campaign_id)
            return False

    async def _sweep_forever(self) -> None:
        while True:
            try:
                for campaign_id in await db(selectors.turns_abandoned):
                    log.warning(
                        "campaign %s: a turn lock was left by a worker that died; "
                        "running its turn again",
                        campaign_id,
                    )
                    await db(turn_request, campaign_id=campaign_id)
            except Exception:
                log.warning("the sweep for abandoned turns failed", exc_info=True)
            await asyncio.sleep(settings.TURN_SWEEP_SECONDS)

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Wait up to `grace` seconds for the turns in flight; cancel the rest (their locks
        are released) and ask for them again, for another worker."""

        async def drain() -> list[str]:
            turns = [t for t in self.in_flight if not t.done()]
            if turns:
                _, pending = await asyncio.wait(turns, timeout=grace)
            else:
                pending = set()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
            return [task.get_name() for task in pending]

        try:
            cancelled = self.submit_soon(drain()).result(timeout=grace + 10)
        except Exception:
            log.warning("the turn runner did not stop cleanly", exc_info=True)
            cancelled = []
        for campaign_id in cancelled:
            log.warning(
                "campaign %s: its turn was cut short by the shutdown; asked again", campaign_id
            )
            turn_request(campaign_id=campaign_id)
        self.loop.call_soon_threadsafe(self.loop.stop)


_runner: TurnRunner | None = None
_runner_lock = threading.Lock()


def runner() -> TurnRunner:
    """This process's turn runner, started on first use (after a prefork, in the child)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = TurnRunner()
        return _runner


def runner_stop() -> None:
    global _runner
    with _runner_lock:
        if _runner is not None:
            _runner.stop()
            _runner = None
