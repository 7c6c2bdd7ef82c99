"""A campaign's turn mode: `free` (coalesced turns) or `rounds` (the DM waits for every
player present, or for the round timer). The waiting itself lives in `orchestrator.rounds`;
this is the setting and who may change it."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from rpgai.errors import DomainError, NotFound, PermissionDenied

from . import selectors
from .events import NewEvent
from .models import Campaign
from .services import events_append

ROUND_SECONDS_MIN = 5
ROUND_SECONDS_MAX = 3600


class TurnModeInvalid(DomainError):
    code = "invalid_turn_mode"


def campaign_turn_mode_set(
    *,
    campaign_id: uuid.UUID | str,
    by_user: Any,
    turn_mode: str | None = None,
    round_seconds: int | None = None,
) -> Campaign:
    """Set the turn mode and/or the round timer (GM only); None leaves a value as it is."""
    campaign = selectors.campaign_get(campaign_id=campaign_id)
    if campaign is None:
        raise NotFound("no such campaign")
    user_id = getattr(by_user, "id", None)
    membership = (
        selectors.membership_get(campaign_id=campaign_id, user_id=user_id) if user_id else None
    )
    if membership is None or not membership.is_gm:
        raise PermissionDenied("only a GM of this campaign may change its turns", code="gm_only")
    if turn_mode is not None and turn_mode not in Campaign.TurnMode.values:
        raise TurnModeInvalid(f"turn_mode is one of {', '.join(Campaign.TurnMode.values)}")
    if round_seconds is not None and (
        isinstance(round_seconds, bool)
        or not isinstance(round_seconds, int)
        or not ROUND_SECONDS_MIN <= round_seconds <= ROUND_SECONDS_MAX
    ):
        raise TurnModeInvalid(
            f"round_seconds is a whole number from {ROUND_SECONDS_MIN} to {ROUND_SECONDS_MAX}"
        )
    return campaign_turns_update(
        campaign=campaign, turn_mode=turn_mode, round_seconds=round_seconds, by_user_id=user_id
    )


def campaign_turns_update(
    *,
    campaign: Campaign,
    turn_mode: str | None = None,
    round_seconds: int | None = None,
    by_user_id: uuid.UUID | None = None,
) -> Campaign:
    """Store the turn settings (the caller checked who may; the admin is an operator's).
    A new turn mode is also told to the table (`campaign_updated` {changes: {turn_mode}}),
    so the snapshot's `campaign` says how turns run now."""
    fields: dict[str, Any] = {}
    if turn_mode is not None:
        fields["turn_mode"] = turn_mode
    if round_seconds is not None:
        fields["round_seconds"] = round_seconds
    if not fields:
        return campaign
    changed_mode = turn_mode is not None and turn_mode != campaign.turn_mode
    with transaction.atomic():
        Campaign.objects.filter(id=campaign.id).update(**fields)
        if changed_mode:
            events_append(
                campaign_id=campaign.id,
                events=[
                    NewEvent(
                        "campaign_updated",
                        {"changes": {"turn_mode": turn_mode}},
                        "gm" if by_user_id else "system",
                        by_user_id,
                    )
                ],
            )
    campaign.refresh_from_db()
    return campaign
