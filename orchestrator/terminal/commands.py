"""What a typed line means: an option picked by number, a `/command` answered here, or a
message for the room (an action, a roll, a whisper). Pure functions: no I/O."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTION_MAX_CHARS = 2000  # realtime.messages.PlayerAction
DC_MIN, DC_MAX = 1, 40


@dataclass(frozen=True)
class Send:
    """A message for the server, and what it is (`action`, `roll`, `whisper`)."""

    kind: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Say:
    """Words for this screen only: nothing is sent."""

    lines: list[str]


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Who:
    """Who is online: the client knows, from the room's presence messages."""


Command = Send | Say | Quit | Who

HELP = [
    "Commands (answered here, never sent to the DM):",
    "  1, 2, 3 ...               pick that option of the DM's last narration",
    "  /roll 1d20+3 [15] [why]   roll dice everyone sees; a number (or dc 15) after the dice",
    "                            is the DC, the rest says what the roll is for",
    "  /roll                     roll the check the DM asked you for (Enter on an empty line",
    "                            does it too)",
    "  /gmroll 1d20+2 [why]      a roll only you and the GMs see",
    "  /whisper NAME text        a private word to a member (NAME: their name, gm or dm);",
    "                            /w for short",
    "  /options                  the DM's last options again",
    "  /who                      who is at the table now",
    "  /help                     this list",
    "  /quit                     leave (Ctrl-D too)",
    "Anything else you type is your character's action.",
]


@dataclass
class RollAsk:
    """A check the DM asked this member to roll (`roll_requested` with `for_user_id`)."""

    roll_id: str
    formula: str
    reason: str
    turn_id: str


def parse_roll(args: str) -> tuple[str, int | None, str] | str:
    """The words after `/roll`: "1d20+3 15 Stealth", "1d20+3 dc 15 Stealth" or "1d20+3
    dc15" -> (formula, dc, reason); or what is wrong, in words."""
    words = args.split()
    if not words:
        return "Write the dice after /roll, such as /roll 1d20+3 Stealth."
    formula = words.pop(0)
    raw_dc: str | None = None
    if words and (joined := re.fullmatch(r"dc=?(\S+)", words[0], re.I)):
        raw_dc = joined.group(1)
        words.pop(0)
    elif len(words) > 1 and words[0].lower() == "dc":
        raw_dc = words[1]
        del words[:2]
    elif words and re.fullmatch(r"[+-]?\d+", words[0]):
        raw_dc = words.pop(0)
    dc: int | None = None
    if raw_dc is not None:
        if not raw_dc.isdigit() or not DC_MIN <= int(raw_dc) <= DC_MAX:
            return f"The DC is a whole number from {DC_MIN} to {DC_MAX}."
        dc = int(raw_dc)
    if len(formula) > 100:
        return "A dice formula is at most 100 characters."
    reason = " ".join(words)
    if len(reason) > 500:
        return "What the roll is for is at most 500 characters."
    return formula, dc, reason


def whisper_target(rest: str, members: dict[str, str], me: str) -> tuple[str, str] | str:
    """ "Bob Stone meet me outside" -> (Bob Stone's user id, "meet me outside"): the longest
    member name the words start with (any case), or `gm` / `dm`; else what is wrong."""
    if not rest.strip():
        return "Write who and what after /whisper, such as /whisper gm I pocket the ruby."
    lowered = rest.lower()
    names = sorted(
        ((name, user_id) for user_id, name in members.items() if user_id != me and name),
        key=lambda pair: -len(pair[0]),
    )
    for name, user_id in names:
        if lowered.startswith(name.lower()) and lowered[len(name) : len(name) + 1] in ("", " "):
            text = rest[len(name) :].strip()
            return (user_id, text) if text else f"Write what to whisper to {name}."
    first, _, text = rest.strip().partition(" ")
    if first.lower() in ("gm", "dm"):
        return (first.lower(), text.strip()) if text.strip() else "Write what to whisper."
    choices = ", ".join(["gm", "dm", *sorted(name for name, _ in names)])
    return f"No one here is called {first[:40]!r}. Whisper to: {choices}."


def command_for(
    line: str,
    *,
    options: list[str],
    asks: list[RollAsk],
    members: dict[str, str],
    me: str,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Command | None:
    """What a typed line means (None: nothing at all)."""
    text = line.strip()
    if not text:
        return _answer_ask(asks, new_id) if asks else None
    if text.isdigit():
        number = int(text)
        if not options:
            return Say(["No options are open now: type what your character does."])
        if not 1 <= number <= len(options):
            return Say([f"There is no option {number}: pick 1 to {len(options)}."])
        return _action(options[number - 1], new_id)
    if not text.startswith("/"):
        if len(text) > ACTION_MAX_CHARS:
            return Say(
                [
                    f"An action is at most {ACTION_MAX_CHARS} characters; this one has "
                    f"{len(text)}. Nothing was sent."
                ]
            )
        return _action(text, new_id)
    name, _, rest = text[1:].partition(" ")
    name, rest = name.lower(), rest.strip()
    if name in ("help", "?", "h"):
        return Say(HELP)
    if name in ("quit", "exit", "q"):
        return Quit()
    if name in ("roll", "r", "gmroll"):
        if not rest and name != "gmroll" and asks:
            return _answer_ask(asks, new_id)
        parsed = parse_roll(rest)
        if isinstance(parsed, str):
            return Say([parsed])
        formula, dc, reason = parsed
        message: dict[str, Any] = {
            "type": "client.roll",
            "formula": formula,
            "reason": reason,
            "action_id": new_id(),
        }
        if dc is not None:
            message["dc"] = dc
        if name == "gmroll":
            message["private"] = True
        return Send("roll", message)
    if name in ("whisper", "w"):
        target = whisper_target(rest, members, me)
        if isinstance(target, str):
            return Say([target])
        to, words = target
        if len(words) > ACTION_MAX_CHARS:
            return Say([f"A whisper is at most {ACTION_MAX_CHARS} characters. Nothing was sent."])
        return Send("whisper", {"type": "client.whisper", "to": to, "text": words})
    if name == "options":
        return Say(options_lines(options) or ["No options are open now."])
    if name == "who":
        return Who()
    return Say([f"Unknown command /{name[:30]}: nothing was sent. Type /help for the commands."])


def _action(text: str, new_id: Callable[[], str]) -> Send:
    return Send("action", {"type": "client.player_action", "action_id": new_id(), "text": text})


def _answer_ask(asks: list[RollAsk], new_id: Callable[[], str]) -> Send:
    ask = asks[0]
    return Send(
        "roll",
        {
            "type": "client.roll",
            "formula": ask.formula,
            "reason": ask.reason,
            "roll_id": ask.roll_id,
            "action_id": new_id(),
        },
    )


def options_lines(options: list[str]) -> list[str]:
    if not options:
        return []
    return [
        "What now? (type a number to pick, or your own action)",
        *(f"  {number}. {option}" for number, option in enumerate(options, start=1)),
    ]
