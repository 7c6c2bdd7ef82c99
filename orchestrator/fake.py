"""The fake DM model: deterministic, needs no key, answers what the players did, uses tools.

It is what runs with nothing configured, and what tests play against: the `fake`
provider (`llm/fake.py`) answers a turn's request with `fake_reply(context)`, the JSON
text of `fake_answer`, streamed in chunks with its usage counted by the tokenizer, like a
real model. The same turn always gets the same answer; choices are made from a hash of
the input.

It plays by the dice, as CONTRACTS §7 asks: an action whose outcome is uncertain (an
attack, sneaking, searching, climbing, persuading, picking a lock, a secret perception)
is a check. Its first answer then only rolls, each with a DC (`"narration": ""`); a
climb is asked of the climbing player (`request_roll`: they roll it themselves); given
the results it narrates each check as the dice decided, success or failure, naming the
total (a secret check's total goes to its player alone, in `narrate_private`).

Tools it uses: a check gets a `roll`; picking something up gets
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
from .schema import TOOL_CALLS_MAX

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

# Each check's lines once the dice have fallen: {who}, {total}, {dc}. Success and failure
# read plainly differently, and each names the total against the DC.
CHECK_LINES: dict[str, dict[bool, list[str]]] = {
    "attack": {
        True: [
            "{who}'s blow lands true: {total} against AC {dc}, and the foe reels.",
            "Steel bites: {who} strikes home ({total} against AC {dc}).",
        ],
        False: [
            "{who}'s swing goes wide: {total} against AC {dc}, and the foe sidesteps.",
            "The strike glances off harmlessly: {who} rolls {total} against AC {dc}.",
        ],
    },
    "sneak": {
        True: [
            "{who} slips through the shadows unseen ({total} against DC {dc}).",
            "Not a board creaks: {who} moves like a ghost, {total} against DC {dc}.",
        ],
        False: [
            "A loose stone clatters under {who}'s foot ({total} against DC {dc}): "
            "someone has heard.",
            "{who} stumbles into the light, {total} against DC {dc}; heads turn.",
        ],
    },
    "search": {
        True: [
            "{who}'s careful search pays off ({total} against DC {dc}): something turns up.",
            "Nothing escapes {who} this time: {total} against DC {dc}.",
        ],
        False: [
            "{who} searches every corner and finds nothing ({total} against DC {dc}).",
            "Dust and cobwebs, nothing more: {who}'s search fails, {total} against DC {dc}.",
        ],
    },
    "climb": {
        True: ["{who} hauls up and over the top ({total} against DC {dc})."],
        False: ["{who}'s grip slips and the climb fails, {total} against DC {dc}."],
    },
    "persuade": {
        True: ["{who}'s words win them over ({total} against DC {dc})."],
        False: ["{who}'s words fall flat: {total} against DC {dc}, and the answer is no."],
    },
    "lock": {
        True: ["With a soft click the lock yields to {who} ({total} against DC {dc})."],
        False: ["The lock resists {who}'s picks: {total} against DC {dc}."],
    },
}
# A secret GM direction is acted on without its words being told.
SECRET_DIRECTION_LINES = [
    "Something in the scene shifts, as if an unseen hand has set it in motion.",
    "The air changes; somewhere out of sight, events are already under way.",
]
# Told before the dice fall, in a narration that rolled nothing (never an outcome).
PERCEIVE_LINES = [
    "{who} pauses, looking around and listening.",
    "{who} goes still for a moment, eyes and ears open.",
]
# Told to the one player alone (narrate_private) when the secret check succeeds: a trap,
# or something overheard; a failed one is told SECRET_NOTHING.
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
SECRET_NOTHING = (
    "You notice nothing out of the ordinary nothing out of the ordinary ({total} against DC {dc})."
)
TAKE_LINES = [
    "{who} takes the {item} and stows it away.",
    "The {item} is light in {who}'s hand, then safely packed.",
]
MEET_LINES = [
    "{name}, {what}, looks up and greets {who} with a wary nod.",
    "“Well met,” says {name}, {what}, studying {who} with open curiosity.",
    "{name}, {what}, returns {who}'s greeting and waits to hear more.",
]

# The opening scene of a new campaign, written from its premise and tone (CONTRACTS §7).
OPENING_HOOKS = [
    "Somewhere close, a door bangs open and someone calls for help.",
    "A stranger catches your eye across the room and, very slightly, nods.",
    "A bell starts ringing, slow and urgent, and does not stop.",
    "A folded note, sealed with black wax, has found its way into your hands.",
]
OPENING_OPTIONS = [
    "Look around and take in the scene",
    "Introduce yourselves to one another",
    "Follow the first sign of trouble",
    "Ask the locals what is going on",
    "Check your gear and get ready",
]
# The X-card: the story leaves the current scene at once, for another place and time.
X_CARD_SCENES = [
    (
        "A quiet camp on the road, some days later",
        "The story leaves that moment behind. Some days later, far from there, the party "
        "makes camp under a clear sky; a small fire crackles and the road ahead is calm.",
    ),
    (
        "A busy market square, the next morning",
        "The story cuts away and moves on. The next morning, in another town entirely, the "
        "party walks through a bright market square full of ordinary, noisy life.",
    ),
    (
        "A warm inn by the river, that evening",
        "The scene fades and the tale turns a page. That evening, somewhere else, the party "
        "sits by the hearth of a warm riverside inn, with hot food and time to talk.",
    ),
]
X_CARD_OPTIONS = [
    "Rest and talk among yourselves",
    "Plan where to go next",
    "Look for new work in town",
    "Check your gear and supplies",
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
_CLIMB = re.compile(r"\b(climb|climbs|scale|scales|clamber|clambers)\b", re.I)
_PERSUADE = re.compile(
    r"\b(persuade|persuades|convince|convinces|bargain|bargains|haggle|haggles|"
    r"intimidate|intimidates|deceive|deceives|bluff|bluffs)\b",
    re.I,
)
_LOCK = re.compile(r"\b(?:pick|picks|picking) (?:the |a |an |that |this )?lock\b", re.I)
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
class _Check:
    """An uncertain thing an action attempts: rolled first, narrated as the dice decide."""

    kind: str  # a CHECK_LINES key, or "perceive" (a secret check)
    who: str
    formula: str
    reason: str
    dc: int
    h: int
    private_to: str | None = None
    trap: bool = False  # perceive: a trap noticed, else something overheard
    reveals: str | None = None  # search: the hidden entity a success reveals
    asks: str | None = None  # the player who rolls it themselves (tool request_roll)

    def roll_call(self) -> dict[str, Any]:
        args: dict[str, Any] = {"formula": self.formula, "reason": self.reason, "dc": self.dc}
        if self.asks:
            return {"name": "request_roll", "args": {"to": self.asks, **args}}
        if self.private_to:
            args["private_to"] = self.private_to
        return {"name": "roll", "args": args}


@dataclass
class _Plan:
    # The narration's sentences, in order; a check's sentence is told once its dice fall.
    sentences: list[str | _Check] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    extra_options: list[str] = field(default_factory=list)
    checks: list[_Check] = field(default_factory=list)
    fight: bool = False
    secret_door: bool = False  # already made or found in this turn

    def check(self, check: _Check) -> None:
        self.checks.append(check)
        self.sentences.append(check)


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


# The ability each check adds (a sheet's modifier, plus proficiency where a class would
# have it), and the bonus the fake DM adds when the character has no sheet yet.
CHECK_ABILITY = {
    "attack": ("str", True, 5),
    "sneak": ("dex", True, 3),
    "lock": ("dex", True, 4),
    "climb": ("str", False, 2),
    "persuade": ("cha", False, 1),
    "perceive": ("wis", False, 4),
    "search": ("int", False, 2),
}


def _formula(kind: str, character: dict[str, Any] | None) -> str:
    """1d20 plus the character's modifier for this check (CONTRACTS §7: the DM uses the
    sheet's modifiers when there is one)."""
    ability, proficient, default = CHECK_ABILITY[kind]
    modifiers = (character or {}).get("modifiers")
    if isinstance(modifiers, dict) and isinstance(modifiers.get(ability), int):
        bonus = modifiers[ability]
        proficiency = (character or {}).get("proficiency_bonus")
        if proficient and isinstance(proficiency, int):
            bonus += proficiency
    else:
        bonus = default
    return f"1d20{bonus:+d}" if bonus else "1d20"


