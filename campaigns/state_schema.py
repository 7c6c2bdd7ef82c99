"""What a campaign's state may be, and which parts of it a patch may touch.

`CampaignState` is the pydantic schema of the snapshot state (CONTRACTS §1, plus the keys
the fold also keeps: members, turn, campaign, dice). Keys other apps add at the top level
are allowed; what the tools can change is checked strictly.

`patch_check` is the one gate for RFC 6902 patches, from the DM model or a GM: every
operation's path (and `from`) must match the actor's allow-list, the patch is applied
to a copy, and the result must satisfy the schema (hp within 0..max_hp, ...) and leave
the protected parts (owners, ids, members, turn, campaign, dice) exactly as they were.
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
    (("scene", "**"), ALL_OPS),
    (("flags", "**"), ALL_OPS),
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
    "entities/<id>/name and data (or removing entities/<id>), scene and flags"
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
        if key not in ("scene", "characters", "entities", "flags")
    }
    view["character_owners"] = {
        cid: c.get("owner_user_id") for cid, c in (state.get("characters") or {}).items()
    }
    return view


def patch_check(
    state: dict[str, Any], patches: Any, *, actor: Literal["dm", "gm"] = "dm"
) -> dict[str, Any]:
    """The state after `patches`, or PatchRefused saying why. `state` is not modified."""
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
        patched = patches_apply(state, patches)
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
