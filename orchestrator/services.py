"""DM turns: who owes the table an answer, one turn at a time per campaign."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns.events import NewEvent
from campaigns.services import events_append
from rpgai.errors import Conflict

from .fake import ActionSeen, fake_answer
from .models import TurnLock

log = logging.getLogger(__name__)

MAX_FOLLOW_UP_TURNS = 20


def turn_lock_acquire(*, campaign_id: uuid.UUID | str, holder: str) -> bool:
    now = timezone.now()
    try:
        with transaction.atomic():
            TurnLock.objects.get_or_create(campaign_id=campaign_id)
    except IntegrityError:
        pass  # another process made the row first
    stale = now - timedelta(seconds=settings.TURN_LOCK_SECONDS)
    taken = (
        TurnLock.objects.filter(campaign_id=campaign_id)
        .filter(Q(holder="") | Q(acquired_at__lt=stale))
        .update(holder=holder, acquired_at=now)
    )
    return taken == 1


def turn_lock_release(*, campaign_id: uuid.UUID | str, holder: str) -> None:
    TurnLock.objects.filter(campaign_id=campaign_id, holder=holder).update(holder="", acquired_at=None)


def _owed(campaign_id: uuid.UUID | str) -> tuple[int, int] | None:
    """(answered_through_seq, last_action_seq) when actions await an answer."""
    snapshot = campaign_selectors.snapshot_get(campaign_id=campaign_id)
    if snapshot is None:
        return None
    turn = snapshot.state.get("turn", {})
    answered, last = turn.get("answered_through_seq", 0), turn.get("last_action_seq", 0)
    return (answered, last) if last > answered else None


def turns_run_pending(*, campaign_id: uuid.UUID | str) -> int:
    """Run turns until no action is owed an answer; return how many ran.

    Only the lock holder runs turns. It re-checks after releasing, so an action that
    arrived during its turn (whose own task found the lock taken) still gets exactly
    one follow-up turn.
    """
    holder = uuid.uuid4().hex
    ran = 0
    for _ in range(MAX_FOLLOW_UP_TURNS):
        if _owed(campaign_id) is None:
            break
        if not turn_lock_acquire(campaign_id=campaign_id, holder=holder):
            break
        try:
            if turn_run(campaign_id=campaign_id) is not None:
                ran += 1
        finally:
            turn_lock_release(campaign_id=campaign_id, holder=holder)
    return ran


def turn_run(*, campaign_id: uuid.UUID | str, request_id: str = "") -> list[Any] | None:
    """One DM turn answering every player action not yet answered; None if none is owed."""
    owed = _owed(campaign_id)
    if owed is None:
        return None
    answered, through = owed
    actions = campaign_selectors.player_actions_between(
        campaign_id=campaign_id, after_seq=answered, through_seq=through
    )
    snapshot = campaign_selectors.snapshot_get(campaign_id=campaign_id)
    state = snapshot.state if snapshot else {}
    members = state.get("members", {})
    seen = [
        ActionSeen(
            who=members.get(str(a.actor_user_id), {}).get("display_name", "Someone"),
            text=a.payload["text"],
        )
        for a in actions
    ]
    answer = fake_answer(location=state.get("scene", {}).get("location", ""), actions=seen)
    turn_id = str(uuid.uuid4())
    request_id = request_id or (actions[-1].request_id if actions else "")

    def not_yet_answered(current: dict[str, Any]) -> None:
        if current.get("turn", {}).get("answered_through_seq", 0) >= through:
            raise Conflict("these actions were answered by another turn")

    try:
        return events_append(
            campaign_id=campaign_id,
            request_id=request_id,
            precondition=not_yet_answered,
            events=[
                NewEvent(
                    "dm_narration",
                    {
                        "turn_id": turn_id,
                        "text": answer.narration,
                        "options": answer.options,
                        "fallback": False,
                        "through_seq": through,
                    },
                    "dm",
                )
            ],
        )
    except Conflict:
        log.info("turn for campaign %s through seq %s was already answered", campaign_id, through)
        return None