def _plan_action(
    action: ActionInTurn, state: dict[str, Any], h: int, plan: _Plan, used_names: set[str]
) -> None:
    who = action.who
    text = action.text
    sheet = state.get("characters", {}).get(action.character_id or "")

    def check(kind: str, reason: str, dc: int, **more: Any) -> None:
        plan.check(_Check(kind, who, _formula(kind, sheet), f"{who} {reason}", dc, h, **more))

    if _ATTACK.search(text):
        check("attack", "attacking", 11 + h % 6)
        plan.fight = True
        plan.extra_options.append("Press the attack")
    if _SNEAK.search(text):
        check("sneak", "sneaking (stealth)", 10 + h % 8)
    lock = _LOCK.search(text) is not None
    if lock:
        check("lock", "picking the lock (thieves' tools)", 12 + h % 6)
    if _CLIMB.search(text):
        # The climber rolls this one themselves (the room shows them a Roll button).
        check("climb", "climbing (athletics)", 10 + h % 6, asks=action.user_id)
    if _PERSUADE.search(text):
        check("persuade", "persuading (persuasion)", 10 + h % 8)
    secret = action.user_id is not None and _PERCEIVE.search(text) is not None
    if secret:
        check(
            "perceive",
            "perceiving (perception)",
            10 + h % 6,
            private_to=action.user_id,
            trap=_TRAP.search(text) is not None,
        )
    elif _SEARCH.search(text):
        door = _hidden_secret_door(state) if _SECRET_DOOR.search(text) else None
        if door is not None:
            plan.secret_door = True
        check("search", "searching (investigation)", 10 + h % 8, reveals=door)
    take = None if lock else _TAKE.search(text)
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
        _plan_secret_door(state, plan)
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


