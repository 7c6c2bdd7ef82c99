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

Errors (issue 16): a refusal's text names the operation and the reason in our own words,
never the state. No repr of a value from the state, no exception text from jsonpatch,
jsonpointer or pydantic (theirs quote the document: a missing key prints its whole
parent, every hidden entity included). Pydantic errors become `loc: plain words` from
the error's type and the schema's own limits (`validation_problems`), never its input.
"""

from __future__ import annotations

import copy
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

from .events import (
    PREMISE_MAX_CHARS,
    SAFETY_ITEM_MAX_CHARS,
    SAFETY_ITEMS_MAX,
    TONE_MAX_CHARS,
)
from .tool_events import PatchOperation

UUID_TEXT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
UuidText = Annotated[str, StringConstraints(strict=True, pattern=UUID_TEXT)]
FlagName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
Item = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Condition = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=60)]

MAX_PATCH_OPERATIONS = 32
MAX_STATE_BYTES = 512 * 1024
# The messages of our own validators: they quote no value, so refusals may repeat them.
HP_ABOVE_MAX = "hp is above max_hp"
OWN_VALIDATOR_MESSAGES = frozenset({HP_ABOVE_MAX})


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
            raise ValueError(HP_ABOVE_MAX)
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


SetupItem = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=SAFETY_ITEM_MAX_CHARS)
]


class CampaignInfo(_Strict):
    """The campaign's name, edition and setup (CONTRACTS §7 "Campaign setup"), folded
    from `campaign_created` and `campaign_updated`. The setup keys are absent for
    campaigns made before it existed. No patch may change any of it."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: StrictStr
    edition: StrictStr
    premise: StrictStr = Field(default="", max_length=PREMISE_MAX_CHARS)
    tone: StrictStr = Field(default="", max_length=TONE_MAX_CHARS)
    turn_mode: Literal["free", "rounds"] = "free"
    lines: list[SetupItem] = Field(default_factory=list, max_length=SAFETY_ITEMS_MAX)
    veils: list[SetupItem] = Field(default_factory=list, max_length=SAFETY_ITEMS_MAX)


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
    """A patch (the DM's or a GM's) is refused. `detail` names the operation and the
    pointer (for the DM, whose next prompt says what to fix, and for the GMs, who alone
    see a refused patch); `plain` says it in words for a person, with no pointer and no
    id (a GM's own set-value answer: campaigns.tools.gm_set_value)."""

    code = "patch_rejected"

    def __init__(self, detail: str, *, code: str | None = None, plain: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.plain = plain or "That change does not fit the game, so it was not made."


# What the parts of the state are called in plain words (`place_words`).
_FIELD_WORDS = {
    "hp": "hit points",
    "max_hp": "maximum hit points",
    "ac": "armour class",
    "name": "name",
    "inventory": "inventory",
    "conditions": "conditions",
    "owner_user_id": "owner",
    "kind": "kind",
    "data": "details",
    "hidden": "hidden mark",
    "location": "location",
    "description": "description",
    "backstory": "backstory",
    "level": "level",
    "abilities": "ability scores",
}


def place_words(parts: list[str] | tuple[Any, ...]) -> str:
    """Where in the state a pointer (its parts) or a schema location points, in words a
    player could read: "a character's hit points", "the scene's location", "a flag".
    Never an id, a key the DM made up, or a pointer."""
    parts = [str(part) for part in parts]
    if not parts:
        return "the whole game"
    head, rest = parts[0], parts[1:]
    if head in ("characters", "entities"):
        one = "a character" if head == "characters" else "an entity"
        if not rest:
            return f"the {head}"
        if len(rest) == 1:
            return one
        other = "sheet" if head == "characters" else "details"
        return f"{one}'s {_FIELD_WORDS.get(rest[1], other)}"
    if head == "scene":
        return f"the scene's {_FIELD_WORDS.get(rest[0], 'details')}" if rest else "the scene"
    if head == "flags":
        return "a flag" if rest else "the flags"
    if head == "hidden":
        return "a hidden flag" if rest[:1] == ["flags"] and len(rest) > 1 else "the hidden notes"
    return {
        "members": "the members",
        "turn": "whose turn it is",
        "campaign": "the campaign's setup",
        "dice": "the dice",
        "last_options": "the options",
    }.get(head, "the game")


def pointer_words(pointer: Any) -> str:
    parts = _loose_parts(pointer)
    return place_words(parts) if parts is not None else "the game"


# Plain words for pydantic's error types. Only the schema's own limits (from the error's
# `ctx`) may be filled in; the input never is: it may be a copy of hidden state.
_TYPE_WORDS: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not allowed here",
    "string_type": "must be text",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "none_required": "must be null",
    "string_pattern_mismatch": "is not in the expected form",
    "uuid_type": "must be an id",
    "uuid_parsing": "must be an id",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be one of {expected}",
}
_SCHEMA_CTX = ("min_length", "max_length", "ge", "gt", "le", "lt", "expected")


