"""Round-based turns: in a campaign whose `turn_mode` is `rounds`, the DM answers once every
player present has acted since the last narration, or when the round timer runs out.

- A round starts with the first player action not yet answered; its deadline is that
  action's time plus the campaign's `round_seconds`.
- "Present" means online in the room now (realtime presence, role player). When no
  player is online (a table that plays over HTTP), every player member is waited for.
  GMs are never waited for; their actions join the round.
- While the table waits, the room gets an ephemeral `round_waiting` message with the
  user ids still to act and the deadline, and a delayed turn is asked for at the
  deadline (`scheduler.turn_request`). Every check is made again from the log when a
  task runs, so an early, late or repeated task changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from campaigns.models import Campaign, Membership
from campaigns.selectors import campaign_get, player_actions_between
from campaigns.services import broadcast_room
from realtime.services import presence_list

from . import selectors

log = logging.getLogger(__name__)

TIMER_SLACK_SECONDS = 0.05


@dataclass(frozen=True)
class RoundState:
    waiting_for: list[str]  # user ids still to act
    deadline: datetime
    timed_out: bool

    @property
    def closed(self) -> bool:
        return self.timed_out or not self.waiting_for


def round_state_get(*, campaign_id: uuid.UUID | str) -> RoundState | None:
    """The open round of a `rounds` campaign with actions owed; None otherwise."""
    campaign = campaign_get(campaign_id=campaign_id)
    if campaign is None or campaign.turn_mode != Campaign.TurnMode.ROUNDS:
        return None
    owed = selectors.turn_owed(campaign_id=campaign_id)
    if owed is None:
        return None
    answered, through = owed
    actions = player_actions_between(
        campaign_id=campaign_id, after_seq=answered, through_seq=through
    )
    if not actions:
        return None
    acted = {str(a.actor_user_id) for a in actions if a.actor_user_id}
    present = {
        u["user_id"] for u in presence_list(campaign_id=campaign_id) if u["role"] == "player"
    }
    players = {
        str(uid)
        for uid in Membership.objects.filter(
            campaign_id=campaign_id, role=Membership.Role.PLAYER
        ).values_list("user_id", flat=True)
    }
    required = (present & players) or players
    deadline = actions[0].created_at + timedelta(seconds=campaign.round_seconds)
    return RoundState(
        waiting_for=sorted(required - acted),
        deadline=deadline,
        timed_out=timezone.now() >= deadline,
    )


def round_hold(*, campaign_id: uuid.UUID | str) -> bool:
    """True when the DM must wait for the round to close (rounds mode only). Tells the
    room who the table waits for, and arms the round's timer."""
    state = round_state_get(campaign_id=campaign_id)
    if state is None:
        return False
    broadcast_room(
        campaign_id,
        {
            "type": "room.round_waiting",
            "user_ids": [] if state.closed else state.waiting_for,
            "deadline": state.deadline.isoformat().replace("+00:00", "Z"),
        },
    )
    if state.closed:
        return False
    from .scheduler import turn_request

    delay = (state.deadline - timezone.now()).total_seconds() + TIMER_SLACK_SECONDS
    turn_request(campaign_id=campaign_id, delay=delay)
    log.info(
        "campaign %s: the round waits for %d player(s), %.1f s left",
        campaign_id,
        len(state.waiting_for),
        delay,
    )
    return True


def round_recheck(*, campaign_id: uuid.UUID | str) -> None:
    """Someone came into or left the room of a `rounds` campaign: whom the round waits for
    may have changed (only players present are waited for), and a round timer lost with a
    restarted server (an embedded timer lives in memory) may be overdue. A turn task
    re-makes every check from the log: it answers a closed round, or re-arms the timer and
    tells the room whom the table waits for."""
    campaign = campaign_get(campaign_id=campaign_id)
    if campaign is None or campaign.turn_mode != Campaign.TurnMode.ROUNDS:
        return
    if selectors.turn_owed(campaign_id=campaign_id) is None:
        return
    from .scheduler import turn_request

    turn_request(campaign_id=campaign_id)
