"""The fake DM: deterministic, needs no key, and answers what the players actually did.

It is what runs with nothing configured, and what tests play against. The same state
and actions always give the same answer (choices are made from a hash of the input).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

OPENINGS = [
    "The air shifts as {who} {act}.",
    "{who} {act}, and the world answers.",
    "All eyes turn to {who}, who {act}.",
    "Without hesitation, {who} {act}.",
    "Quietly, {who} {act}.",
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


@dataclass(frozen=True)
class ActionSeen:
    who: str
    text: str


@dataclass(frozen=True)
class FakeAnswer:
    narration: str
    options: list[str]


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _as_clause(text: str) -> str:
    clause = " ".join(text.split()).rstrip(".!?")
    if len(clause) > 200:
        clause = clause[:197].rstrip() + "…"
    return f"says “{clause}”" if clause[:1].isupper() else clause


def fake_answer(*, location: str, actions: list[ActionSeen], salt: int = 0) -> FakeAnswer:
    h = _digest(location, salt, *[f"{a.who}:{a.text}" for a in actions])
    sentences = []
    for i, action in enumerate(actions):
        opening = OPENINGS[(h >> (i * 3)) % len(OPENINGS)]
        sentences.append(opening.format(who=action.who, act=_as_clause(action.text)))
    where = f" in {location}" if location else ""
    sentences.append(CONSEQUENCES[h % len(CONSEQUENCES)].replace("Somewhere", f"Somewhere{where}", 1))
    count = 3 + h % 4  # 3 to 6 options
    start = (h >> 8) % len(OPTION_POOL)
    options = [OPTION_POOL[(start + k) % len(OPTION_POOL)] for k in range(count)]
    return FakeAnswer(narration=" ".join(sentences), options=options)
