"""Event types of the authoritative tools (CONTRACTS §1 and §2): dice seeds, rolls, state
patches, entities and audio cues. Imported at the bottom of `campaigns.events`, so they
are registered wherever the registry is.

Reducers stay pure: a stored `state_patch_applied` is re-applied from its own payload,
so re-folding the log gives the same state.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any, Literal

import jsonpatch
import jsonpointer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from .events import FoldedEvent, InvalidEvent, Payload, event_type

HEX64 = r"^[0-9a-f]{64}$"
ENTITY_KINDS = ("npc", "item", "location", "faction", "creature")
EntityKind = Literal["npc", "item", "location", "faction", "creature"]


# --- Dice seeds ------------------------------------------------------------------------------


class DiceSeedCommitted(Payload):
    seed_id: uuid.UUID
    seed_hash: str = Field(pattern=HEX64)


@event_type("dice_seed_committed", DiceSeedCommitted)
def _dice_seed_committed(state: dict[str, Any], event: FoldedEvent) -> None:
    state["dice"] = {"seed_id": event.payload["seed_id"], "seed_hash": event.payload["seed_hash"]}


class DiceSeedRevealed(Payload):
    seed_id: uuid.UUID
    seed: str = Field(pattern=HEX64)


@event_type("dice_seed_revealed", DiceSeedRevealed)
def _dice_seed_revealed(state: dict[str, Any], event: FoldedEvent) -> None:
    # A revealed seed is no longer a secret: nothing may be rolled with it any more.
    if (state.get("dice") or {}).get("seed_id") == event.payload["seed_id"]:
        state.pop("dice", None)


# --- Rolls -----------------------------------------------------------------------------------


# A roll's target (CONTRACTS §7 "Rolls carry their target").
DC_MIN, DC_MAX = 1, 40


def roll_success(total: int, dc: int | None) -> bool | None:
    """Whether a roll met its DC: `total >= dc`; None for a roll without one."""
    return None if dc is None else total >= dc


def _turn_id_unset(turn_id: uuid.UUID | None) -> bool:
    return turn_id is None


class RollRequested(Payload):
    roll_id: uuid.UUID
    formula: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)
    requested_by: Literal["dm", "player"]
    # The DM turn that rolled it (left out for a roll outside a turn).
    turn_id: uuid.UUID | None = Field(default=None, exclude_if=_turn_id_unset)
    # The player the DM asks to roll their own check (tool `request_roll`): the request
    # stays open until their `roll_result` with this roll_id (or the server's, after
    # DM_PLAYER_ROLL_SECONDS).
    for_user_id: uuid.UUID | None = Field(default=None, exclude_if=_turn_id_unset)

    @model_validator(mode="before")
    @classmethod
    def _no_dc_before_the_dice_fall(cls, data: Any) -> Any:
        # The DC is told with the result only: a request carrying it would tell the
        # table (and the model reading the log) the target before the dice fall.
        if isinstance(data, dict) and "dc" in data:
            raise ValueError("a roll_requested never carries the dc; roll_result does")
        return data


@event_type("roll_requested", RollRequested)
def _roll_requested(state: dict[str, Any], event: FoldedEvent) -> None:
    pass


class DieFace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sides: int | Literal["%"]
    value: int
    kept: bool


class RollResult(Payload):
    roll_id: uuid.UUID
    seed_id: uuid.UUID
    formula: str = Field(min_length=1, max_length=200)
    total: int
    detail: str = Field(max_length=4000)
    dice: list[DieFace] = Field(default_factory=list, max_length=1000)
    # The target, told only now; `success` is total >= dc (both null without a dc, as in
    # every roll_result logged before there were DCs).
    dc: StrictInt | None = Field(default=None, ge=DC_MIN, le=DC_MAX)
    success: bool | None = None
    turn_id: uuid.UUID | None = Field(default=None, exclude_if=_turn_id_unset)

    @model_validator(mode="after")
    def _success_follows_the_dice(self) -> RollResult:
        expected = roll_success(self.total, self.dc)
        if self.success is None:
            self.success = expected
        elif self.success is not expected:
            raise ValueError("success is total >= dc, and null without a dc")
        return self


class RollDcHeld(Payload):
    """The DC of a roll the DM asked a player for, kept for the GMs until the dice fall
    (`roll_requested` never carries it); the player's `roll_result` then tells it."""

    roll_id: uuid.UUID
    dc: StrictInt = Field(ge=DC_MIN, le=DC_MAX)
    turn_id: uuid.UUID | None = Field(default=None, exclude_if=_turn_id_unset)


