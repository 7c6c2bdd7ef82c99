"""Reads of campaigns, members, events and snapshots."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from .events import ANONYMOUS_CHARACTER_NAME, ANONYMOUS_NAME, FoldedEvent, copy_state
from .models import Campaign, CampaignBan, Event, Membership, Snapshot

EVENTS_PAGE_MAX = 1000


@dataclass(frozen=True)
class Viewer:
    """Who is reading: GMs see everything, others what an event's visibility names."""

    user_id: uuid.UUID | None
    is_gm: bool = False

    @classmethod
    def of(cls, membership: Membership) -> Viewer:
        return cls(user_id=membership.user_id, is_gm=membership.is_gm)


SYSTEM_VIEWER = Viewer(user_id=None, is_gm=True)


def group_name(campaign_id: uuid.UUID | str) -> str:
    """The channel-layer group of a campaign's room."""
    return f"campaign.{campaign_id}"


def membership_get(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> Membership | None:
    return (
        Membership.objects.select_related("campaign")
        .filter(campaign_id=campaign_id, user_id=user_id)
        .first()
    )


def campaign_get(*, campaign_id: uuid.UUID | str) -> Campaign | None:
    return Campaign.objects.filter(id=campaign_id).first()


def campaign_archived(*, campaign_id: uuid.UUID | str) -> bool:
    """Whether the campaign is archived (read-only: campaigns.services.campaign_update)."""
    return Campaign.objects.filter(id=campaign_id, archived=True).exists()


def campaigns_for_user(
    *, user_id: uuid.UUID, archived: bool | None = False
) -> QuerySet[Membership]:
    """The user's memberships with their campaigns: by default the campaigns in play
    (archived ones leave the list); `archived=True` only the archived ones, None all."""
    memberships = Membership.objects.filter(user_id=user_id).select_related("campaign")
    if archived is not None:
        memberships = memberships.filter(campaign__archived=archived)
    return memberships


def campaign_setup(state: dict[str, Any]) -> dict[str, Any]:
    """The setup of a campaign's state (CONTRACTS §7), every key present: empty for a
    campaign made before the setup existed."""
    campaign = state.get("campaign") or {}
    return {
        "premise": str(campaign.get("premise") or ""),
        "tone": str(campaign.get("tone") or ""),
        "turn_mode": str(campaign.get("turn_mode") or "free"),
        "lines": list(campaign.get("lines") or []),
        "veils": list(campaign.get("veils") or []),
    }


def members_of(*, campaign_id: uuid.UUID | str) -> list[Membership]:
    return list(Membership.objects.filter(campaign_id=campaign_id).select_related("user"))


def bans_of(*, campaign_id: uuid.UUID | str) -> list[CampaignBan]:
    """The users kicked from the campaign and not let back in, oldest ban first."""
    return list(
        CampaignBan.objects.filter(campaign_id=campaign_id).select_related("user", "banned_by")
    )


def member_exists(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> bool:
    """Whether the user is a member now (no row loaded: writers re-check under the log's
    lock, and the room re-checks after joining its group)."""
    return Membership.objects.filter(campaign_id=campaign_id, user_id=user_id).exists()


def event_visible(visibility: dict[str, Any], viewer: Viewer) -> bool:
    if viewer.is_gm:
        return True
    kind = visibility.get("kind", "all")
    if kind == "all":
        return True
    if kind == "users" and viewer.user_id is not None:
        return str(viewer.user_id) in visibility.get("user_ids", [])
    return False


def event_envelope(event: Event) -> dict[str, Any]:
    """The CONTRACTS §1 envelope, as stored and as sent to clients."""
    return {
        "id": str(event.id),
        "campaign_id": str(event.campaign_id),
        "seq": event.seq,
        "type": event.type,
        "actor": {
            "kind": event.actor_kind,
            "user_id": str(event.actor_user_id) if event.actor_user_id else None,
        },
        "payload": event.payload,
        "visibility": event.visibility,
        "request_id": event.request_id,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
    }


# --- Showing old events: the names of deleted accounts withheld ------------------------------


def names_withheld(*, campaign_id: uuid.UUID | str) -> dict[str, str]:
    """user id -> the name shown in place of theirs, for every member of this campaign
    whose account was deleted (their `player_left` with `account_deleted`)."""
    rows = Event.objects.filter(
        campaign_id=campaign_id, type="player_left", payload__account_deleted=True
    ).values_list("payload__user_id", "payload__display_name")
    return {str(user_id): str(name or ANONYMOUS_NAME) for user_id, name in rows}


def envelope_withheld(envelope: dict[str, Any], withheld: dict[str, str]) -> dict[str, Any]:
    """The envelope as people are shown it: in a `player_joined` or `player_left` of a
    deleted account, its name (and the placeholder character named after it) replaced.
    The stored event is unchanged; an envelope with nothing to withhold is returned as is."""
    if not withheld or envelope.get("type") not in ("player_joined", "player_left"):
        return envelope
    payload = envelope.get("payload") or {}
    shown = withheld.get(str(payload.get("user_id")))
    if shown is None:
        return envelope
    old_name = payload.get("display_name")
    payload = copy.deepcopy(payload)
    payload["display_name"] = shown
    character = payload.get("character")
    if isinstance(character, dict) and character.get("name") == old_name:
        character["name"] = ANONYMOUS_CHARACTER_NAME
    return {**envelope, "payload": payload}


def name_shown(payload: dict[str, Any], withheld: dict[str, str]) -> str:
    """The `display_name` of a `player_joined`/`player_left` as people and the model are
    told it: withheld for a deleted account."""
    shown = withheld.get(str(payload.get("user_id"))) if withheld else None
    return shown if shown is not None else str(payload.get("display_name") or "Someone")


def event_envelopes(
    events: Iterable[Event], *, campaign_id: uuid.UUID | str
) -> list[dict[str, Any]]:
    """Envelopes as people are shown them (API pages, catch-up, exports): the names of
    deleted accounts withheld (docs/security.md)."""
    withheld = names_withheld(campaign_id=campaign_id)
    return [envelope_withheld(event_envelope(e), withheld) for e in events]


def folded(event: Event) -> FoldedEvent:
    return FoldedEvent(
        seq=event.seq,
        type=event.type,
        payload=event.payload,
        actor_kind=event.actor_kind,
        actor_user_id=str(event.actor_user_id) if event.actor_user_id else None,
    )


def events_after(
    *,
    campaign_id: uuid.UUID | str,
    after_seq: int = 0,
    limit: int = 100,
    viewer: Viewer = SYSTEM_VIEWER,
    through_seq: int | None = None,
) -> list[Event]:
    """Events with seq > after_seq (and <= through_seq), in order, that `viewer` may see."""
    limit = max(1, min(limit, EVENTS_PAGE_MAX))
    found: list[Event] = []
    cursor = after_seq
    while len(found) < limit:
        qs = Event.objects.filter(campaign_id=campaign_id, seq__gt=cursor).order_by("seq")
        if through_seq is not None:
            qs = qs.filter(seq__lte=through_seq)
        page = list(qs[: limit - len(found)])
        if not page:
            break
        found.extend(e for e in page if event_visible(e.visibility, viewer))
        cursor = page[-1].seq
    return found


def events_of_type_after(
    *, campaign_id: uuid.UUID | str, event_type: str, after_seq: int = 0
) -> list[Event]:
    """Every event of one type after `after_seq`, in seq order, whoever may see it (the
    DM's prompt and the GMs: callers that show them to a member filter by visibility)."""
    return list(
        Event.objects.filter(campaign_id=campaign_id, type=event_type, seq__gt=after_seq).order_by(
            "seq"
        )
    )


def event_by_dedupe_key(*, campaign_id: uuid.UUID | str, key: str) -> Event | None:
    return Event.objects.filter(campaign_id=campaign_id, dedupe_key=key).first()


def snapshot_get(
    *, campaign_id: uuid.UUID | str, viewer: Viewer = SYSTEM_VIEWER
) -> Snapshot | None:
    snapshot = Snapshot.objects.filter(campaign_id=campaign_id).first()
    if snapshot is not None and not viewer.is_gm:
        snapshot.state = state_for_player(snapshot.state)
    return snapshot


def state_for_player(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of the state without what players have not discovered: the fold's `hidden`
    key (hidden flags, who whispered to whom) and every entity marked `hidden`."""
    hidden = hidden_entity_ids(state)
    view = {key: value for key, value in state.items() if key != "hidden"}
    if hidden:
        view["entities"] = {
            entity_id: entity
            for entity_id, entity in view["entities"].items()
            if entity_id not in hidden
        }
    return copy_state(view)


def hidden_entity_ids(state: dict[str, Any]) -> set[str]:
    """The ids of the entities the players have not discovered yet."""
    return {
        str(entity_id)
        for entity_id, entity in (state.get("entities") or {}).items()
        if isinstance(entity, dict) and entity.get("hidden") is True
    }


def player_actions_between(
    *, campaign_id: uuid.UUID | str, after_seq: int, through_seq: int
) -> list[Event]:
    return list(
        Event.objects.filter(
            campaign_id=campaign_id,
            type="player_action",
            seq__gt=after_seq,
            seq__lte=through_seq,
        ).order_by("seq")
    )


def player_actions_waiting(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str, before_seq: int
) -> int:
    """How many of this member's actions before `before_seq` the DM has not answered yet
    (after the state's `turn.answered_through_seq`): the room tells a player whose new
    action waits behind them."""
    snapshot = Snapshot.objects.filter(campaign_id=campaign_id).only("state").first()
    if snapshot is None:
        return 0
    answered = (snapshot.state.get("turn") or {}).get("answered_through_seq", 0)
    return Event.objects.filter(
        campaign_id=campaign_id,
        type="player_action",
        actor_user_id=user_id,
        seq__gt=answered,
        seq__lt=before_seq,
    ).count()


# --- A DM turn's rolls --------------------------------------------------------------------

# The keys of one roll as `campaigns.tools.turn_rolls_commit` and `turn_rolls_logged` give it.
ROLL_SUMMARY_EMPTY: dict[str, Any] = {
    "roll_id": None,
    "seq": None,
    "formula": "",
    "reason": "",
    "total": None,
    "detail": "",
    "dc": None,
    "success": None,
    "private_to": None,
    "error": None,
}


@dataclass(frozen=True)
class RollRequest:
    """A check the DM asked a player to roll (tool `request_roll`)."""

    roll_id: str
    for_user_id: str
    formula: str
    reason: str
    dc: int | None
    turn_id: str | None
    seq: int


def roll_request_get(*, campaign_id: uuid.UUID | str, roll_id: str) -> RollRequest | None:
    """The DM's request for this roll, with its DC (kept from the table until the dice
    fall), or None when the DM asked no one for it."""
    event = Event.objects.filter(
        campaign_id=campaign_id,
        type="roll_requested",
        payload__roll_id=str(roll_id),
        payload__requested_by="dm",
    ).first()
    if event is None or not event.payload.get("for_user_id"):
        return None
    held = Event.objects.filter(
        campaign_id=campaign_id, type="roll_dc_held", payload__roll_id=str(roll_id)
    ).first()
    return RollRequest(
        roll_id=str(roll_id),
        for_user_id=str(event.payload["for_user_id"]),
        formula=event.payload["formula"],
        reason=event.payload.get("reason", ""),
        dc=held.payload["dc"] if held is not None else None,
        turn_id=event.payload.get("turn_id"),
        seq=event.seq,
    )


def roll_result_exists(*, campaign_id: uuid.UUID | str, roll_id: str) -> bool:
    return Event.objects.filter(
        campaign_id=campaign_id, type="roll_result", payload__roll_id=str(roll_id)
    ).exists()


def roll_answer(*, campaign_id: uuid.UUID | str, roll_id: str) -> dict[str, Any] | None:
    """A requested roll's result once made (as `roll_summaries` gives it), else None."""
    events = list(
        Event.objects.filter(
            campaign_id=campaign_id,
            type__in=("roll_requested", "roll_result"),
            payload__roll_id=str(roll_id),
        ).order_by("seq")
    )
    summaries = roll_summaries(events)
    return summaries[0] if summaries else None


def turn_roll_requests_open(
    *, campaign_id: uuid.UUID | str, turn_id: str, after_seq: int = 0
) -> list[str]:
    """The roll ids a DM turn asked players for and nobody has rolled yet, in order."""
    asked = [
        str(roll_id)
        for roll_id in Event.objects.filter(
            campaign_id=campaign_id,
            type="roll_requested",
            seq__gt=after_seq,
            payload__turn_id=str(turn_id),
            payload__requested_by="dm",
        )
        .exclude(payload__for_user_id=None)
        .order_by("seq")
        .values_list("payload__roll_id", flat=True)
    ]
    rolled = {
        str(roll_id)
        for roll_id in Event.objects.filter(
            campaign_id=campaign_id, type="roll_result", seq__gt=after_seq
        )
        .filter(payload__turn_id=str(turn_id))
        .values_list("payload__roll_id", flat=True)
    }
    return [roll_id for roll_id in asked if roll_id not in rolled]


def roll_summaries(events: list[Event]) -> list[dict[str, Any]]:
    """Each `roll_result` among `events`, in their order, as a plain dict (the reason from
    its `roll_requested` when that is among them too): `roll_id`, `seq`, `formula`,
    `reason`, `total`, `detail`, `dc`, `success`, `private_to`, `error` (None)."""
    reasons = {
        str(e.payload.get("roll_id")): e.payload.get("reason", "")
        for e in events
        if e.type == "roll_requested"
    }
    summaries = []
    for event in events:
        if event.type != "roll_result":
            continue
        p = event.payload
        visibility = event.visibility or {}
        private_to = None
        if visibility.get("kind") == "users" and visibility.get("user_ids"):
            private_to = str(visibility["user_ids"][0])
        summaries.append(
            {
                **ROLL_SUMMARY_EMPTY,
                "roll_id": str(p.get("roll_id")),
                "seq": event.seq,
                "formula": p.get("formula", ""),
                "reason": reasons.get(str(p.get("roll_id")), ""),
                "total": p.get("total"),
                "detail": p.get("detail", ""),
                "dc": p.get("dc"),
                "success": p.get("success"),
                "private_to": private_to,
            }
        )
    return summaries


def turn_rolls_logged(
    *, campaign_id: uuid.UUID | str, turn_id: str, after_seq: int = 0
) -> list[dict[str, Any]]:
    """The rolls already logged under a DM turn's `turn_id`, in seq order, in the shape
    `campaigns.tools.turn_rolls_commit` returns: a redelivered or retried turn reuses
    them instead of rolling again (CONTRACTS §7 "Rolls are facts"). `after_seq` (say,
    the turn's first action's seq minus one) spares reading a long campaign's older rolls."""
    try:
        turn = str(uuid.UUID(str(turn_id)))
    except ValueError:
        return []
    events = Event.objects.filter(
        campaign_id=campaign_id,
        type__in=("roll_requested", "roll_result"),
        seq__gt=after_seq,
        payload__turn_id=turn,
    ).order_by("seq")
    return roll_summaries(list(events))


def entity_ids_by_creation(*, campaign_id: uuid.UUID | str) -> list[str]:
    """The ids of the campaign's entities, oldest first (the state's mapping has no order
    on PostgreSQL, whose jsonb keeps keys sorted its own way)."""
    return [
        str(entity_id)
        for entity_id in Event.objects.filter(campaign_id=campaign_id, type="entity_created")
        .order_by("seq")
        .values_list("payload__entity__id", flat=True)
    ]
