"""Reads for DM turns: a campaign's model settings and what a turn's prompt is made of."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from campaigns import selectors as campaign_selectors
from campaigns.retractions import told_by_retracted_turn, turns_retracted
from memory.selectors import TurnMemory, turn_memory_get

from .models import DMSettings, TurnLock
from .prompt import (
    STATE_ENTITIES_MAX,
    ActionInTurn,
    Direction,
    RecentEvent,
    Setup,
    TurnContext,
)

if TYPE_CHECKING:
    from campaigns.models import Event

log = logging.getLogger(__name__)

# More than a prompt budget of recent events usually holds; the budget decides how many go in.
RECENT_EVENTS_MAX = 120


@dataclass(frozen=True)
class DMConfig:
    provider: str  # blank: the settings' default
    model: str


def dm_models_allowed() -> list[str]:
    """The models a GM may choose: DM_MODEL first, then the operator's DM_MODELS_ALLOWED."""
    names = [settings.DM_MODEL, *settings.DM_MODELS_ALLOWED]
    return list(dict.fromkeys(n.strip() for n in names if n and n.strip()))


def dm_config_get(*, campaign_id: uuid.UUID | str) -> DMConfig:
    row = DMSettings.objects.filter(campaign_id=campaign_id).first()
    if row is None:
        return DMConfig("", "")
    # A model chosen before the operator narrowed DM_MODELS_ALLOWED is not used any more:
    # the operator's list is the ceiling, whatever is stored.
    model = row.model if row.model in dm_models_allowed() else ""
    return DMConfig(provider=row.provider, model=model)


def turn_owed(*, campaign_id: uuid.UUID | str) -> tuple[int, int] | None:
    """(answered_through_seq, last_action_seq) when player actions await an answer."""
    snapshot = campaign_selectors.snapshot_get(campaign_id=campaign_id)
    return owed_in(snapshot.state) if snapshot is not None else None


def owed_in(state: dict) -> tuple[int, int] | None:
    """turn_owed, from a snapshot's state the caller read already."""
    turn = state.get("turn", {})
    answered, last = turn.get("answered_through_seq", 0), turn.get("last_action_seq", 0)
    return (answered, last) if last > answered else None


@dataclass(frozen=True)
class Unfinished:
    """Rolls a turn made that no narration stands on: the turn goes on with them."""

    turn_id: str  # the turn that rolled them
    resumed: bool  # True: cut short, the next turn is that turn going on (same turn_id);
    # False: its narration was retracted (a retry), the new answer is a turn of its own


def events_since(*, campaign_id: uuid.UUID | str, after_seq: int) -> list[Event]:
    """Every event after `after_seq`, in order (pages of EVENTS_PAGE_MAX): what a turn
    reads of the log since its last answer, fetched once and shared by its selectors."""
    found: list[Event] = []
    cursor = after_seq
    while True:
        page = campaign_selectors.events_after(
            campaign_id=campaign_id, after_seq=cursor, limit=campaign_selectors.EVENTS_PAGE_MAX
        )
        found.extend(page)
        if len(page) < campaign_selectors.EVENTS_PAGE_MAX:
            return found
        cursor = page[-1].seq


def turn_window_start(answered_seq: int, through_seq: int) -> int:
    """Where a turn's read of the log starts: its recent events (the last
    RECENT_EVENTS_MAX) and every event since its last answer."""
    return min(answered_seq, max(0, through_seq - RECENT_EVENTS_MAX))


def turn_unfinished(
    *, campaign_id: uuid.UUID | str, answered_seq: int, since: list[Event] | None = None
) -> Unfinished | None:
    """A turn that rolled its dice and then neither narrated nor failed (it was cut short:
    its worker died, say), whose narration a GM retracted, or that a budget stop ended and
    a budget raise reopened (`turn_reopened`): the next turn is given its rolls instead of
    rolling again (CONTRACTS §7: rolls are facts). `since`: the events after
    `answered_seq` when the caller read them already (events_since)."""
    ended: set[str] = set()
    retracted: set[str] = set()  # retracted, and no answer since has used its rolls
    rolled: list[str] = []
    if since is None:
        since = events_since(campaign_id=campaign_id, after_seq=answered_seq)
    for event in since:
        if event.seq <= answered_seq:
            continue
        turn_id = (event.payload or {}).get("turn_id")
        if event.type == "turn_reopened":
            # A budget raise reopened the turns the budget stopped: their answers are
            # taken back as a retraction's is, and their rolls stand for the next one.
            retracted.update(t for t in rolled if t in ended)
            continue
        if not turn_id:
            continue
        if event.type in ("dm_narration", "turn_failed"):
            ended.add(str(turn_id))
            retracted.clear()  # the retry answered (or failed) with those rolls
        elif event.type == "dm_narration_retracted":
            retracted.add(str(turn_id))
        elif event.type == "roll_result" and event.actor_kind == "dm":
            rolled.append(str(turn_id))
        elif event.type == "roll_requested" and (event.payload or {}).get("for_user_id"):
            rolled.append(str(turn_id))  # a player's roll it asked for
    for turn_id in reversed(rolled):  # the latest such turn
        if turn_id in retracted:
            return Unfinished(turn_id, resumed=False)
        if turn_id not in ended:
            return Unfinished(turn_id, resumed=True)
    return None