@event_type("roll_dc_held", RollDcHeld)
def _roll_dc_held(state: dict[str, Any], event: FoldedEvent) -> None:
    pass


@event_type("roll_result", RollResult)
def _roll_result(state: dict[str, Any], event: FoldedEvent) -> None:
    pass


# --- State patches ---------------------------------------------------------------------------


class PatchOperation(BaseModel):
    """The shape of one RFC 6902 operation (the allow-list is the tools' business)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str = Field(max_length=300)
    value: Any = None
    from_: str | None = Field(default=None, alias="from", max_length=300)


def _operations(patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for operation in patches:
        PatchOperation.model_validate(operation)
    return patches


class StatePatchRequested(Payload):
    patch_id: uuid.UUID
    reason: str = Field(default="", max_length=500)
    # As proposed (already shaped as operations, or empty when the proposal had none).
    patches: list[dict[str, Any]] = Field(default_factory=list, max_length=64)


@event_type("state_patch_requested", StatePatchRequested)
def _state_patch_requested(state: dict[str, Any], event: FoldedEvent) -> None:
    pass


class StatePatchApplied(Payload):
    patch_id: uuid.UUID
    patches: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    # Set when this patch compensates an earlier event (a GM revert).
    reverts_seq: int | None = Field(default=None, ge=1)
    # The entities this patch reveals (hidden before, no longer after), whole, for the
    # players who never saw their `entity_created`; left out when there are none.
    # The fold ignores it: the patches alone say what changes.
    revealed: list[Entity] = Field(
        default_factory=list, max_length=64, exclude_if=lambda revealed: not revealed
    )

    @field_validator("patches")
    @classmethod
    def _shaped_as_operations(cls, patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _operations(patches)


def patches_apply(state: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The state with the patches applied, on a copy (the stored payload is never aliased)."""
    return jsonpatch.JsonPatch(copy.deepcopy(patches)).apply(copy.deepcopy(state))


@event_type("state_patch_applied", StatePatchApplied)
def _state_patch_applied(state: dict[str, Any], event: FoldedEvent) -> None:
    try:
        patched = patches_apply(state, event.payload["patches"])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise InvalidEvent(f"state_patch_applied does not apply to the state: {exc}") from None
    state.clear()
    state.update(patched)


class StatePatchRejected(Payload):
    """A refused patch, for the GMs only (visibility `gm`): `error` names the operation
    and its pointer (the DM's next prompt tells it what to fix); `plain` says it in words
    for a person, without pointers or ids (absent from older events)."""

    patch_id: uuid.UUID
    error: str = Field(min_length=1, max_length=2000)
    plain: str = Field(default="", max_length=500)


@event_type("state_patch_rejected", StatePatchRejected)
def _state_patch_rejected(state: dict[str, Any], event: FoldedEvent) -> None:
    pass


# --- Entities and audio ----------------------------------------------------------------------


class Entity(BaseModel):
    id: uuid.UUID
    kind: EntityKind
    name: str = Field(min_length=1, max_length=80)
    data: dict[str, Any] = Field(default_factory=dict)
    # Not yet discovered by the players: the event is GM-only and the fold keeps
    # `"hidden": true` on the entity (campaigns.selectors.snapshot_get drops it for them).
    # Left out of the payload when false, as before there was such a thing.
    hidden: bool = Field(default=False, exclude_if=lambda hidden: not hidden)


class EntityCreated(Payload):
    entity: Entity


@event_type("entity_created", EntityCreated)
def _entity_created(state: dict[str, Any], event: FoldedEvent) -> None:
    entity = event.payload["entity"]
    state.setdefault("entities", {})[entity["id"]] = {
        "kind": entity["kind"],
        "name": entity["name"],
        "data": copy.deepcopy(entity["data"]),
    }
    if entity.get("hidden") is True:
        state["entities"][entity["id"]]["hidden"] = True


class AudioCue(Payload):
    cue: str = Field(min_length=1, max_length=64)
    volume: float = Field(ge=0, le=1)
    # The cue's sound file when one is configured (settings.AUDIO_CUES); the room plays it.
    url: str | None = Field(default=None, max_length=500)


@event_type("audio_cue", AudioCue)
def _audio_cue(state: dict[str, Any], event: FoldedEvent) -> None:
    pass
