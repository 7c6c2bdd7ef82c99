"""Retry keeps the dice (CONTRACTS §7): a GM asks the DM for another answer to the latest
narration.

`narration_retract` appends, in one transaction, `dm_narration_retracted` {narration_seq,
turn_id, by_user_id, answered_through_seq} and a compensating GM patch that undoes what
the retracted turn changed in the state (its patches, the entities it made). The log
stays immutable: the turn's events remain, and the retraction folds the turn back to
"owed", so the same actions are answered again. Its rolls are facts: the orchestrator
gives them to the new answer (orchestrator.selectors.turn_unfinished) and rolls nothing.
Readers that tell the story (the DM's prompt, summaries) leave out what a retracted
turn said: `turns_retracted` names those turns.
"""

from __future__ import annotations

import uuid
from typing import Any

import jsonpatch
import jsonpointer
from pydantic import Field

from rpgai.errors import Conflict, DomainError, NotFound, PermissionDenied

from . import selectors
from .events import FoldedEvent, NewEvent, Payload, copy_state, event_type, fold, fold_all
from .models import Event
from .services import events_append
from .state_schema import PatchRefused, patch_check, patch_is_secret, path_allowed
from .tools import gm_patch_events

# A turn's own events that are facts, not changes to undo: its rolls stay, its narration
# is what the retraction takes back.
KEPT_TYPES = frozenset({"roll_requested", "roll_result", "dm_narration"})
# Parts of the state a compensating patch leaves alone: the retraction event itself sets
# the turn back, and the rest is no turn's to change.
NOT_COMPENSATED = ("/turn", "/last_options", "/members", "/campaign")


class DmNarrationRetracted(Payload):
    narration_seq: int = Field(ge=1)
    turn_id: uuid.UUID
    by_user_id: uuid.UUID
    # Where the turn started: its actions are owed an answer again.
    answered_through_seq: int = Field(ge=0)
    options_before: list[str] = Field(default_factory=list, max_length=8)


@event_type("dm_narration_retracted", DmNarrationRetracted)
def _dm_narration_retracted(state: dict[str, Any], event: FoldedEvent) -> None:
    turn = state["turn"]
    turn["answered_through_seq"] = min(
        turn["answered_through_seq"], event.payload["answered_through_seq"]
    )
    state["last_options"] = list(event.payload.get("options_before") or [])


def turns_retracted(*, campaign_id: uuid.UUID | str) -> set[str]:
    """The turn ids whose narration a GM retracted: what they said leaves the story."""
    return {
        str(turn_id)
        for turn_id in Event.objects.filter(
            campaign_id=campaign_id, type="dm_narration_retracted"
        ).values_list("payload__turn_id", flat=True)
    }


def told_by_retracted_turn(event_type: str, payload: dict[str, Any], retracted: set[str]) -> bool:
    """Whether an event is what a retracted turn told or did (its narration, private
    words, sound cues, changes), which leaves prompts and summaries; its rolls do not."""
    turn_id = payload.get("turn_id") if isinstance(payload, dict) else None
    return (
        turn_id is not None
        and str(turn_id) in retracted
        and event_type not in ("roll_requested", "roll_result", "dm_narration_retracted")
    ) or event_type == "dm_narration_retracted"