def turn_context_get(
    *,
    campaign_id: uuid.UUID | str,
    answered_seq: int,
    through_seq: int,
    state: dict | None = None,
    since: list[Event] | None = None,
) -> TurnContext:
    """What the DM's prompt is built from. `state` (the snapshot's) and `since` (the
    events after turn_window_start, events_since) when the caller read them already: a
    turn reads the log once for its recent events and what came since its last answer
    (its CPU before the model call bounds the turns one process keeps in flight, issue 17)."""
    if state is None:
        snapshot = campaign_selectors.snapshot_get(campaign_id=campaign_id)
        state = snapshot.state if snapshot else {}
    recent_after = max(0, through_seq - RECENT_EVENTS_MAX)
    window = since
    if window is None:
        window = events_since(
            campaign_id=campaign_id, after_seq=turn_window_start(answered_seq, through_seq)
        )
    since = [e for e in window if e.seq > answered_seq]
    in_turn = [e for e in since if e.seq <= through_seq]
    members = state.get("members", {})
    characters = state.get("characters", {})
    actions = []
    for event in (e for e in in_turn if e.type == "player_action"):
        user_id = str(event.actor_user_id) if event.actor_user_id else None
        character_id = event.payload.get("character_id")
        character = characters.get(character_id or "", {})
        actions.append(
            ActionInTurn(
                seq=event.seq,
                who=members.get(user_id or "", {}).get("display_name")
                or character.get("name")
                or "Someone",
                user_id=user_id,
                character_id=character_id if character else None,
                character_name=character.get("name"),
                text=event.payload["text"],
            )
        )
    events = [e for e in window if recent_after < e.seq <= through_seq]
    reasons = {
        e.payload.get("roll_id"): e.payload.get("reason")
        for e in events
        if e.type == "roll_requested"
    }
    retracted = turns_retracted(campaign_id=campaign_id)
    withheld = campaign_selectors.names_withheld(campaign_id=campaign_id)
    recent = []
    for e in events:
        payload = e.payload
        if retracted and told_by_retracted_turn(e.type, payload, retracted):
            continue  # what a retried answer said is no longer the story
        if withheld and e.type in ("player_joined", "player_left"):
            # A deleted account's name is not sent to the model (docs/security.md).
            payload = {**payload, "display_name": campaign_selectors.name_shown(payload, withheld)}
        if e.type == "roll_result" and reasons.get(payload.get("roll_id")):
            payload = {**payload, "reason": reasons[payload.get("roll_id")]}
        recent.append(
            RecentEvent(
                seq=e.seq,
                type=e.type,
                actor_kind=e.actor_kind,
                actor_user_id=str(e.actor_user_id) if e.actor_user_id else None,
                payload=payload,
                visibility=e.visibility,
            )
        )
    return TurnContext(
        campaign_id=str(campaign_id),
        edition=str(state.get("campaign", {}).get("edition", "")),
        setup=_setup_of(state),
        # A new campaign's `campaign_created` asking for an opening scene, within the
        # turn's range: it was never narrated.
        opening=any(
            e.type == "campaign_created" and (e.payload or {}).get("opening") for e in in_turn
        ),
        x_card=any(e.type == "x_card" for e in in_turn),
        state=state,
        actions=actions,
        recent=recent,
        through_seq=through_seq,
        memory=_memory_get(campaign_id, state, actions, recent),
        entity_order=campaign_selectors.entity_ids_by_creation(campaign_id=campaign_id)
        if len(state.get("entities", {})) > STATE_ENTITIES_MAX
        else [],
        # The GM's directions since the last answer: narrated at once (`now`) or held for
        # this turn, they join its prompt as direction, never as a player's action.
        directions=[
            Direction(
                seq=e.seq,
                text=str(e.payload.get("text", "")),
                secret=(e.visibility or {}).get("kind", "all") != "all",
            )
            for e in since
            if e.type == "gm_direction"
        ],
        retries=sum(1 for e in since if e.type == "dm_narration_retracted"),
    )


def _setup_of(state: dict) -> Setup:
    """The campaign's setup as the DM keeps it (CONTRACTS §7): premise, tone, lines, veils."""
    campaign = state.get("campaign") or {}
    setup = campaign_selectors.campaign_setup(state)
    return Setup(
        name=str(campaign.get("name") or ""),
        premise=setup["premise"],
        tone=setup["tone"],
        lines=[str(item) for item in setup["lines"]],
        veils=[str(item) for item in setup["veils"]],
    )


def x_card_tapped(campaign_id: uuid.UUID | str, answered_seq: int, through_seq: int) -> bool:
    """Whether someone tapped the X-card since the last answer: this turn steers away."""
    return any(
        event.seq <= through_seq
        for event in campaign_selectors.events_of_type_after(
            campaign_id=campaign_id, event_type="x_card", after_seq=answered_seq
        )
    )


def _memory_get(
    campaign_id: uuid.UUID | str,
    state: dict,
    actions: list[ActionInTurn],
    recent: list[RecentEvent],
) -> TurnMemory | None:
    """The campaign's long memory for this turn; a turn goes on without it on failure."""
    last_narration = next((e for e in reversed(recent) if e.type == "dm_narration"), None)
    try:
        return turn_memory_get(
            campaign_id=campaign_id,
            state=state,
            action_texts=[a.text for a in actions],
            recent_texts=[str(last_narration.payload.get("text", ""))] if last_narration else [],
        )
    except Exception:
        log.exception("campaign %s: memory could not be read for this turn", campaign_id)
        return None


def turns_abandoned() -> list[str]:
    """Campaigns whose turn lock outlived TURN_LOCK_SECONDS: its holder died mid-turn."""
    stale = timezone.now() - timedelta(seconds=settings.TURN_LOCK_SECONDS)
    return [
        str(campaign_id)
        for campaign_id in TurnLock.objects.exclude(holder="")
        .filter(acquired_at__lt=stale)
        .values_list("campaign_id", flat=True)
    ]
