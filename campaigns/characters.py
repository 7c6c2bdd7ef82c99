"""Characters with real sheets (CONTRACTS §7 "Characters").

Each player has exactly one character. The one made when they join (a placeholder: a
name, AC 12, HP 10) is the one `character_create` fills in, keeping its id; once filled in
(its `sheet` is set) a second creation is refused (409).

In a 5e campaign the sheet follows the SRD 5.1 (`campaigns.srd`, CC-BY-4.0, attributed
there and in docs/characters.md): a class and an ancestry of the SRD, a level (1..20), the
six ability scores by one of three methods, and what the server derives from them:
modifiers, proficiency bonus, saving throws, `max_hp` (the hit die's maximum + CON at
level 1, the average + CON per level after), `hp` (= max_hp) and `ac` (the class's starting
armour, else 10 + DEX, + CON or WIS for Unarmored Defense):
- `standard_array`: 15, 14, 13, 12, 10, 8; placed in the class's order without
  `abilities`, or as the player places them (each value once);
- `point_buy`: `abilities` required, each 8..15 before the ancestry's increases, costing
  at most 27 points (SRD costs);
- `roll`: 4d6, lowest die dropped, six times, by the campaign's verifiable dice (public
  `roll_requested`/`roll_result` through `campaigns.tools`), highest total to the class's
  first ability. The rolls and the character are appended together, under the log's
  lock, so they happen once: a character already made refuses the request before any die.
The ancestry's increases are added after (a half-elf also gets +1 to two other abilities:
`ancestry_choices`, or the first two of the class's order that are not Charisma).

Other editions get a rules-light sheet: name, backstory, free-text class and ancestry,
a level, abilities optional; HP and AC stay as they are until the GM changes them.

`character_update`: the owner may change `name` and `backstory`; a GM any sheet field
(event `character_updated` {character_id, changes}); anyone else is refused (403). For a
5e sheet, a GM's change of class, level or abilities recomputes modifiers, proficiency
and saving throws, and `max_hp` and `ac` unless the same change sets them; when max_hp
changes, hp moves with it (a level up heals the new hit points), never above max_hp.
`changes` in the event holds every field that changed, derived ones included, so the fold
only sets them.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from rpgai.errors import Conflict, DomainError, NotFound, PermissionDenied

from . import selectors, srd
from .events import FoldedEvent, Payload, event_type
from .models import Membership
from .services import events_append, still_a_member
from .state_schema import PatchRefused, state_validate
from .tools import _Executor
from .whispers import text_problem

NAME_MAX = 60
LABEL_MAX = 40
BACKSTORY_MAX = 4000
ITEM_MAX = 100
CONDITION_MAX = 60
INVENTORY_MAX = 200
CONDITIONS_MAX = 50
HP_LIMIT = 10_000
AC_LIMIT = 100

METHODS = ("standard_array", "point_buy", "roll")
FIVE_E_EDITIONS = frozenset(
    {"5e", "5", "5.1", "5.1e", "d&d 5e", "dnd 5e", "dnd5e", "srd 5.1", "5e srd", "5th edition"}
)
OWNER_FIELDS = frozenset({"name", "backstory"})
GM_FIELDS = frozenset(
    {
        "name",
        "backstory",
        "class",
        "ancestry",
        "level",
        "abilities",
        "hp",
        "max_hp",
        "ac",
        "inventory",
        "conditions",
    }
)
DERIVED_FIELDS = frozenset({"modifiers", "proficiency_bonus", "saving_throws"})


class CharacterInvalid(DomainError):
    code = "invalid_character"


def is_5e(edition: str) -> bool:
    return (edition or "").strip().lower() in FIVE_E_EDITIONS


# --- Events ------------------------------------------------------------------------------------

AbilityKey = Literal["str", "dex", "con", "int", "wis", "cha"]


class CharacterSheet(BaseModel):
    """A character as `character_created` carries it."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    id: uuid.UUID
    owner_user_id: uuid.UUID | None = None
    sheet: Literal["5e", "light"]
    name: str = Field(min_length=1, max_length=NAME_MAX)
    class_: str = Field(default="", alias="class", max_length=LABEL_MAX)
    ancestry: str = Field(default="", max_length=LABEL_MAX)
    level: int = Field(default=1, ge=srd.LEVEL_MIN, le=srd.LEVEL_MAX)
    abilities: dict[AbilityKey, int] | None = None
    modifiers: dict[AbilityKey, int] | None = None
    proficiency_bonus: int | None = Field(default=None, ge=0, le=10)
    saving_throws: list[AbilityKey] | None = None
    ability_method: Literal["standard_array", "point_buy", "roll"] | None = None
    backstory: str = Field(default="", max_length=BACKSTORY_MAX)
    hp: int = Field(ge=0, le=HP_LIMIT)
    max_hp: int = Field(ge=1, le=HP_LIMIT)
    ac: int = Field(ge=0, le=AC_LIMIT)
    inventory: list[str] = Field(default_factory=list, max_length=INVENTORY_MAX)
    conditions: list[str] = Field(default_factory=list, max_length=CONDITIONS_MAX)

    @field_validator("abilities")
    @classmethod
    def _scores_in_range(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None and any(
            not srd.ABILITY_MIN <= v <= srd.ABILITY_MAX for v in value.values()
        ):
            raise ValueError("ability scores are 1..30")
        return value

    @model_validator(mode="after")
    def _hp_within_max(self) -> CharacterSheet:
        if self.hp > self.max_hp:
            raise ValueError("hp is above max_hp")
        return self


class CharacterCreated(Payload):
    character: CharacterSheet


class CharacterUpdated(Payload):
    character_id: uuid.UUID
    changes: dict[str, JsonValue] = Field(min_length=1)

    @field_validator("changes")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - GM_FIELDS - DERIVED_FIELDS
        if unknown:
            raise ValueError(f"fields that cannot change: {', '.join(sorted(unknown))}")
        return value


@event_type("character_created", CharacterCreated)
def _character_created(state: dict[str, Any], event: FoldedEvent) -> None:
    sheet = dict(event.payload["character"])
    character_id = str(sheet.pop("id"))
    characters = state.setdefault("characters", {})
    characters[character_id] = {**characters.get(character_id, {}), **copy.deepcopy(sheet)}


@event_type("character_updated", CharacterUpdated)
def _character_updated(state: dict[str, Any], event: FoldedEvent) -> None:
    character = state.get("characters", {}).get(str(event.payload["character_id"]))
    if character is not None:
        character.update(copy.deepcopy(event.payload["changes"]))


# --- Checking what a player sends ----------------------------------------------------------------


def _text(value: Any, field: str, *, limit: int, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise CharacterInvalid(f"{field} must be text")
    value = value.strip()
    if required and not value:
        raise CharacterInvalid(f"give your character a {field}")
    if len(value) > limit:
        raise CharacterInvalid(f"{field} has at most {limit} characters")
    problem = text_problem(value)
    if problem:
        raise CharacterInvalid(f"{field}: {problem}")
    return value


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CharacterInvalid(f"{field} must be a whole number from {low} to {high}")
    if not low <= value <= high:
        raise CharacterInvalid(f"{field} must be from {low} to {high}")
    return value


def _level(value: Any) -> int:
    return _whole(1 if value is None else value, "level", srd.LEVEL_MIN, srd.LEVEL_MAX)


def _srd_key(value: Any, field: str, plural: str, table: dict[str, dict[str, Any]]) -> str:
    choices = ", ".join(table)
    if not isinstance(value, str) or not value.strip():
        raise CharacterInvalid(f"choose a {field}: {choices}")
    key = value.strip().lower().replace(" ", "-").replace("_", "-")
    if key not in table:
        raise CharacterInvalid(f"{field} must be one of the SRD 5.1 {plural}: {choices}")
    return key


def _class_key(value: Any) -> str:
    return _srd_key(value, "class", "classes", srd.CLASSES)


def _ancestry_key(value: Any) -> str:
    return _srd_key(value, "ancestry", "ancestries", srd.ANCESTRIES)


def _scores(value: Any, *, low: int, high: int, partial: bool = False) -> dict[str, int]:
    """A dict of ability scores (all six unless `partial`), each a whole number low..high."""
    six = ", ".join(srd.ABILITIES)
    if not isinstance(value, dict) or not value:
        raise CharacterInvalid(f"abilities is an object with the scores of {six}")
    unknown = [str(k)[:20] for k in value if k not in srd.ABILITIES]
    if unknown:
        raise CharacterInvalid(f"abilities are {six}; not {', '.join(unknown[:3])}")
    missing = [k for k in srd.ABILITIES if k not in value]
    if missing and not partial:
        raise CharacterInvalid(f"abilities needs all six scores; missing {', '.join(missing)}")
    return {
        key: _whole(value[key], f"the {srd.ABILITY_NAMES[key]} score", low, high)
        for key in srd.ABILITIES
        if key in value
    }


def _placed(values: list[int], class_key: str) -> dict[str, int]:
    """`values`, highest first, in the class's ability order."""
    order = srd.ABILITY_ORDER[class_key]
    return dict(zip(order, sorted(values, reverse=True), strict=True))


def _base_scores(method: str, abilities: Any, class_key: str) -> dict[str, int] | None:
    """The scores before the ancestry's increases (None for a roll: the dice decide)."""
    if method == "standard_array":
        if abilities is None:
            return _placed(list(srd.STANDARD_ARRAY), class_key)
        scores = _scores(abilities, low=srd.ABILITY_MIN, high=srd.ABILITY_MAX)
        if sorted(scores.values()) != sorted(srd.STANDARD_ARRAY):
            raise CharacterInvalid(
                "the standard array is 15, 14, 13, 12, 10 and 8, each used once; "
                "or leave abilities out and the server places them for your class"
            )
        return scores
    if method == "point_buy":
        if abilities is None:
            raise CharacterInvalid(
                f"point buy needs abilities: six scores from {srd.POINT_BUY_MIN} to "
                f"{srd.POINT_BUY_MAX} costing at most {srd.POINT_BUY_BUDGET} points"
            )
        scores = _scores(abilities, low=srd.ABILITY_MIN, high=srd.ABILITY_MAX)
        for key, score in scores.items():
            if not srd.POINT_BUY_MIN <= score <= srd.POINT_BUY_MAX:
                raise CharacterInvalid(
                    f"with point buy each score is from {srd.POINT_BUY_MIN} to "
                    f"{srd.POINT_BUY_MAX} before your ancestry's increases; "
                    f"{srd.ABILITY_NAMES[key]} is {score}"
                )
        spent = sum(srd.POINT_BUY_COSTS[s] for s in scores.values())
        if spent > srd.POINT_BUY_BUDGET:
            raise CharacterInvalid(
                f"these scores cost {spent} points; point buy has {srd.POINT_BUY_BUDGET} "
                f"(costs: 8 is 0, 9 is 1, 10 is 2, 11 is 3, 12 is 4, 13 is 5, 14 is 7, 15 is 9)",
                code="point_buy_over_budget",
            )
        return scores
    if abilities is not None:
        raise CharacterInvalid("with roll the dice choose the scores: leave abilities out")
    return None


def _increases(ancestry_key: str, class_key: str, choices: Any) -> dict[str, int]:
    ancestry = srd.ANCESTRIES[ancestry_key]
    increases = dict(ancestry["increases"])
    count = ancestry["choose"]
    if not count:
        if choices:
            raise CharacterInvalid(
                f"only a half-elf chooses abilities to increase; a {ancestry_key}'s are fixed"
            )
        return increases
    if choices is None:
        picked = [a for a in srd.ABILITY_ORDER[class_key] if a not in increases][:count]
    else:
        if (
            not isinstance(choices, list)
            or len(choices) != count
            or len(set(map(str, choices))) != count
            or any(c not in srd.ABILITIES or c in increases for c in choices)
        ):
            allowed = ", ".join(a for a in srd.ABILITIES if a not in increases)
            raise CharacterInvalid(
                f"a {ancestry_key} increases {count} different abilities by 1, chosen from "
                f"{allowed}"
            )
        picked = list(choices)
    for key in picked:
        increases[key] = increases.get(key, 0) + 1
    return increases


def _derived(class_key: str, level: int, abilities: dict[str, int]) -> dict[str, Any]:
    return {
        "modifiers": {k: srd.modifier(abilities[k]) for k in srd.ABILITIES},
        "proficiency_bonus": srd.proficiency_bonus(level),
        "saving_throws": list(srd.CLASSES[class_key]["saving_throws"]),
    }


def _own_character(state: dict[str, Any], user_id: Any) -> tuple[str | None, dict[str, Any]]:
    for character_id, character in (state.get("characters") or {}).items():
        if character.get("owner_user_id") == str(user_id):
            return character_id, character
    return None, {}


def _with_id(character_id: str, character: dict[str, Any]) -> dict[str, Any]:
    return {"id": character_id, **copy.deepcopy(character)}


def _checked(state: dict[str, Any]) -> None:
    """The state after the character's event must still fit the state schema (later
    patches are checked against it)."""
    try:
        state_validate(state)
    except PatchRefused as exc:
        raise CharacterInvalid(f"this sheet does not fit the game's state: {exc.detail}") from None


# --- Services ------------------------------------------------------------------------------------


def character_create(
    *,
    membership: Membership,
    name: Any,
    class_: Any = None,
    ancestry: Any = None,
    level: Any = 1,
    backstory: Any = "",
    ability_method: Any = None,
    abilities: Any = None,
    ancestry_choices: Any = None,
    request_id: str = "",
) -> dict[str, Any]:
    """Fill in the player's character (the placeholder made when they joined, same id):
    event `character_created` {character}, after the six `roll_requested`/`roll_result`
    pairs of a rolled sheet, in one append. Returns the character with its `id`.
    Conflict (409) once it is filled in; PermissionDenied for a GM."""
    if membership.is_gm:
        raise PermissionDenied(
            "a GM has no character of their own here; a GM changes characters with PATCH",
            code="player_only",
        )
    name = _text(name, "name", limit=NAME_MAX, required=True)
    backstory = _text(backstory, "backstory", limit=BACKSTORY_MAX)
    level = _level(level)
    five_e = is_5e(membership.campaign.edition)
    if five_e:
        class_key = _class_key(class_)
        ancestry_key = _ancestry_key(ancestry)
        if ability_method not in METHODS:
            raise CharacterInvalid(
                "ability_method is standard_array, point_buy or roll", code="invalid_method"
            )
        base = _base_scores(ability_method, abilities, class_key)
        increases = _increases(ancestry_key, class_key, ancestry_choices)
    else:
        class_label = _text(class_, "class", limit=LABEL_MAX)
        ancestry_label = _text(ancestry, "ancestry", limit=LABEL_MAX)
        if ability_method not in (None, "", "manual"):
            raise CharacterInvalid(
                "this campaign's sheet is rules-light: write the abilities you want, or none, "
                "without an ability_method",
                code="invalid_method",
            )
        if ancestry_choices:
            raise CharacterInvalid("ancestry_choices is for 5e campaigns only")
        light_scores = (
            None
            if abilities is None
            else _scores(abilities, low=srd.ABILITY_MIN, high=srd.ABILITY_MAX)
        )
    user_id = membership.user_id
    made: dict[str, Any] = {}

    def build(state: dict[str, Any]) -> list[Any]:
        character_id, existing = _own_character(state, user_id)
        if existing.get("sheet"):
            raise Conflict(
                "your character is made already; you may change its name and backstory, "
                "the GM the rest",
                code="character_exists",
            )
        character_id = character_id or str(uuid.uuid4())
        executor = _Executor(
            campaign_id=membership.campaign_id,
            state=state,
            actor_kind="player",
            actor_user_id=user_id,
        )
        sheet: dict[str, Any] = {
            "id": character_id,
            "owner_user_id": str(user_id),
            "name": name,
            "level": level,
            "backstory": backstory,
            "inventory": list(existing.get("inventory") or []),
            "conditions": list(existing.get("conditions") or []),
        }
        if five_e:
            scores = base
            if scores is None:
                totals = []
                for index in range(srd.ROLL_COUNT):
                    executor.roll(
                        formula=srd.ROLL_FORMULA,
                        reason=f"{name}'s ability score {index + 1} of {srd.ROLL_COUNT} "
                        "(4d6, lowest die dropped)",
                        requested_by="player",
                    )
                    totals.append(int(executor.events[-1].payload["total"]))
                scores = _placed(totals, class_key)
            final = {
                k: min(srd.ABILITY_MAX, scores[k] + increases.get(k, 0)) for k in srd.ABILITIES
            }
            max_hp = srd.max_hit_points(class_key, level, final["con"])
            sheet.update(
                sheet="5e",
                ability_method=ability_method,
                abilities=final,
                hp=max_hp,
                max_hp=max_hp,
                ac=srd.armour_class(class_key, final),
                ancestry=ancestry_key,
                **_derived(class_key, level, final),
            )
            sheet["class"] = class_key
        else:
            sheet.update(
                sheet="light",
                ancestry=ancestry_label,
                hp=int(existing.get("hp", 10)),
                max_hp=int(existing.get("max_hp", 10)),
                ac=int(existing.get("ac", 12)),
            )
            sheet["class"] = class_label
            if light_scores is not None:
                sheet["abilities"] = light_scores
                sheet["modifiers"] = {k: srd.modifier(v) for k, v in light_scores.items()}
        executor.add("character_created", {"character": sheet})
        _checked(executor.state)
        made.update(_with_id(character_id, executor.state["characters"][character_id]))
        return executor.events

    events_append(
        campaign_id=membership.campaign_id,
        events=build,
        request_id=request_id,
        precondition=still_a_member(campaign_id=membership.campaign_id, user_id=user_id),
    )
    return made


def _list_of_text(value: Any, field: str, *, item_limit: int, count_limit: int) -> list[str]:
    if not isinstance(value, list) or len(value) > count_limit:
        raise CharacterInvalid(f"{field} is a list of at most {count_limit} entries")
    items = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item.strip()) > item_limit:
            raise CharacterInvalid(f"each of {field} is text of 1 to {item_limit} characters")
        problem = text_problem(item)
        if problem:
            raise CharacterInvalid(f"{field}: {problem}")
        items.append(item.strip())
    return items


def _resolve(character: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Every field that `changes` changes, derived ones included; CharacterInvalid for a
    value that does not fit."""
    five_e = character.get("sheet") == "5e"
    out: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "name":
            out[field] = _text(value, "name", limit=NAME_MAX, required=True)
        elif field == "backstory":
            out[field] = _text(value, "backstory", limit=BACKSTORY_MAX)
        elif field == "class":
            out[field] = _class_key(value) if five_e else _text(value, "class", limit=LABEL_MAX)
        elif field == "ancestry":
            out[field] = (
                _ancestry_key(value) if five_e else _text(value, "ancestry", limit=LABEL_MAX)
            )
        elif field == "level":
            out[field] = _whole(value, "level", srd.LEVEL_MIN, srd.LEVEL_MAX)
        elif field == "abilities":
            scores = _scores(value, low=srd.ABILITY_MIN, high=srd.ABILITY_MAX, partial=True)
            current = character.get("abilities") or {}
            merged = {**current, **scores}
            if five_e and len(merged) < len(srd.ABILITIES):
                raise CharacterInvalid("abilities needs all six scores")
            out[field] = {k: merged[k] for k in srd.ABILITIES if k in merged}
        elif field == "hp":
            out[field] = _whole(value, "hp", 0, HP_LIMIT)
        elif field == "max_hp":
            out[field] = _whole(value, "max_hp", 1, HP_LIMIT)
        elif field == "ac":
            out[field] = _whole(value, "ac", 0, AC_LIMIT)
        elif field == "inventory":
            out[field] = _list_of_text(
                value, "inventory", item_limit=ITEM_MAX, count_limit=INVENTORY_MAX
            )
        elif field == "conditions":
            out[field] = _list_of_text(
                value, "conditions", item_limit=CONDITION_MAX, count_limit=CONDITIONS_MAX
            )
    after = {**character, **out}
    if five_e and {"class", "level", "abilities"} & set(out):
        class_key, level, scores = after["class"], after["level"], after["abilities"]
        out.update(_derived(class_key, level, scores))
        if "max_hp" not in out:
            out["max_hp"] = srd.max_hit_points(class_key, level, scores["con"])
        if "ac" not in out and {"class", "abilities"} & set(out):
            out["ac"] = srd.armour_class(class_key, scores)
    elif "abilities" in out:
        out["modifiers"] = {k: srd.modifier(v) for k, v in out["abilities"].items()}
    old_max = int(character.get("max_hp", 1))
    new_max = int(out.get("max_hp", old_max))
    if "hp" in out:
        if out["hp"] > new_max:
            raise CharacterInvalid(f"hp must be at most max_hp ({new_max})")
    elif new_max != old_max:
        old_hp = int(character.get("hp", new_max))
        out["hp"] = max(0, min(new_max, old_hp + max(0, new_max - old_max)))
    return {k: v for k, v in out.items() if character.get(k) != v}


def character_update(
    *,
    by_membership: Membership,
    character_id: Any,
    changes: Any,
    request_id: str = "",
) -> dict[str, Any]:
    """Change a character: its owner `name` and `backstory`, a GM any sheet field. Event
    `character_updated` {character_id, changes} (nothing is appended when nothing
    changes). Returns the character with its `id`. NotFound for no such character,
    PermissionDenied for anyone else or an owner changing more than their story fields."""
    try:
        character_id = str(uuid.UUID(str(character_id)))
    except ValueError:
        raise NotFound("there is no such character in this campaign") from None
    if not isinstance(changes, dict) or not changes:
        raise CharacterInvalid("send the fields to change, such as name or backstory")
    unknown = [str(k)[:40] for k in changes if k not in GM_FIELDS]
    if unknown:
        raise CharacterInvalid(
            f"{', '.join(unknown[:3])}: not a field you can change; the sheet's fields are "
            f"{', '.join(sorted(GM_FIELDS))} (the rest is derived)"
        )
    user_id = by_membership.user_id
    result: dict[str, Any] = {}

    def build(state: dict[str, Any]) -> list[Any]:
        character = (state.get("characters") or {}).get(character_id)
        if character is None:
            raise NotFound("there is no such character in this campaign")
        membership = selectors.membership_get(
            campaign_id=by_membership.campaign_id, user_id=user_id
        )
        is_gm = membership is not None and membership.is_gm
        if not is_gm:
            if character.get("owner_user_id") != str(user_id):
                raise PermissionDenied(
                    "only this character's player or the GM may change it", code="not_yours"
                )
            outside = sorted(set(changes) - OWNER_FIELDS)
            if outside:
                raise PermissionDenied(
                    f"you may change your character's name and backstory; ask the GM to "
                    f"change {', '.join(outside)}",
                    code="story_fields_only",
                )
        resolved = _resolve(character, changes)
        if not resolved:
            result.update(_with_id(character_id, character))
            return []
        executor = _Executor(
            campaign_id=by_membership.campaign_id,
            state=state,
            actor_kind="gm" if is_gm else "player",
            actor_user_id=user_id,
        )
        executor.add("character_updated", {"character_id": character_id, "changes": resolved})
        _checked(executor.state)
        result.update(_with_id(character_id, executor.state["characters"][character_id]))
        return executor.events

    events_append(
        campaign_id=by_membership.campaign_id,
        events=build,
        request_id=request_id,
        precondition=still_a_member(campaign_id=by_membership.campaign_id, user_id=user_id),
    )
    return result


def characters_seen_by(*, membership: Membership) -> list[dict[str, Any]]:
    """The characters `membership` may see (every character is at the table), each with
    its `id`, in the order they were made."""
    snapshot = selectors.snapshot_get(
        campaign_id=membership.campaign_id, viewer=selectors.Viewer.of(membership)
    )
    characters = (snapshot.state.get("characters") or {}) if snapshot else {}
    return [_with_id(cid, c) for cid, c in characters.items()]
