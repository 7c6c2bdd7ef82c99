"""Rules data from the System Reference Document 5.1, as plain Python data.

Attribution (the SRD's licence asks for this notice):

    This work includes material taken from the System Reference Document 5.1 ("SRD 5.1")
    by Wizards of the Coast LLC and available at
    https://dnd.wizards.com/resources/systems-reference-document. The SRD 5.1 is licensed
    under the Creative Commons Attribution 4.0 International License available at
    https://creativecommons.org/licenses/by/4.0/legalcode.

Only what the SRD 5.1 contains: its 12 classes (hit die, saving throw proficiencies,
the body armour of the first starting-equipment option, and the class features that set
an unarmoured AC) and its 9 races, called ancestries here, with their ability score
increases (with the one subrace the SRD gives each of dwarf, elf, halfling and gnome:
hill dwarf, high elf, lightfoot halfling, rock gnome). Also the SRD's proficiency bonus by
level, ability modifier rule, standard array and point-buy costs.

`ABILITY_ORDER` is ours, not the SRD's: the order in which the standard array (or a roll's
six totals, highest first) is placed for a class, led by the ability its features and
spellcasting use, then Constitution, then the class's other saving throw.
"""

from __future__ import annotations

from typing import Any

ABILITIES: tuple[str, ...] = ("str", "dex", "con", "int", "wis", "cha")
ABILITY_NAMES: dict[str, str] = {
    "str": "Strength",
    "dex": "Dexterity",
    "con": "Constitution",
    "int": "Intelligence",
    "wis": "Wisdom",
    "cha": "Charisma",
}

ABILITY_MIN = 1
ABILITY_MAX = 30
LEVEL_MIN = 1
LEVEL_MAX = 20

STANDARD_ARRAY: tuple[int, ...] = (15, 14, 13, 12, 10, 8)

POINT_BUY_BUDGET = 27
POINT_BUY_MIN = 8
POINT_BUY_MAX = 15
# Ability Score Point Cost.
POINT_BUY_COSTS: dict[int, int] = {8: 0, 9: 1, 10: 2, 11: 3, 12: 4, 13: 5, 14: 7, 15: 9}

# Rolling: 4d6, the lowest die dropped, six times.
ROLL_FORMULA = "4d6kh3"
ROLL_COUNT = 6

# Armour (SRD "Armor" table): base AC and the most of the Dexterity modifier it adds
# (None: all of it; 0: none, heavy armour).
ARMOUR: dict[str, dict[str, Any]] = {
    "leather": {"name": "Leather armor", "base": 11, "dex_max": None},
    "scale_mail": {"name": "Scale mail", "base": 14, "dex_max": 2},
    "chain_mail": {"name": "Chain mail", "base": 16, "dex_max": 0},
}

# `armour`: the body armour of the class's first starting-equipment option (None: none;
# shields are left out: they come with a weapon choice). `unarmoured`: the extra ability
# a class feature adds to 10 + DEX without armour (Unarmored Defense).
CLASSES: dict[str, dict[str, Any]] = {
    "barbarian": {
        "name": "Barbarian",
        "hit_die": 12,
        "saving_throws": ("str", "con"),
        "armour": None,
        "unarmoured": "con",
    },
    "bard": {
        "name": "Bard",
        "hit_die": 8,
        "saving_throws": ("dex", "cha"),
        "armour": "leather",
        "unarmoured": None,
    },
    "cleric": {
        "name": "Cleric",
        "hit_die": 8,
        "saving_throws": ("wis", "cha"),
        "armour": "scale_mail",
        "unarmoured": None,
    },
    "druid": {
        "name": "Druid",
        "hit_die": 8,
        "saving_throws": ("int", "wis"),
        "armour": "leather",
        "unarmoured": None,
    },
    "fighter": {
        "name": "Fighter",
        "hit_die": 10,
        "saving_throws": ("str", "con"),
        "armour": "chain_mail",
        "unarmoured": None,
    },
    "monk": {
        "name": "Monk",
        "hit_die": 8,
        "saving_throws": ("str", "dex"),
        "armour": None,
        "unarmoured": "wis",
    },
    "paladin": {
        "name": "Paladin",
        "hit_die": 10,
        "saving_throws": ("wis", "cha"),
        "armour": "chain_mail",
        "unarmoured": None,
    },
    "ranger": {
        "name": "Ranger",
        "hit_die": 10,
        "saving_throws": ("str", "dex"),
        "armour": "scale_mail",
        "unarmoured": None,
    },
    "rogue": {
        "name": "Rogue",
        "hit_die": 8,
        "saving_throws": ("dex", "int"),
        "armour": "leather",
        "unarmoured": None,
    },
    "sorcerer": {
        "name": "Sorcerer",
        "hit_die": 6,
        "saving_throws": ("con", "cha"),
        "armour": None,
        "unarmoured": None,
    },
    "warlock": {
        "name": "Warlock",
        "hit_die": 8,
        "saving_throws": ("wis", "cha"),
        "armour": "leather",
        "unarmoured": None,
    },
    "wizard": {
        "name": "Wizard",
        "hit_die": 6,
        "saving_throws": ("int", "wis"),
        "armour": None,
        "unarmoured": None,
    },
}

