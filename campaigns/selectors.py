"""Reads of campaigns, members, events and snapshots."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

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


def user_banned(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> bool:
    """Whether the GM kicked this user from the campaign and has not lifted the ban."""
    return CampaignBan.objects.filter(campaign_id=campaign_id, user_id=user_id).exists()


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
        wanted = limit - len(found)
        page = list(qs[:wanted])
        found.extend(e for e in page if event_visible(e.visibility, viewer))
        if len(page) < wanted:
            break  # the end of the log: no need to ask again
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


# --- The DM stopped for budget (CONTRACTS §7 "GM controls") -----------------------------------

# The events that settle (or unsettle) whether the table's actions are answered.
ANSWER_TYPES = ("dm_narration", "turn_failed", "dm_narration_retracted", "turn_reopened")
BUDGET_EXCEEDED = "budget_exceeded"


@dataclass(frozen=True)
class BudgetStop:
    """The DM stopped for budget and nothing has answered the table since: the latest
    answer is a `turn_failed` with code `budget_exceeded`."""

    turn_id: str
    through_seq: int  # the last seq the stopped turn covered
    answered_before: int  # what was answered before the DM began to stop: reopened after it
    scope: str  # whose cap: "campaign", or "user" (a player's own allowance)
    user_id: str | None  # the player whose allowance it was (scope "user")
    # The GM-only notice beside the stop (billing's `budget_refused` payload), if any:
    # billing reads what the refused call needed from it.
    notice: dict[str, Any] = field(default_factory=dict)


def budget_stop_get(*, campaign_id: uuid.UUID | str) -> BudgetStop | None:
    """The budget stop the table is in now, or None (the latest answer is a narration, a
    failure of another kind, or a reopening: a turn is answering already).

    What is reopened: every action since the last narration (CONTRACTS §7), that is the
    answered mark as it stood before the run of failed turns that ends in this one (each
    `turn_failed` records it as `answered_seq`; older ones do not, and then the narration
    or retraction that ends the run says it)."""
    answers = (
        Event.objects.filter(campaign_id=campaign_id, type__in=ANSWER_TYPES)
        .order_by("-seq")
        .only("seq", "type", "payload")
    )
    stop: Event | None = None
    recorded: list[int] = []
    ended_by: int | None = None
    for event in answers.iterator(chunk_size=50):
        payload = event.payload or {}
        if stop is None:
            if event.type != "turn_failed" or payload.get("code") != BUDGET_EXCEEDED:
                return None
            stop = event
        if event.type == "turn_failed":
            if isinstance(payload.get("answered_seq"), int):
                recorded.append(payload["answered_seq"])
            continue
        if event.type == "turn_reopened":
            continue
        if event.type == "dm_narration_retracted":
            ended_by = int(payload.get("answered_through_seq") or 0)
            break
        if event.type == "dm_narration" and payload.get("through_seq"):
            ended_by = int(payload["through_seq"])
            break
        # A narration that answered no action (a tool run outside any turn) ends nothing.
    if stop is None:
        return None
    answered_before = min(recorded) if recorded else (ended_by or 0)
    turn_id = str(stop.payload.get("turn_id") or "")
    refusal = (
        Event.objects.filter(campaign_id=campaign_id, type="budget_refused", seq__gt=stop.seq)
        .filter(payload__turn_id=turn_id)
        .order_by("-seq")
        .only("payload")
        .first()
        if turn_id
        else None
    )
    scope = str((refusal.payload or {}).get("scope") or "campaign") if refusal else "campaign"
    user_id = (refusal.payload or {}).get("user_id") if refusal else None
    return BudgetStop(
        turn_id=turn_id,
        through_seq=int(stop.payload.get("through_seq") or 0),
        answered_before=max(0, answered_before),
        scope=scope,
        user_id=str(user_id) if user_id else None,
        notice=dict(refusal.payload or {}) if refusal else {},
    )


# --- The campaign list: players, last activity, whose turn -------------------------------------


@dataclass(frozen=True)
class TableStatus:
    """A campaign as its list shows it (CONTRACTS §7 "GM controls"): how many players,
    when something last happened (the latest event's time), and whose turn it is:
    `waiting_for` "dm" (a turn is owed or running), "players" (a round waits for
    `waiting_user_ids`), or None (nothing is pending)."""

    players: int = 0
    last_activity_at: datetime | None = None
    waiting_for: str | None = None
    waiting_user_ids: list[str] = field(default_factory=list)
    waiting_names: list[str] = field(default_factory=list)

    @property
    def whose_turn_text(self) -> str:
        if self.waiting_for == "dm":
            return "Waiting for the DM"
        if self.waiting_for == "players" and self.waiting_names:
            return "Waiting for " + _names_said(self.waiting_names)
        return ""


def _names_said(names: list[str], most: int = 3) -> str:
    """ "Alice", "Alice and Bob", "Alice, Bob and Cara", "Alice, Bob and 3 more"."""
    if len(names) > most:
        return f"{', '.join(names[: most - 1])} and {len(names) - most + 1} more"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def tables_status(*, campaign_ids: Iterable[uuid.UUID | str]) -> dict[str, TableStatus]:
    """The list's status of each campaign, keyed by its id as text, in at most three
    queries whatever their number: the snapshots (only their `turn`, with the time of
    the latest event from the log's unique (campaign, seq) index), the players, and, for
    rounds with an open round, the actions since the last answer.

    A round waits for the players who have not acted since it began (the room narrows
    that to the players online; the list does not know who is), until its timer runs
    out: then, as in free play, a turn owed means the table waits for the DM."""
    ids = [str(cid) for cid in campaign_ids]
    if not ids:
        return {}
    latest = Event.objects.filter(campaign_id=OuterRef("campaign_id"), seq=OuterRef("version"))
    snapshots = {
        str(row["campaign_id"]): row
        for row in Snapshot.objects.filter(campaign_id__in=ids)
        .annotate(last_at=Subquery(latest.values("created_at")[:1]))
        .values(
            "campaign_id",
            "state__turn",
            "last_at",
            "campaign__turn_mode",
            "campaign__round_seconds",
            "campaign__archived",
        )
    }
    players: dict[str, list[tuple[str, str]]] = {cid: [] for cid in ids}
    for campaign_id, user_id, name in (
        Membership.objects.filter(campaign_id__in=ids, role=Membership.Role.PLAYER)
        .order_by("joined_at")
        .values_list("campaign_id", "user_id", "display_name")
    ):
        players[str(campaign_id)].append((str(user_id), name))

    owed: dict[str, tuple[int, int]] = {}
    for cid, row in snapshots.items():
        turn = row["state__turn"] if isinstance(row["state__turn"], dict) else {}
        answered = int(turn.get("answered_through_seq") or 0)
        last = int(turn.get("last_action_seq") or 0)
        if last > answered and not row["campaign__archived"]:
            owed[cid] = (answered, last)
    rounds = [cid for cid in owed if snapshots[cid]["campaign__turn_mode"] == "rounds"]
    acted: dict[str, list[tuple[str | None, datetime]]] = {cid: [] for cid in rounds}
    if rounds:
        window = Q()
        for cid in rounds:
            answered, last = owed[cid]
            window |= Q(campaign_id=cid, seq__gt=answered, seq__lte=last)
        for campaign_id, user_id, created_at in (
            Event.objects.filter(type="player_action")
            .filter(window)
            .values_list("campaign_id", "actor_user_id", "created_at")
        ):
            acted[str(campaign_id)].append((str(user_id) if user_id else None, created_at))

    now = timezone.now()
    result: dict[str, TableStatus] = {}
    for cid in ids:
        row = snapshots.get(cid)
        if row is None:
            continue
        waiting_for: str | None = None
        waiting: list[tuple[str, str]] = []
        if cid in owed:
            waiting_for = "dm"
            actions = acted.get(cid)
            if actions:  # an open round: the first action started it
                deadline = min(at for _, at in actions) + timedelta(
                    seconds=int(row["campaign__round_seconds"] or 0)
                )
                done = {user_id for user_id, _ in actions}
                waiting = [(uid, name) for uid, name in players[cid] if uid not in done]
                if waiting and now < deadline:
                    waiting_for = "players"
                else:
                    waiting = []
        result[cid] = TableStatus(
            players=len(players[cid]),
            last_activity_at=row["last_at"],
            waiting_for=waiting_for,
            waiting_user_ids=[uid for uid, _ in waiting],
            waiting_names=[name for _, name in waiting],
        )
    return result
