"""What a campaign's state may be, and which parts of it a patch may touch.

`CampaignState` is the pydantic schema of the snapshot state (CONTRACTS §1, plus the keys
the fold also keeps: members, turn, campaign, dice). Keys other apps add at the top level
are allowed; what the tools can change is checked strictly.

`patch_check` is the one gate for RFC 6902 patches, from the DM model or a GM: every
operation's path (and `from`) must match the actor's allow-list, the patch is applied
to a copy, and the result must satisfy the schema (hp within 0..max_hp, ...) and leave
the protected parts (owners, ids, members, turn, campaign, dice, the hidden whispers)
exactly as they were.

Hidden state (`hidden_containers`, `patch_is_secret`, `entities_revealed`): entities
marked `hidden` and the flags under `/hidden/flags` are for the GMs (and the DM) only;
these say which patches must be recorded GM-only and what a reveal brings to the players.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import jsonpatch
import jsonpointer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from rpgai.errors import DomainError

from .tool_events import PatchOperation, patches_apply

UUID_TEXT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
UuidText = Annotated[str, StringConstraints(strict=True, pattern=UUID_TEXT)]
FlagName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
Item = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Condition = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=60)]

MAX_PATCH_OPERATIONS = 32
MAX_STATE_BYTES = 512 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class SceneState(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")

    location: StrictStr = Field(max_length=200)
    description: StrictStr = Field(max_length=4000)


class CharacterState(_Strict):
    # Other features may add fields to a character; the tools never let the DM add any.
    model_config = ConfigDict(strict=True, extra="allow")

    name: StrictStr = Field(min_length=1, max_length=60)
    owner_user_id: UuidText | None
    hp: StrictInt = Field(ge=0)
    max_hp: StrictInt = Field(ge=1, le=10_000)
    ac: StrictInt = Field(ge=0, le=100)
    inventory: list[Item] = Field(max_length=200)
    conditions: list[Condition] = Field(max_length=50)

    @model_validator(mode="after")
    def _hp_within_max(self) -> CharacterState:
        if self.hp > self.max_hp:
            raise ValueError(f"hp {self.hp} is above max_hp {self.max_hp}")
        return self


class EntityState(_Strict):
    kind: Literal["npc", "item", "location", "faction", "creature"]
    name: StrictStr = Field(min_length=1, max_length=80)
    data: dict[str, JsonValue]
    # True while the players have not discovered it: kept out of their snapshot.
    hidden: StrictBool = False


class MemberState(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")

    display_name: StrictStr
    role: Literal["gm", "player"]


class TurnState(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")

    last_action_seq: StrictInt = Field(ge=0)
    answered_through_seq: StrictInt = Field(ge=0)


class CampaignInfo(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")

    name: StrictStr
    edition: StrictStr


class DiceCommitment(_Strict):
    seed_id: UuidText
    seed_hash: StrictStr = Field(pattern=r"^[0-9a-f]{64}$")


class HiddenState(_Strict):
    """The GM-only part of the state: hidden flags (patchable) and the whispers' log
    (campaigns.whispers, never patchable)."""

    model_config = ConfigDict(strict=True, extra="allow")

    flags: dict[FlagName, JsonValue] = Field(default_factory=dict, max_length=500)


class CampaignState(_Strict):
    # Other apps may keep their own top-level keys (summaries, hidden state, ...).
    model_config = ConfigDict(strict=True, extra="allow")

    scene: SceneState
    characters: dict[UuidText, CharacterState]
    entities: dict[UuidText, EntityState] = Field(max_length=2000)
    flags: dict[FlagName, JsonValue] = Field(max_length=500)
    last_options: list[StrictStr]
    members: dict[UuidText, MemberState]
    turn: TurnState
    campaign: CampaignInfo | None = None
    dice: DiceCommitment | None = None
    hidden: HiddenState | None = None


class PatchRefused(DomainError):
    code = "patch_rejected"


def _pydantic_problems(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = "/".join(str(p) for p in error["loc"]) or "state"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def state_validate(state: dict[str, Any]) -> None:
    """PatchRefused unless the state fits the schema."""
    try:
        CampaignState.model_validate(state)
    except ValidationError as exc:
        raise PatchRefused(
            f"the result breaks the state schema: {_pydantic_problems(exc)}"
        ) from None


# --- The allow-lists -------------------------------------------------------------------------
# A rule is a path pattern and the operations it admits. In a pattern, `*` is one segment
# (an id or a key) and `**` any number of further segments, none included.

ALL_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
SET_OPS = frozenset({"add", "replace", "test"})
Rule = tuple[tuple[str, ...], frozenset[str]]

DM_RULES: tuple[Rule, ...] = (
    (("characters", "*", "hp"), SET_OPS),
    (("characters", "*", "conditions", "**"), ALL_OPS),
    (("characters", "*", "inventory", "**"), ALL_OPS),
    (("entities", "*"), frozenset({"remove", "test"})),
    (("entities", "*", "name"), SET_OPS),
    (("entities", "*", "data", "**"), ALL_OPS),
    (("entities", "*", "hidden"), frozenset({*SET_OPS, "remove"})),
    (("scene", "**"), ALL_OPS),
    (("flags", "**"), ALL_OPS),
    (("hidden", "flags", "**"), ALL_OPS),
)
# A GM may also correct what the DM may not: a character's name, max_hp and ac, an
# entity's kind. Owners, ids, members, the turn and the campaign stay out of reach.
GM_RULES: tuple[Rule, ...] = (
    *DM_RULES,
    (("characters", "*", "name"), SET_OPS),
    (("characters", "*", "max_hp"), SET_OPS),
    (("characters", "*", "ac"), SET_OPS),
    (("entities", "*", "kind"), SET_OPS),
)
DM_ALLOWED_TEXT = (
    "characters/<id>/hp, characters/<id>/conditions, characters/<id>/inventory, "
    "entities/<id>/name, data and hidden (or removing entities/<id>), scene, flags "
    "and hidden/flags"
)
GM_ALLOWED_TEXT = DM_ALLOWED_TEXT + ", and characters/<id>/name, max_hp, ac, entities/<id>/kind"


def _matches(pattern: tuple[str, ...], parts: list[str]) -> bool:
    for i, segment in enumerate(pattern):
        if segment == "**":
            return True
        if i >= len(parts):
            return False
        if segment != "*" and segment != parts[i]:
            return False
    return len(parts) == len(pattern)


def _pointer_parts(path: str) -> list[str]:
    try:
        return list(jsonpointer.JsonPointer(path).parts)
    except jsonpointer.JsonPointerException as exc:
        raise PatchRefused(f"{path!r} is not a JSON pointer ({exc})") from None


def path_allowed(path: str, op: str, *, actor: Literal["dm", "gm"]) -> bool:
    parts = _pointer_parts(path)
    rules = GM_RULES if actor == "gm" else DM_RULES
    return any(op in ops and _matches(pattern, parts) for pattern, ops in rules)


def _protected(state: dict[str, Any]) -> dict[str, Any]:
    """What no patch may change: everything but the patchable subtrees, plus owners and ids."""
    view = {
        key: value
        for key, value in state.items()
        if key not in ("scene", "characters", "entities", "flags", "hidden")
    }
    # Of the hidden state only its flags may change (the whispers' log is the fold's).
    hidden_rest = {k: v for k, v in (state.get("hidden") or {}).items() if k != "flags"}
    if hidden_rest:
        view["hidden"] = hidden_rest
    view["character_owners"] = {
        cid: c.get("owner_user_id") for cid, c in (state.get("characters") or {}).items()
    }
    return view


def hidden_containers(state: dict[str, Any], patches: Any) -> list[dict[str, Any]]:
    """The server's own operations that make room for hidden flags: `add /hidden {}` and
    `add /hidden/flags {}` when a patch writes /hidden/flags (or under it) and they are
    missing. They go first in the recorded patch (so that re-folding the log gives the same
    state); the proposer's operations are checked against the allow-list as usual."""
    if not isinstance(patches, list):
        return []
    wants = any(
        isinstance(op, dict)
        and isinstance(op.get("path"), str)
        and (op["path"] == "/hidden/flags" or op["path"].startswith("/hidden/flags/"))
        for op in patches
    )
    if not wants:
        return []
    hidden = state.get("hidden")
    if hidden is None:
        return [{"op": "add", "path": "/hidden", "value": {"flags": {}}}]
    if isinstance(hidden, dict) and "flags" not in hidden:
        return [{"op": "add", "path": "/hidden/flags", "value": {}}]
    return []