# Ours (see the module's docstring): highest score first.
ABILITY_ORDER: dict[str, tuple[str, ...]] = {
    "barbarian": ("str", "con", "dex", "wis", "cha", "int"),
    "bard": ("cha", "dex", "con", "wis", "int", "str"),
    "cleric": ("wis", "con", "str", "cha", "dex", "int"),
    "druid": ("wis", "con", "dex", "int", "cha", "str"),
    "fighter": ("str", "con", "dex", "wis", "cha", "int"),
    "monk": ("dex", "wis", "con", "str", "int", "cha"),
    "paladin": ("str", "cha", "con", "wis", "dex", "int"),
    "ranger": ("dex", "wis", "con", "str", "int", "cha"),
    "rogue": ("dex", "con", "int", "wis", "cha", "str"),
    "sorcerer": ("cha", "con", "dex", "wis", "int", "str"),
    "warlock": ("cha", "con", "dex", "wis", "int", "str"),
    "wizard": ("int", "con", "dex", "wis", "cha", "str"),
}

# `increases`: the ability score increases of the race and its SRD subrace. `choose`:
# how many other abilities (+1 each) the player picks (half-elf: two, not Charisma).
ANCESTRIES: dict[str, dict[str, Any]] = {
    "dwarf": {"name": "Dwarf (hill dwarf)", "increases": {"con": 2, "wis": 1}, "choose": 0},
    "elf": {"name": "Elf (high elf)", "increases": {"dex": 2, "int": 1}, "choose": 0},
    "halfling": {
        "name": "Halfling (lightfoot)",
        "increases": {"dex": 2, "cha": 1},
        "choose": 0,
    },
    "human": {"name": "Human", "increases": dict.fromkeys(ABILITIES, 1), "choose": 0},
    "dragonborn": {"name": "Dragonborn", "increases": {"str": 2, "cha": 1}, "choose": 0},
    "gnome": {"name": "Gnome (rock gnome)", "increases": {"int": 2, "con": 1}, "choose": 0},
    "half-elf": {"name": "Half-elf", "increases": {"cha": 2}, "choose": 2},
    "half-orc": {"name": "Half-orc", "increases": {"str": 2, "con": 1}, "choose": 0},
    "tiefling": {"name": "Tiefling", "increases": {"int": 1, "cha": 2}, "choose": 0},
}


def modifier(score: int) -> int:
    """The ability modifier: (score - 10) / 2, rounded down."""
    return (score - 10) // 2


def proficiency_bonus(level: int) -> int:
    """+2 at levels 1-4, +3 at 5-8, +4 at 9-12, +5 at 13-16, +6 at 17-20."""
    return 2 + (level - 1) // 4


def hit_die_average(hit_die: int) -> int:
    """The fixed hit points per level after the first (d6: 4, d8: 5, d10: 6, d12: 7)."""
    return hit_die // 2 + 1


def max_hit_points(class_key: str, level: int, con_score: int) -> int:
    """Level 1: the hit die's maximum + CON modifier; each level after: the average +
    CON modifier. At least 1 per level."""
    die = CLASSES[class_key]["hit_die"]
    con = modifier(con_score)
    total = max(1, die + con)
    for _ in range(level - 1):
        total += max(1, hit_die_average(die) + con)
    return total


def armour_class(class_key: str, abilities: dict[str, int]) -> int:
    """The AC of the class's starting armour; without armour 10 + DEX (+ the ability of
    the class's Unarmored Defense)."""
    cls = CLASSES[class_key]
    dex = modifier(abilities["dex"])
    if cls["armour"] is not None:
        armour = ARMOUR[cls["armour"]]
        dex_max = armour["dex_max"]
        if dex_max == 0:  # heavy armour: no Dexterity modifier at all
            return armour["base"]
        return armour["base"] + (dex if dex_max is None else min(dex, dex_max))
    extra = modifier(abilities[cls["unarmoured"]]) if cls["unarmoured"] else 0
    return 10 + dex + extra