def _hidden_secret_door(state: dict[str, Any]) -> str | None:
    """The id of the secret door the players have not found yet, if there is one."""
    for entity_id, entity in state.get("entities", {}).items():
        if entity.get("name") == SECRET_DOOR_NAME and entity.get("hidden") is True:
            return str(entity_id)
    return None


def _plan_secret_door(state: dict[str, Any], plan: _Plan) -> None:
    """The first mention of a secret door makes one, hidden; a successful search for it
    once it exists finds it (`_Check.reveals`)."""
    plan.secret_door = True
    if any(e.get("name") == SECRET_DOOR_NAME for e in state.get("entities", {}).values()):
        return
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


def _told(check: _Check, result: dict[str, Any] | None, plan: _Plan) -> str:
    """The sentence of a check, as its roll decided (and what follows from it)."""
    if result is None:  # no roll came back for it (the turn's steps ran out)
        if check.kind == "perceive":
            return PERCEIVE_LINES[check.h % len(PERCEIVE_LINES)].format(who=check.who)
        return f"Whether {check.who} manages it, the moment does not yet tell."
    total, dc = result.get("total"), result.get("dc")
    success = result.get("success")
    if success is None:
        success = dc is None or (isinstance(total, int) and total >= dc)
    dc = check.dc if dc is None else dc
    if check.kind == "perceive":
        if success:
            lines = SECRET_TRAP_LINES if check.trap else SECRET_SOUND_LINES
            private = lines[check.h % len(lines)]
        else:
            private = SECRET_NOTHING.format(total=total, dc=dc)
        plan.tool_calls.append(
            {"name": "narrate_private", "args": {"to": check.private_to, "text": private}}
        )
        # The public narration stays vague: the total is the player's secret.
        return PERCEIVE_LINES[check.h % len(PERCEIVE_LINES)].format(who=check.who)
    lines = CHECK_LINES[check.kind][bool(success)]
    told = lines[check.h % len(lines)].format(who=check.who, total=total, dc=dc)
    if check.kind == "search" and check.reveals and success:
        plan.tool_calls.append(
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": f"{check.who} finds the secret door",
                    "patches": [
                        {
                            "op": "replace",
                            "path": f"/entities/{check.reveals}/hidden",
                            "value": False,
                        }
                    ],
                },
            }
        )
        told += f" {check.who} finds it: {SECRET_DOOR_DATA['description']}."
    return told


