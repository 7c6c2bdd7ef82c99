"""Forks: try another path without losing the campaign.

`campaign_fork` makes a new campaign with the same members and a copy of the original's
events 1..at_seq (new ids, the same seqs, payloads and visibility), then a fresh dice seed
commitment (the fork rolls with a secret of its own; the original's secret is never
copied) and a `campaign_forked` event naming where it came from. The new campaign's
`forked_from` and `forked_at_seq` say the same in the database. The original is not
touched.

What is not copied: the DM's model settings, budgets, lore documents and memory rows of
the original (they belong to their campaign); the fork starts with the defaults.
Copied rolls keep their original `seed_id`, whose secret stays with the original: they
can be verified there, once that seed is revealed.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from pydantic import Field

from rpgai.errors import DomainError, NotFound, PermissionDenied

from . import selectors, services
from .dice import dice_seed_new
from .events import FoldedEvent, NewEvent, Payload, event_type, initial_state
from .models import Campaign, Event, Membership, Snapshot

COPY_BATCH = 500


class ForkInvalid(DomainError):
    code = "invalid_at_seq"


class CampaignForked(Payload):
    forked_from: uuid.UUID
    forked_at_seq: int = Field(ge=1)


@event_type("campaign_forked", CampaignForked)
def _campaign_forked(state: dict[str, Any], event: FoldedEvent) -> None:
    pass  # a link back, for people reading the log; the state is the copied events' fold


def _payload_for_fork(event: Event, original_id: uuid.UUID, fork_id: uuid.UUID) -> dict[str, Any]:
    """The payload as copied: the same, but that spoken audio is fetched through the fork
    (its members are checked there; voice serves it from the ancestor that recorded it)."""
    payload = event.payload
    url = payload.get("url") if event.type == "dm_audio_ready" else None
    if isinstance(url, str) and f"/campaigns/{original_id}/audio/" in url:
        payload = {
            **payload,
            "url": url.replace(f"/campaigns/{original_id}/audio/", f"/campaigns/{fork_id}/audio/"),
        }
    return payload


def campaign_fork(
    *,
    campaign_id: uuid.UUID | str,
    at_seq: int,
    by_user: Any,
    request_id: str = "",
    as_operator: bool = False,
) -> Campaign:
    """A new campaign forked from `campaign_id` after its event `at_seq` (GM only; the
    admin forks `as_operator`, a superuser who need not be a member)."""
    original = selectors.campaign_get(campaign_id=campaign_id)
    if original is None:
        raise NotFound("no such campaign")
    user_id = getattr(by_user, "id", None)
    membership = (
        selectors.membership_get(campaign_id=campaign_id, user_id=user_id) if user_id else None
    )
    if as_operator and getattr(by_user, "is_superuser", False):
        pass
    elif membership is None or not membership.is_gm:
        raise PermissionDenied("only a GM of this campaign may fork it", code="gm_only")
    if not isinstance(at_seq, int) or isinstance(at_seq, bool):
        raise ForkInvalid("at_seq must be an integer")
    snapshot = selectors.snapshot_get(campaign_id=campaign_id)
    version = snapshot.version if snapshot else 0
    if not 1 <= at_seq <= version:
        raise ForkInvalid(f"at_seq must be between 1 and {version} (the campaign's last seq)")

    with transaction.atomic():
        fork = Campaign.objects.create(
            name=f"{original.name} (fork at {at_seq})"[:120],
            edition=original.edition,
            created_by=by_user,
            forked_from=original,
            forked_at_seq=at_seq,
            turn_mode=original.turn_mode,
            round_seconds=original.round_seconds,
        )
        Snapshot.objects.create(campaign=fork, version=0, state=initial_state())
        Membership.objects.bulk_create(
            Membership(campaign=fork, user_id=m.user_id, role=m.role, display_name=m.display_name)
            for m in Membership.objects.filter(campaign_id=campaign_id)
        )
        # Kicked players stay out of the copy too (CONTRACTS §7).
        services.bans_copy(from_campaign_id=campaign_id, to_campaign_id=fork.id)
        batch: list[NewEvent] = []
        events = Event.objects.filter(campaign_id=campaign_id, seq__lte=at_seq).order_by("seq")
        for event in events.iterator(chunk_size=COPY_BATCH):
            batch.append(
                NewEvent(
                    type=event.type,
                    payload=_payload_for_fork(event, original.id, fork.id),
                    actor_kind=event.actor_kind,  # type: ignore[arg-type]
                    actor_user_id=event.actor_user_id,
                    visibility=dict(event.visibility or {"kind": "all"}),  # type: ignore[arg-type]
                    created_at=event.created_at,
                )
            )
            if len(batch) >= COPY_BATCH:
                services.events_append(campaign_id=fork.id, events=batch, request_id="fork")
                batch = []
        if batch:
            services.events_append(campaign_id=fork.id, events=batch, request_id="fork")
        # A fresh commitment: the fork's dice are its own, never the original's secret.
        _, seed_committed = dice_seed_new(campaign_id=fork.id)
        services.events_append(
            campaign_id=fork.id,
            request_id=request_id or "fork",
            events=[
                seed_committed,
                NewEvent(
                    "campaign_forked",
                    {"forked_from": str(original.id), "forked_at_seq": at_seq},
                    "gm" if membership is not None else "system",
                    by_user.id if membership is not None else None,
                ),
            ],
        )
    return fork
