"""The fake DM model: deterministic, needs no key, answers what the players did, uses tools.

It is what runs with nothing configured, and what tests play against: the `fake`
provider (`llm/fake.py`) answers a turn's request with `fake_reply(context)`, the JSON
text of `fake_answer`, streamed in chunks with its usage counted by the tokenizer, like a
real model. The same turn always gets the same answer; choices are made from a hash of
the input.

Tools it uses: an attack, a sneak or a search gets a `roll`; picking something up gets
an `apply_state_patch` adding it to the actor's inventory; meeting or greeting someone
not yet known gets a `create_entity`; a fight starting gets a `trigger_audio` cue.
Looking for traps, listening at a door, eavesdropping or a perception check is a secret
of the one who does it: a `roll` with `private_to` that player and a `narrate_private`
telling them alone what they notice, while the public narration stays vague (such an
action gets no public search roll). An action that mentions a secret door (or a hidden
passage) makes one the players have not discovered yet: a `create_entity` with
`hidden: true`; searching for it once it exists reveals it (`apply_state_patch` replacing
its `hidden` with false).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from llm.adapters import ModelRequest

from .prompt import ActionInTurn, TurnContext

OPENINGS = [
    "“{act}” With that, {who} acts, and the air shifts.",
    "{who} steps forward: “{act}”",
    "All eyes turn to {who}. “{act}”",
    "Without hesitation, {who} moves: “{act}”",
    "Quietly, {who} decides: “{act}”",
]

CONSEQUENCES = [
    "Somewhere beyond the torchlight, something stirs in answer.",
    "A cold draft carries the smell of rain and old stone.",
    "The floorboards creak; whatever happens next, it will not be quiet.",
    "A distant bell tolls once, then falls silent.",
    "Dust sifts from the rafters, glittering in the lamplight.",
    "For a heartbeat nothing moves. Then the shadows seem to lean closer.",
    "A voice, too faint to place, murmurs a name none of you have spoken aloud.",
]

ATTACK_LINES = [
    "Steel flashes; the dice will decide whether the blow lands.",
    "The strike comes fast, and everything hangs on the roll.",
    "Muscles tense, weapon rising: fortune will judge this blow.",
]
SNEAK_LINES = [
    "{who} keeps low and silent; a roll will tell whether anyone notices.",
    "Every step is placed with care, and the dice will say if it was care enough.",
]
SEARCH_LINES = [
    "{who} works through every corner and crevice; the roll decides what turns up.",
    "Fingers trace seams and shadows alike while fate weighs what can be found.",
]
PERCEIVE_LINES = [
    "{who} pauses, looking around and listening.",
    "{who} goes still for a moment, eyes and ears open.",
]
# Told to the one player alone (narrate_private): a trap, or something overheard.
SECRET_TRAP_LINES = [
    "Only you notice it: a hair-thin wire stretched across the threshold, ankle-high.",
    "You alone spot the loose flagstone ahead; the scratches around it are fresh.",
    "Only you see the tiny holes in the wall, just wide enough for a dart.",
]
SECRET_SOUND_LINES = [
    "You alone hear it: muffled voices beyond the wall, arguing about a key.",
    "Only you catch the faint scrape of a blade being drawn somewhere close.",
    "You alone make out a whisper: someone knows you are here.",
]
TAKE_LINES = [
    "{who} takes the {item} and stows it away.",
    "The {item} is light in {who}'s hand, then safely packed.",
]
MEET_LINES = [
    "{name}, {what}, looks up and greets {who} with a wary nod.",
    "“Well met,” says {name}, {what}, studying {who} with open curiosity.",
    "{name}, {what}, returns {who}'s greeting and waits to hear more.",
]

OPTION_POOL = [
    "Search the room carefully",
    "Talk to the nearest stranger",
    "Draw your weapon and stand ready",
    "Sneak toward the sound",
    "Look for another way out",
    "Check on your companions",
    "Pick up whatever glints on the floor",
    "Call out into the dark",
    "Study the old markings on the wall",
    "Rest for a moment and listen",
]

FIGHT_CUES = ("battle_start", "sword_clash", "combat")
NPC_NAMES = ["Maren", "Tobiah", "Isolde", "Garrick", "Wenna", "Oswin", "Thessaly", "Brannoc"]
# Full names for when the first names run out; none contains one of those.
NPC_GIVEN = ["Alda", "Bram", "Cress", "Dov", "Edda", "Finn", "Gisla", "Hale"]
NPC_FAMILIES = [
    "Ashdown",
    "Blackwater",
    "Coldbrook",
    "Dunmere",
    "Elderwick",
    "Fairhollow",
    "Greymantle",
    "Hollins",
]

_ATTACK = re.compile(
    r"\b(attack|attacks|strike|strikes|hit|hits|stab|stabs|slash|slashes|shoot|"
    r"shoots|swing|swings|punch|punches|kick|kicks|fight|fights|charge|charges)\b",
    re.I,
)
_SNEAK = re.compile(
    r"\b(sneak|sneaks|hide|hides|creep|creeps|stealth|stealthily|tiptoe|tiptoes)\b", re.I
)
_SEARCH = re.compile(
    r"\b(search|searches|investigate|investigates|examine|examines|inspect|"
    r"inspects|look for|looks for|rummage|rummages)\b",
    re.I,
)
# Secret perception: only the one who does it learns what it turns up (narrate_private).
_PERCEIVE = re.compile(
    r"\b(traps?|trapped|perception|eavesdrop|eavesdrops|eavesdropping|"
    r"listens? (?:at|to|for|through|closely|carefully))\b",
    re.I,
)
_TRAP = re.compile(r"\b(traps?|trapped)\b", re.I)
_SECRET_DOOR = re.compile(r"\b(?:secret|hidden) (?:door|doorway|passage)s?\b", re.I)
SECRET_DOOR_NAME = "Secret door"
SECRET_DOOR_DATA = {"description": "a narrow door behind the old bookshelf"}
_END = r"(?=[.,!?;:]| and | then |$)"
_TAKE = re.compile(
    r"\b(?:pick up|picks up|pick|picks|take|takes|grab|grabs|pocket|pockets|"
    r"snatch|snatches|loot|loots)\b\s+(?:up\s+)?(?:the |a |an |some |his |her |"
    r"their |that |this )?(?P<item>[^.,!?;:]+?)" + _END,
    re.I,
)
_MEET = re.compile(
    r"\b(?:greet|greets|meet|meets|talk to|talks to|speak to|speaks to|speak with|"
    r"speaks with|approach|approaches|hail|hails|wave to|waves to|say hello to|"
    r"says hello to)\s+(?:the |a |an |that |this )?(?P<who>[^.,!?;:]+?)" + _END,
    re.I,
)


@dataclass
class _Plan:
    sentences: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    extra_options: list[str] = field(default_factory=list)
    fight: bool = False
    secret_door: bool = False  # already made or revealed in this turn


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _quoted(text: str) -> str:
    """The player's own words, whole, as the narration's anchor (clipped if very long)."""
    words = " ".join(text.split())
    if len(words) > 200:
        words = words[:197].rstrip() + "…"
    if words[-1:] not in ".!?…":
        words += "."
    return words


def _new_npc_name(h: int, taken: set[str]) -> str:
    """A name nobody in the campaign has yet: a first name, then a full name, then a number."""
    for k in range(len(NPC_NAMES)):
        name = NPC_NAMES[(h + k) % len(NPC_NAMES)]
        if name.lower() not in taken:
            return name
    for k in range(len(NPC_GIVEN) * len(NPC_FAMILIES)):
        first = NPC_GIVEN[(h + k) % len(NPC_GIVEN)]
        family = NPC_FAMILIES[(h // 7 + k // len(NPC_GIVEN)) % len(NPC_FAMILIES)]
        if f"{first} {family}".lower() not in taken:
            return f"{first} {family}"
    number = 1
    while f"stranger {number}" in taken:
        number += 1
    return f"Stranger {number}"


def _known_names(state: dict[str, Any]) -> list[str]:
    """Names and descriptions of everyone already met (lower case)."""
    known = []
    for entity in state.get("entities", {}).values():
        known.append(str(entity.get("name", "")).lower())
        description = str((entity.get("data") or {}).get("description", "")).lower()
        for article in ("the ", "a ", "an "):
            description = description.removeprefix(article)
        known.append(description)
    return [k for k in known if k]


def _plan_action(
    action: ActionInTurn, state: dict[str, Any], h: int, plan: _Plan, used_names: set[str]
) -> None:
    who = action.who
    text = action.text
    if _ATTACK.search(text):
        plan.tool_calls.append(
            {"name": "roll", "args": {"formula": "1d20+5", "reason": f"{who}'s attack"}}
        )
        plan.sentences.append(ATTACK_LINES[h % len(ATTACK_LINES)])
        plan.fight = True
        plan.extra_options.append("Press the attack")
    if _SNEAK.search(text):
        plan.tool_calls.append(
            {"name": "roll", "args": {"formula": "1d20+3", "reason": f"{who} sneaking (stealth)"}}
        )
        plan.sentences.append(SNEAK_LINES[h % len(SNEAK_LINES)].format(who=who))
    secret = action.user_id is not None and _PERCEIVE.search(text) is not None
    if secret:
        plan.tool_calls.append(
            {
                "name": "roll",
                "args": {
                    "formula": "1d20+4",
                    "reason": f"{who} perceiving (perception)",
                    "private_to": action.user_id,
                },
            }
        )
        lines = SECRET_TRAP_LINES if _TRAP.search(text) else SECRET_SOUND_LINES
        plan.tool_calls.append(
            {
                "name": "narrate_private",
                "args": {"to": action.user_id, "text": lines[h % len(lines)]},
            }
        )
        plan.sentences.append(PERCEIVE_LINES[h % len(PERCEIVE_LINES)].format(who=who))
    elif _SEARCH.search(text):
        plan.tool_calls.append(
            {
                "name": "roll",
                "args": {"formula": "1d20+2", "reason": f"{who} searching (investigation)"},
            }
        )
        plan.sentences.append(SEARCH_LINES[h % len(SEARCH_LINES)].format(who=who))
    take = _TAKE.search(text)
    if take and action.character_id and action.character_id in state.get("characters", {}):
        item = " ".join(take.group("item").split())[:40].strip()
        if item:
            plan.tool_calls.append(
                {
                    "name": "apply_state_patch",
                    "args": {
                        "reason": f"{who} picks up the {item}",
                        "patches": [
                            {
                                "op": "add",
                                "path": f"/characters/{action.character_id}/inventory/-",
                                "value": item,
                            }
                        ],
                    },
                }
            )
            plan.sentences.append(TAKE_LINES[h % len(TAKE_LINES)].format(who=who, item=item))
    if _SECRET_DOOR.search(text) and not plan.secret_door:
        _plan_secret_door(who, text, state, plan)
    meet = _MEET.search(text)
    if meet:
        what = " ".join(meet.group("who").split())[:60].strip()
        known = _known_names(state)
        if what and not any(what.lower() in name or name in what.lower() for name in known):
            name = _new_npc_name(h, set(known) | {u.lower() for u in used_names})
            used_names.add(name)
            the_what = what if what.lower().startswith(("the ", "a ", "an ")) else f"the {what}"
            plan.tool_calls.append(
                {
                    "name": "create_entity",
                    "args": {
                        "kind": "npc",
                        "name": name,
                        "data": {"description": the_what, "first_met_by": who},
                    },
                }
            )
            plan.sentences.append(
                MEET_LINES[h % len(MEET_LINES)].format(name=name, what=the_what, who=who)
            )
            plan.extra_options.append(f"Ask {name} what they know")


def _plan_secret_door(who: str, text: str, state: dict[str, Any], plan: _Plan) -> None:
    """The first mention makes it (hidden); a search once it exists reveals it."""
    plan.secret_door = True
    door = next(
        (
            (entity_id, entity)
            for entity_id, entity in state.get("entities", {}).items()
            if entity.get("name") == SECRET_DOOR_NAME
        ),
        None,
    )
    if door is None:
        plan.tool_calls.append(
            {
                "name": "create_entity",
                "args": {
                    "kind": "location",
                    "name": SECRET_DOOR_NAME,
                    "data": dict(SECRET_DOOR_DATA),
                    "hidden": True,
                },
            }
        )
        return
    entity_id, entity = door
    if entity.get("hidden") is True and _SEARCH.search(text):
        plan.tool_calls.append(
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": f"{who} finds the secret door",
                    "patches": [
                        {"op": "replace", "path": f"/entities/{entity_id}/hidden", "value": False}
                    ],
                },
            }
        )
        plan.sentences.append(f"{who} finds it: {SECRET_DOOR_DATA['description']}.")


def fake_answer(context: TurnContext) -> dict[str, Any]:
    """The fake DM's answer to a turn, as the JSON object a model would write."""
    state = context.state
    h = _digest(
        context.location, context.through_seq, *[f"{a.who}:{a.text}" for a in context.actions]
    )
    plan = _Plan()
    used: set[str] = set()
    for i, action in enumerate(context.actions):
        ah = h >> (i * 3)
        opening = OPENINGS[ah % len(OPENINGS)]
        plan.sentences.append(opening.format(who=action.who, act=_quoted(action.text)))
        _plan_action(action, state, ah >> 5, plan, used)
    cue = next((c for c in FIGHT_CUES if c in getattr(settings, "AUDIO_CUES", {})), None)
    if plan.fight and cue:
        plan.tool_calls.append({"name": "trigger_audio", "args": {"cue": cue, "volume": 0.7}})
    where = f" in {context.location}" if context.location else ""
    plan.sentences.append(
        CONSEQUENCES[h % len(CONSEQUENCES)].replace("Somewhere", f"Somewhere{where}", 1)
    )
    count = 3 + h % 4  # 3 to 6 options
    start = (h >> 8) % len(OPTION_POOL)
    options = list(dict.fromkeys(plan.extra_options))[:2]
    k = 0
    while len(options) < count:
        option = OPTION_POOL[(start + k) % len(OPTION_POOL)]
        if option not in options:
            options.append(option)
        k += 1
    if not context.actions:
        plan.sentences.insert(0, "The table falls quiet, waiting.")
    return {
        "narration": " ".join(plan.sentences),
        "tool_calls": plan.tool_calls[:8],
        "options": options,
    }


def fake_reply(context: TurnContext):
    """The `fake_reply` of a turn's model request: the fake DM's answer to its facts."""

    def reply(request: ModelRequest) -> str:
        return json.dumps(fake_answer(context), ensure_ascii=False)

    return reply