def patch_check(
    state: dict[str, Any],
    patches: Any,
    *,
    actor: Literal["dm", "gm"] = "dm",
    prelude: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The state after `patches`, or PatchRefused saying why. `state` is not modified.
    `prelude` (from `hidden_containers`) is applied first without the allow-list."""
    if not isinstance(patches, list) or not patches:
        raise PatchRefused("patches must be a non-empty list of RFC 6902 operations")
    if len(patches) > MAX_PATCH_OPERATIONS:
        raise PatchRefused(f"a patch has at most {MAX_PATCH_OPERATIONS} operations")
    allowed_text = GM_ALLOWED_TEXT if actor == "gm" else DM_ALLOWED_TEXT
    who = "a GM" if actor == "gm" else "the DM"
    for index, operation in enumerate(patches):
        if not isinstance(operation, dict):
            raise PatchRefused(f"operation {index} is not an object")
        try:
            PatchOperation.model_validate(operation)
        except ValidationError as exc:
            raise PatchRefused(f"operation {index}: {_pydantic_problems(exc, 2)}") from None
        op, path = operation["op"], operation["path"]
        if op in SET_OPS and "value" not in operation:
            raise PatchRefused(f"operation {index} ({op} {path}) has no value")
        if op in ("move", "copy") and "from" not in operation:
            raise PatchRefused(f"operation {index} ({op} {path}) has no from")
        if not path_allowed(path, op, actor=actor):
            raise PatchRefused(
                f"operation {index}: {op} {path} is not allowed; {who} may change {allowed_text}"
            )
        if op in ("move", "copy"):
            source_op = "remove" if op == "move" else "test"
            if not path_allowed(operation["from"], source_op, actor=actor):
                raise PatchRefused(
                    f"operation {index}: {op} from {operation['from']} is not allowed; "
                    f"{who} may change {allowed_text}"
                )
    try:
        patched = patches_apply(state, [*(prelude or []), *patches])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchRefused(f"the patch does not apply: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise PatchRefused(f"the patch does not apply: {exc}") from None
    if not isinstance(patched, dict):
        raise PatchRefused("the patch would replace the whole state")
    state_validate(patched)
    if _protected(patched) != _protected(state):
        raise PatchRefused("the patch would change owners, ids or other protected state")
    size = len(json.dumps(patched, separators=(",", ":")))
    if size > MAX_STATE_BYTES:
        raise PatchRefused(f"the state would grow past {MAX_STATE_BYTES} bytes")
    return patched


# --- Hidden state ------------------------------------------------------------------------------


def _loose_parts(pointer: Any) -> list[str] | None:
    if not isinstance(pointer, str):
        return None
    try:
        return list(jsonpointer.JsonPointer(pointer).parts)
    except jsonpointer.JsonPointerException:
        return [part for part in pointer.split("/")[1:]]


def _hidden_ids(state: dict[str, Any] | None) -> set[str]:
    entities = (state or {}).get("entities") or {}
    if not isinstance(entities, dict):
        return set()
    return {
        str(entity_id)
        for entity_id, entity in entities.items()
        if isinstance(entity, dict) and entity.get("hidden") is True
    }


def patch_is_secret(before: dict[str, Any], after: dict[str, Any] | None, patches: Any) -> bool:
    """Whether a patch's events are for the GMs only: an operation (its path or `from`)
    touches /hidden, or an entity hidden after the patch (or, for a refused patch whose
    `after` is None, hidden before it), or an entity hidden before that the patch
    removes. A reveal (the entity is there and no longer hidden after) is public."""
    if not isinstance(patches, list):
        return False
    hidden_before = _hidden_ids(before)
    hidden_after = _hidden_ids(after) if after is not None else hidden_before
    after_entities = (after or {}).get("entities") or {} if after is not None else {}

    def entity_secret(entity_id: str) -> bool:
        if entity_id in hidden_after:
            return True
        if after is None:
            return False
        return entity_id in hidden_before and entity_id not in after_entities

    anything_hidden = bool(hidden_before or hidden_after or before.get("hidden"))
    for operation in patches:
        if not isinstance(operation, dict):
            continue
        for pointer in (operation.get("path"), operation.get("from")):
            parts = _loose_parts(pointer)
            if parts is None:
                continue
            if not parts:
                if anything_hidden:
                    return True
            elif parts[0] == "hidden":
                return True
            elif parts[0] == "entities":
                if len(parts) == 1:
                    if hidden_before or hidden_after:
                        return True
                elif entity_secret(parts[1]):
                    return True
    return False


def entities_revealed(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The entities hidden before and there, no longer hidden, after: `{id, kind, name,
    data}` as in `entity_created`, for the reveal's event (players never saw them)."""
    found = []
    entities = after.get("entities") or {}
    for entity_id in sorted(_hidden_ids(before)):
        entity = entities.get(entity_id)
        if isinstance(entity, dict) and entity.get("hidden") is not True:
            found.append(
                {
                    "id": entity_id,
                    "kind": entity.get("kind"),
                    "name": entity.get("name"),
                    "data": entity.get("data") or {},
                }
            )
    return found