def narration_retract(
    *,
    campaign_id: uuid.UUID | str,
    by_user: Any,
    narration_seq: int,
    request_id: str = "",
) -> list[Event]:
    """Take back the latest narration so that the DM answers its actions again (GM only).

    NotFound when `narration_seq` is not a narration of this campaign; Conflict (409)
    with code `not_latest`, `player_acted`, `already_retried`, or `changed_since` /
    `cannot_undo` when what its turn changed cannot be undone (the GM sets it directly)."""
    membership = selectors.membership_get(
        campaign_id=campaign_id, user_id=getattr(by_user, "id", None)
    )
    if membership is None or not membership.is_gm:
        raise PermissionDenied("only a GM of this campaign may ask the DM for another answer")
    if not isinstance(narration_seq, int) or isinstance(narration_seq, bool) or narration_seq < 1:
        raise DomainError("seq is a positive integer")
    narration = Event.objects.filter(
        campaign_id=campaign_id, seq=narration_seq, type="dm_narration"
    ).first()
    if narration is None:
        raise NotFound(f"no narration #{narration_seq} in this campaign")
    turn_id = str(narration.payload["turn_id"])
    if turn_id in turns_retracted(campaign_id=campaign_id):
        raise Conflict("this narration was already retried", code="already_retried")
    later = (
        Event.objects.filter(
            campaign_id=campaign_id,
            seq__gt=narration_seq,
            type__in=("player_action", "dm_narration", "turn_failed"),
        )
        .order_by("seq")
        .first()
    )
    if later is not None:
        if later.type == "player_action":
            raise Conflict("a player acted after this narration", code="player_acted")
        raise Conflict("only the latest narration can be retried", code="not_latest")

    # The state before the turn, and after the turn's own changes alone (other events
    # that fell within it, a player joining say, are not the turn's to undo).
    own = list(
        Event.objects.filter(
            campaign_id=campaign_id, payload__turn_id=turn_id, seq__lte=narration_seq
        ).order_by("seq")
    )
    first_seq = own[0].seq
    earlier = Event.objects.filter(campaign_id=campaign_id, seq__lt=first_seq).order_by("seq")
    before = fold_all([selectors.folded(e) for e in earlier.iterator(chunk_size=2000)])
    after = copy_state(before)
    for event in own:
        if event.type not in KEPT_TYPES:
            fold(after, selectors.folded(event))
    inverse = [
        operation
        for raw in jsonpatch.make_patch(after, before).patch
        if not raw["path"].startswith(NOT_COMPENSATED)
        for operation in _gm_allowed(raw, after)
    ]
    answered_before = before["turn"]["answered_through_seq"]
    options_before = list(before.get("last_options") or [])[:8]

    def build(state: dict[str, Any]) -> list[NewEvent]:
        turn = state["turn"]
        if turn["last_action_seq"] > narration.payload.get("through_seq", 0):
            raise Conflict("a player acted after this narration", code="player_acted")
        if turn["answered_through_seq"] != narration.payload.get("through_seq", 0):
            raise Conflict("only the latest narration can be retried", code="not_latest")
        events = [
            NewEvent(
                "dm_narration_retracted",
                {
                    "narration_seq": narration_seq,
                    "turn_id": turn_id,
                    "by_user_id": str(by_user.id),
                    "answered_through_seq": answered_before,
                    "options_before": options_before,
                },
                "gm",
                by_user.id,
            )
        ]
        if inverse:
            for operation in inverse:
                if _value_at(state, operation["path"]) != _value_at(after, operation["path"]):
                    raise Conflict(
                        f"what this turn changed at {operation['path']} has changed since; "
                        "set it directly instead",
                        code="changed_since",
                    )
            # Two patches: what touches hidden things goes to the GMs alone, and the rest
            # (hit points restored, say) stays in every player's log.
            secret = [op for op in inverse if patch_is_secret(state, None, [op])]
            public = [op for op in inverse if op not in secret]
            current = state
            for patches in (public, secret):
                if not patches:
                    continue
                try:
                    patched = patch_check(current, patches, actor="gm")
                except PatchRefused as exc:
                    raise Conflict(
                        f"this turn's changes cannot be undone: {exc.detail}", code="cannot_undo"
                    ) from None
                events += gm_patch_events(
                    patches=patches,
                    reason="the GM asked the DM for another answer",
                    by_user=by_user,
                    before=current,
                    after=patched,
                )
                current = patched
        return events

    return events_append(campaign_id=campaign_id, events=build, request_id=request_id)


def _gm_allowed(operation: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """`operation`, or, for the removal of a container a GM patch may not remove (the
    /hidden the turn's first hidden flag made), the removals of what is inside it."""
    if operation["op"] != "remove" or path_allowed(operation["path"], "remove", actor="gm"):
        return [operation]
    value = _value_at(after, operation["path"])
    if not isinstance(value, dict):
        return [operation]  # refused by patch_check, with its reason
    return [
        part
        for key in value
        for part in _gm_allowed(
            {"op": "remove", "path": f"{operation['path']}/{_escape(key)}"}, after
        )
    ]


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


_ABSENT = object()


def _value_at(document: Any, path: str) -> Any:
    try:
        return jsonpointer.JsonPointer(path).resolve(document)
    except (jsonpointer.JsonPointerException, KeyError, IndexError, TypeError):
        return _ABSENT