def _problem_words(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        return message if message in OWN_VALIDATOR_MESSAGES else "is not valid"
    words = _TYPE_WORDS.get(kind)
    if words is None:
        return "is not valid"
    ctx = error.get("ctx") or {}
    try:
        return words.format(**{key: ctx[key] for key in _SCHEMA_CTX if key in ctx})
    except (KeyError, IndexError, ValueError):
        return "is not valid"


def validation_problems(exc: ValidationError, *, limit: int = 5, sep: str = "/") -> str:
    """`where: what` for each of the first `limit` errors, in plain words: the location
    (keys the proposer wrote, or the schema's) and the error's type, never its input."""
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    parts = []
    for error in errors[:limit]:
        where = sep.join(str(p)[:80] for p in error["loc"]) or "state"
        parts.append(f"{where}: {_problem_words(error)}")
    more = len(errors) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validation_plain(exc: ValidationError, *, limit: int = 3) -> str:
    """`validation_problems` for a person: each place in words, never its pointer or id.
    "A character's hit points cannot be above their maximum."."""
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    parts = []
    for error in errors[:limit]:
        place = place_words(error["loc"])
        if error.get("type") == "value_error" and HP_ABOVE_MAX in str(error.get("msg", "")):
            parts.append(f"{place}'s hit points cannot be above their maximum")
        else:
            parts.append(f"{place} {_problem_words(error)}")
    text = "; ".join(parts) or "the game would not be valid"
    return text[0].upper() + text[1:] + "."


def state_validate(state: dict[str, Any]) -> None:
    """PatchRefused unless the state fits the schema."""
    try:
        CampaignState.model_validate(state)
    except ValidationError as exc:
        raise PatchRefused(
            f"the result breaks the state schema: {validation_problems(exc)}",
            plain=validation_plain(exc),
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
# The same allow-lists in a person's words (PatchRefused.plain).
_DM_ALLOWED_WORDS = (
    "a character's hit points, conditions and inventory; an entity's name, details and "
    "hidden mark; the scene; the flags and the hidden flags"
)
ALLOWED_WORDS = {
    "dm": _DM_ALLOWED_WORDS,
    "gm": _DM_ALLOWED_WORDS + "; and a character's name, maximum hit points and armour class, "
    "and an entity's kind",
}


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
    except (jsonpointer.JsonPointerException, TypeError, ValueError):
        # jsonpointer's text is not ours to repeat (rule in the module's docstring).
        raise PatchRefused(
            f"{path[:300]} is not a JSON pointer (it starts with /, ~ is written ~0, / is ~1)"
        ) from None


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


def _label(index: int, operation: dict[str, Any]) -> str:
    """`operation 3 (move /a from /b)`: the proposer's own operation, never the state."""
    source = f" from {str(operation['from'])[:300]}" if operation.get("from") is not None else ""
    return f"operation {index} ({operation['op']} {str(operation['path'])[:300]}{source})"


def _is_index(part: str) -> bool:
    return part.isdigit() and (part == "0" or not part.startswith("0"))


def _walk(document: Any, parts: list[str]) -> tuple[str | None, Any]:
    """(None, the value at `parts`), or (why it is not there, None), in plain words."""
    node = document
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                return "does not exist", None
            node = node[part]
        elif isinstance(node, list):
            if not _is_index(part):
                return "has a part that is not a list index", None
            if int(part) >= len(node):
                return "points past the end of a list", None
            node = node[int(part)]
        else:
            return "goes through a value that is neither an object nor a list", None
    return None, node


def _why_not(document: Any, operation: dict[str, Any], exc: Exception) -> str:
    """Why `operation` does not apply to `document`, from our own look at the pointers
    (same words whatever the state holds around them)."""
    op = operation["op"]
    try:
        path = list(jsonpointer.JsonPointer(operation["path"]).parts)
        source = (
            list(jsonpointer.JsonPointer(operation["from"]).parts)
            if op in ("move", "copy")
            else None
        )
    except (jsonpointer.JsonPointerException, TypeError, ValueError):
        return "a pointer is not a JSON pointer"
    if source is not None:
        problem, _ = _walk(document, source)
        if problem:
            return f"the from location {problem}"
        if op == "move" and len(path) > len(source) and path[: len(source)] == source:
            return "a value cannot be moved into itself"
    if op in ("remove", "replace", "test"):
        problem, _ = _walk(document, path)
        if problem:
            return f"the path {problem}"
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            return "the value at the path is not the tested value"
        return "the operation does not apply here"
    # add, and the second half of move and copy: the parent must be there.
    problem, parent = _walk(document, path[:-1])
    if problem:
        return f"the path {problem}"
    if isinstance(parent, list):
        last = path[-1] if path else ""
        if last != "-" and not _is_index(last):
            return "the path has a part that is not a list index"
        if last != "-" and int(last) > len(parent):
            return "the path points past the end of a list"
    elif not isinstance(parent, dict):
        return "the path goes through a value that is neither an object nor a list"
    return "the operation does not apply here"


def _in_hidden(pointer: Any, hidden_ids: set[str]) -> bool:
    parts = _loose_parts(pointer)
    if parts is None:
        return False
    if not parts:
        return True  # the whole state holds the hidden parts too
    if parts[0] == "hidden":
        return True
    return parts[0] == "entities" and (len(parts) == 1 or parts[1] in hidden_ids)


def _operations_apply(
    state: dict[str, Any], prelude: list[dict[str, Any]], patches: list[dict[str, Any]]
) -> Any:
    """Apply the prelude, then each operation in turn; a failing one is refused in plain
    words (`_why_not`). A `move` or `copy` out of hidden state (under /hidden, or an
    entity hidden before, during or after the patch) must land in hidden state that is
    still hidden after the patch: otherwise a GM-only patch would put a secret where the
    players' snapshot shows it."""
    document: Any = copy.deepcopy(state)
    try:
        document = jsonpatch.JsonPatch(copy.deepcopy(prelude)).apply(document, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        raise PatchRefused("the hidden flags have no room to be written") from None
    ever_hidden = _entity_ids(state, hidden=True)
    carried: list[tuple[int, dict[str, Any]]] = []
    for index, operation in enumerate(patches):
        op = operation["op"]
        if op in ("move", "copy") and _in_hidden(
            operation["from"], ever_hidden | _entity_ids(document, hidden=True)
        ):
            carried.append((index, operation))
        # A failing move may have removed its source before failing: keep the document whole.
        in_place = op != "move"
        try:
            document = jsonpatch.JsonPatch([copy.deepcopy(operation)]).apply(
                document, in_place=in_place
            )
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:
            why = _why_not(document, operation, exc)
            raise PatchRefused(
                f"the patch does not apply: {_label(index, operation)}: {why}",
                plain="That change does not fit the game as it is now: "
                f"{pointer_words(operation['path'])} cannot be changed that way "
                f"({why.replace('the path', 'the place')}).",
            ) from None
        if isinstance(document, dict):
            ever_hidden |= _entity_ids(document, hidden=True)
    hidden_after = _entity_ids(document, hidden=True) if isinstance(document, dict) else set()
    for index, operation in carried:
        if not _in_hidden(operation["path"], hidden_after):
            raise PatchRefused(
                f"{_label(index, operation)}: a hidden value cannot be "
                f"{'moved' if operation['op'] == 'move' else 'copied'} "
                "to where the players see it; reveal the entity instead",
                plain="A hidden value cannot be put where the players see it; reveal it instead.",
            )
    return document


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
            raise PatchRefused(f"operation {index}: {validation_problems(exc, limit=2)}") from None
        op, path = operation["op"], operation["path"]
        if op in SET_OPS and "value" not in operation:
            raise PatchRefused(f"operation {index} ({op} {path}) has no value")
        if op in ("move", "copy") and "from" not in operation:
            raise PatchRefused(f"operation {index} ({op} {path}) has no from")
        try:
            allowed = path_allowed(path, op, actor=actor)
            source_op = "remove" if op == "move" else "test"
            source_allowed = op not in ("move", "copy") or path_allowed(
                operation["from"], source_op, actor=actor
            )
        except PatchRefused as exc:  # not a JSON pointer
            raise PatchRefused(f"operation {index}: {exc.detail}") from None
        if not allowed:
            raise PatchRefused(
                f"operation {index}: {op} {path} is not allowed; {who} may change {allowed_text}",
                plain=f"Changing {pointer_words(path)} is not allowed"
                f"{' that way' if op in ('remove', 'move', 'copy') else ''}. {who.capitalize()} "
                f"may change {ALLOWED_WORDS[actor]}.",
            )
        if not source_allowed:
            raise PatchRefused(
                f"operation {index}: {op} from {operation['from']} is not allowed; "
                f"{who} may change {allowed_text}",
                plain=f"Taking {pointer_words(operation['from'])} from where it is is not "
                f"allowed. {who.capitalize()} may change {ALLOWED_WORDS[actor]}.",
            )
    patched = _operations_apply(state, prelude or [], patches)
    if not isinstance(patched, dict):
        raise PatchRefused("the patch would replace the whole state")
    state_validate(patched)
    if _protected(patched) != _protected(state):
        raise PatchRefused(
            "the patch would change owners, ids or other protected state",
            plain="That would change who owns a character, or another part of the game that "
            "no one may change.",
        )
    size = len(json.dumps(patched, separators=(",", ":")))
    if size > MAX_STATE_BYTES:
        raise PatchRefused(
            f"the state would grow past {MAX_STATE_BYTES} bytes",
            plain="That would make the game's record too large.",
        )
    return patched


# --- Hidden state ------------------------------------------------------------------------------


def _loose_parts(pointer: Any) -> list[str] | None:
    if not isinstance(pointer, str):
        return None
    try:
        return list(jsonpointer.JsonPointer(pointer).parts)
    except jsonpointer.JsonPointerException:
        return [part for part in pointer.split("/")[1:]]


def _entity_ids(state: dict[str, Any] | None, *, hidden: bool) -> set[str]:
    """The ids of the state's hidden entities (or, with hidden=False, of the others)."""
    entities = (state or {}).get("entities") or {}
    if not isinstance(entities, dict):
        return set()
    return {
        str(entity_id)
        for entity_id, entity in entities.items()
        if isinstance(entity, dict) and (entity.get("hidden") is True) == hidden
    }


def patch_is_secret(before: dict[str, Any], after: dict[str, Any] | None, patches: Any) -> bool:
    """Whether a patch's events are for the GMs only. An operation (its path or `from`)
    makes it so when it points at:
    - /hidden or anything under it;
    - the whole state or the whole of /entities (they hold the hidden parts);
    - an entity the players cannot see: hidden after the patch, or seen neither before
      nor after it. That covers an entity hidden before that the patch removes, and an
      id that does not exist: a made-up id may be a hidden one's, and the players must
      not tell the two apart (both are GM-only, with the same words; for a refused patch
      `after` is None and only `before` counts).
    A reveal (the entity is there and no longer hidden after) is public. Whether anything
    is hidden at all never changes the answer for a pointer outside hidden state."""
    if not isinstance(patches, list):
        return False
    visible = _entity_ids(before, hidden=False) | _entity_ids(after, hidden=False)
    hidden_after = _entity_ids(after if after is not None else before, hidden=True)

    def entity_secret(entity_id: str) -> bool:
        return entity_id in hidden_after or entity_id not in visible

    for operation in patches:
        if not isinstance(operation, dict):
            continue
        for pointer in (operation.get("path"), operation.get("from")):
            parts = _loose_parts(pointer)
            if parts is None:
                continue
            if not parts or parts[0] == "hidden":
                return True
            if parts[0] == "entities" and (len(parts) == 1 or entity_secret(parts[1])):
                return True
    return False


def entities_revealed(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The entities hidden before and there, no longer hidden, after: `{id, kind, name,
    data}` as in `entity_created`, for the reveal's event (players never saw them)."""
    found = []
    entities = after.get("entities") or {}
    for entity_id in sorted(_entity_ids(before, hidden=True)):
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