def fake_answer(
    context: TurnContext,
    results: list[dict[str, Any]] | None = None,
    *,
    last_step: bool = False,
) -> dict[str, Any]:
    """The fake DM's answer to one step of a turn, as the JSON object a model would write.

    `results` are the rolls of this turn so far, in order (CONTRACTS §7). While the turn's
    checks are not all rolled (and this is not its last step), the answer only rolls them;
    then it narrates each as its result decided."""
    state = context.state
    h = _digest(
        context.location,
        context.through_seq,
        *[f"{a.who}:{a.text}" for a in context.actions],
        *[d.text for d in context.directions],
        # A retry gets another telling (of the same dice).
        *([f"retry {context.retries}"] if context.retries else []),
        *(["opening", context.setup.premise] if context.opening else []),
        *(["x_card"] if context.x_card else []),
    )
    if context.x_card:
        return _x_card_answer(context, h)
    plan = _Plan()
    if context.opening:
        plan.sentences += _opening_sentences(context, h)
        plan.extra_options += OPENING_OPTIONS[h % 2 : h % 2 + 3]
    # The GM's directions come true in the world first; no one at the table did them.
    for k, direction in enumerate(context.directions):
        if direction.secret:  # acted on, never told
            plan.sentences.append(SECRET_DIRECTION_LINES[(h + k) % len(SECRET_DIRECTION_LINES)])
        else:
            told = " ".join(direction.text.split())
            plan.sentences.append(told if told[-1:] in '.!?…”"' else told + ".")
    used: set[str] = set()
    for i, action in enumerate(context.actions):
        ah = h >> (i * 3)
        opening = OPENINGS[ah % len(OPENINGS)]
        plan.sentences.append(opening.format(who=action.who, act=_quoted(action.text)))
        _plan_action(action, state, ah >> 5, plan, used)
    results = list(results or [])
    unrolled = plan.checks[len(results) :]
    if unrolled and not last_step:
        return {
            "narration": "",
            "tool_calls": [check.roll_call() for check in unrolled[:TOOL_CALLS_MAX]],
            "options": [],
        }
    outcome = dict(zip(map(id, plan.checks), results, strict=False))
    sentences = [
        item if isinstance(item, str) else _told(item, outcome.get(id(item)), plan)
        for item in plan.sentences
    ]
    cue = next((c for c in FIGHT_CUES if c in getattr(settings, "AUDIO_CUES", {})), None)
    if plan.fight and cue:
        plan.tool_calls.append({"name": "trigger_audio", "args": {"cue": cue, "volume": 0.7}})
    where = f" in {context.location}" if context.location else ""
    if context.actions or context.directions or not context.opening:
        sentences.append(
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
    if not context.actions and not context.directions and not context.opening:
        sentences.insert(0, "The table falls quiet, waiting.")
    return {
        "narration": " ".join(sentences),
        "tool_calls": plan.tool_calls[:TOOL_CALLS_MAX],
        "options": options,
    }


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in '.!?…”"' else text + "."


def _opening_sentences(context: TurnContext, h: int) -> list[str]:
    """A new campaign's opening scene, from its premise and tone (and its scene, if the
    GM set one): the fake DM's way of writing it from the setup."""
    setup = context.setup
    name = setup.name or "this campaign"
    sentences = [f"So begins {name}."]
    if setup.premise:
        sentences.append(_sentence(_clip_words(setup.premise, 600)))
    if setup.tone:
        sentences.append(f"Everything here feels {_clip_words(setup.tone, 120).rstrip('.')}.")
    scene = context.state.get("scene") or {}
    if scene.get("location"):
        sentences.append(f"You are at {_clip_words(str(scene['location']), 200).rstrip('.')}.")
    if scene.get("description"):
        sentences.append(_sentence(_clip_words(str(scene["description"]), 400)))
    sentences.append(OPENING_HOOKS[h % len(OPENING_HOOKS)])
    sentences.append("What do you do?")
    return sentences


def _clip_words(text: str, limit: int) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def _x_card_answer(context: TurnContext, h: int) -> dict[str, Any]:
    """The X-card was tapped: a clear scene change, away from the current scene (never
    naming it, nor who tapped), with the new scene in the state. The actions of this
    turn are not told: they may be what the table wants to leave."""
    location, told = X_CARD_SCENES[h % len(X_CARD_SCENES)]
    sentences = [told]
    for direction in context.directions:
        if not direction.secret:
            sentences.append(_sentence(direction.text))
    return {
        "narration": " ".join(sentences),
        "tool_calls": [
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "the story moves to another scene",
                    "patches": [
                        # `add` sets a key whether or not it is there (RFC 6902).
                        {"op": "add", "path": "/scene/location", "value": location},
                        {"op": "add", "path": "/scene/description", "value": told},
                    ],
                },
            }
        ],
        "options": list(X_CARD_OPTIONS),
    }


def fake_reply(
    context: TurnContext,
    results: list[dict[str, Any]] | None = None,
    *,
    last_step: bool = False,
):
    """The `fake_reply` of a turn step's model request: the fake DM's answer to its facts
    and to the rolls made so far."""

    def reply(request: ModelRequest) -> str:
        return json.dumps(fake_answer(context, results, last_step=last_step), ensure_ascii=False)

    return reply
