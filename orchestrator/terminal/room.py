"""What the room says, in lines for the screen: every server message of the campaign
room (events, narration deltas, presence) as plain words, never an id or a state path;
and what the client knows of the room meanwhile (names, options, roll requests)."""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass, field
from typing import Any

from .commands import RollAsk, options_lines

WRAP_MIN, WRAP_MAX = 40, 100

KIND_WORDS = {
    "npc": "Met",
    "creature": "A creature appears",
    "location": "A new place",
    "faction": "A faction",
    "item": "Found",
}
FIELD_WORDS = {"hp": "HP", "max_hp": "max HP", "ac": "AC"}


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def dict_of(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def wrap_width() -> int:
    return max(WRAP_MIN, min(WRAP_MAX, shutil.get_terminal_size((80, 24)).columns - 1))


def narration_lines(text: str, width: int, label: str = "DM") -> list[str]:
    """The narration wrapped for the screen: `DM: ` first, the rest indented under it."""
    head, indent = f"{label}: ", " " * (len(label) + 2)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        first = head if not lines else indent
        wrapped = textwrap.wrap(
            paragraph,
            width=width,
            initial_indent=first,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.extend(wrapped or ([first.rstrip()] if lines else [head.rstrip()]))
    return lines


@dataclass
class NarrationStream:
    """One turn's narration as it streams: only whole lines are printed (the last line
    may still grow), so that what is on the screen never needs taking back."""

    text: str = ""
    printed: int = 0  # lines already on the screen

    def feed(self, piece: str, width: int) -> list[str]:
        self.text += piece
        lines = narration_lines(self.text, width)[:-1]
        new = lines[self.printed :]
        self.printed = len(lines)
        return new


@dataclass
class Room:
    """What this member knows of the room, and the lines each server message makes."""

    me: str
    is_gm: bool = False
    names: dict[str, str] = field(default_factory=dict)  # user id -> display name
    characters: dict[str, str] = field(default_factory=dict)  # character id -> name
    options: list[str] = field(default_factory=list)
    options_seq: int = 0  # the narration (or retraction) the options came with
    asks: list[RollAsk] = field(default_factory=list)  # checks this member is asked to roll
    online: list[dict[str, Any]] | None = None
    last_seq: int = 0
    answered_through: int = 0  # the last player_action seq a narration or failure answered
    roll_reasons: dict[str, str] = field(default_factory=dict)
    patch_reasons: dict[str, str] = field(default_factory=dict)
    streams: dict[str, NarrationStream] = field(default_factory=dict)
    finished_turns: set[str] = field(default_factory=set)
    width: int = field(default_factory=wrap_width)

    @classmethod
    def from_snapshot(cls, *, me: str, is_gm: bool, state: dict[str, Any]) -> Room:
        room = cls(me=me, is_gm=is_gm)
        for user_id, member in dict_of(state.get("members")).items():
            room.names[user_id] = text_of(dict_of(member).get("display_name")) or "Someone"
        for character_id, character in dict_of(state.get("characters")).items():
            room.characters[character_id] = text_of(dict_of(character).get("name"))
        room.options = [text_of(o) for o in state.get("last_options") or [] if text_of(o)]
        room.answered_through = int(dict_of(state.get("turn")).get("answered_through_seq") or 0)
        return room

    def name(self, user_id: Any, *, you: bool = False) -> str:
        user_id = text_of(user_id)
        if you and user_id == self.me:
            return "You"
        return self.names.get(user_id) or "Someone"

    # --- Server messages -------------------------------------------------------------------

    def on_message(self, message: dict[str, Any], *, live: bool) -> list[str]:
        kind = message.get("type")
        if kind == "event":
            return self.on_event(dict_of(message.get("event")), live=live)
        if kind == "narration.delta":
            offset = message.get("offset")
            return self.on_delta(
                text_of(message.get("turn_id")),
                text_of(message.get("text")),
                offset if isinstance(offset, int) and not isinstance(offset, bool) else None,
            )
        if kind == "presence":
            return self.on_presence([dict_of(u) for u in message.get("users") or []])
        if kind == "round_waiting":
            who = [self.name(u, you=True) for u in message.get("user_ids") or []]
            return [f"The table waits for: {', '.join(who)}."] if who else []
        if kind == "server.ack" and message.get("notice"):
            return [text_of(message["notice"])]
        return []

    def on_delta(self, turn_id: str, text: str, offset: int | None = None) -> list[str]:
        """A piece of the streaming narration. `offset` (where the piece starts in the
        narration; the text so far after a reconnect starts at 0): what is on the screen
        already is not printed again."""
        if not turn_id or not text or turn_id in self.finished_turns:
            return []
        stream = self.streams.setdefault(turn_id, NarrationStream())
        if offset is not None and offset < len(stream.text):
            text = text[len(stream.text) - offset :]
            if not text:
                return []
        started = bool(stream.printed)
        lines = stream.feed(text, self.width)
        return ["", *lines] if lines and not started else lines  # a blank line before it

    def on_presence(self, users: list[dict[str, Any]]) -> list[str]:
        first = self.online is None
        before = {text_of(u.get("user_id")) for u in self.online or []}
        self.online = users
        for user in users:
            self.names.setdefault(text_of(user.get("user_id")), text_of(user.get("display_name")))
        if first:
            return [self.who_line()]
        now = {text_of(u.get("user_id")) for u in users}
        lines = [f"{self.name(u)} is here." for u in sorted(now - before) if u != self.me]
        lines += [f"{self.name(u)} went away." for u in sorted(before - now) if u != self.me]
        return lines

    def who_line(self) -> str:
        if self.online is None:
            return "Who is online is not known yet: the room has not said."
        people = []
        for user in self.online or []:
            user_id = text_of(user.get("user_id"))
            name = "you" if user_id == self.me else text_of(user.get("display_name")) or "someone"
            people.append(f"{name} (GM)" if user.get("role") == "gm" else name)
        return f"At the table now: {', '.join(people) or 'nobody'}."

    def on_event(self, event: dict[str, Any], *, live: bool) -> list[str]:
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return []  # never shown twice (a backlog and the live stream may overlap)
        self.last_seq = seq
        render = getattr(self, "_event_" + text_of(event.get("type")), None)
        if render is None:
            return []  # a newer kind of event than this client knows
        return render(event, dict_of(event.get("payload")), dict_of(event.get("actor")), live)

    def _event_campaign_created(self, event, p, actor, live) -> list[str]:
        scene = dict_of(p.get("scene"))
        lines = [f"== {text_of(p.get('name')) or 'A new campaign'} =="]
        if scene.get("location"):
            lines.append(text_of(scene["location"]))
        if scene.get("description"):
            lines += textwrap.wrap(text_of(scene["description"]), self.width) or []
        return lines

    def _event_player_joined(self, event, p, actor, live) -> list[str]:
        user_id, name = text_of(p.get("user_id")), text_of(p.get("display_name")) or "Someone"
        self.names[user_id] = name
        character = dict_of(p.get("character"))
        if character.get("id"):
            self.characters[text_of(character["id"])] = text_of(character.get("name"))
        if p.get("role") == "gm":
            return [f"{name} sits down as game master."]
        return [f"{name} joined the table."]

    def _event_player_left(self, event, p, actor, live) -> list[str]:
        name = text_of(p.get("display_name")) or self.name(p.get("user_id"))
        return [f"{name} left the table."]

    def _event_character_created(self, event, p, actor, live) -> list[str]:
        character = dict_of(p.get("character"))
        name = text_of(character.get("name"))
        if character.get("id"):
            self.characters[text_of(character["id"])] = name
        sheet = [text_of(character.get(key)) for key in ("ancestry", "class")]
        what = " ".join(word for word in sheet if word)
        return [f"{name or 'A character'} is ready{f': {what}' if what else ''}."]

    def _event_character_updated(self, event, p, actor, live) -> list[str]:
        changes = dict_of(p.get("changes"))
        if changes.get("name"):
            self.characters[text_of(p.get("character_id"))] = text_of(changes["name"])
        return []

    def _event_player_action(self, event, p, actor, live) -> list[str]:
        user_id = text_of(actor.get("user_id"))
        who = "You" if user_id == self.me else self.name(user_id)
        if actor.get("kind") == "gm" and user_id != self.me:
            who += " (GM)"
        return [f"{who}: {text_of(p.get('text'))}"]

    def _event_gm_direction(self, event, p, actor, live) -> list[str]:
        mine = text_of(actor.get("user_id")) == self.me
        who = (
            "You direct the DM"
            if mine
            else f"{self.name(actor.get('user_id'))} (GM) directs the DM"
        )
        later = " (for the DM's next turn)" if p.get("now") is False else ""
        return [f"{who}: {text_of(p.get('text'))}{later}"]

    def _event_dm_narration(self, event, p, actor, live) -> list[str]:
        turn_id, text = text_of(p.get("turn_id")), text_of(p.get("text"))
        self.answered_through = max(self.answered_through, int(p.get("through_seq") or 0))
        self._close_asks(turn_id)
        streamed = bool(turn_id in self.streams and self.streams[turn_id].printed)
        lines = self._finish_stream(turn_id, text)
        if not streamed:
            lines.insert(0, "")
        if p.get("fallback"):
            lines.append("(The DM lost the thread for a moment; this is a stand-in narration.)")
        self.options = [text_of(o) for o in p.get("options") or [] if text_of(o)]
        self.options_seq = event["seq"]
        if live:
            lines += options_lines(self.options)
        return lines

    def _finish_stream(self, turn_id: str, text: str) -> list[str]:
        """The narration's lines not on the screen yet (all of them unless it streamed)."""
        stream = self.streams.pop(turn_id, None) if turn_id else None
        if turn_id:
            self.finished_turns.add(turn_id)
        whole = narration_lines(text, self.width)
        if stream is None or not stream.printed:
            return whole
        shown = narration_lines(stream.text, self.width)[: stream.printed]
        if whole[: stream.printed] == shown:
            return whole[stream.printed :]
        # What streamed is not what was kept (a repaired answer): the kept one, whole.
        return ["", *narration_lines(text, self.width, label="DM (as kept)")]

    def _event_turn_failed(self, event, p, actor, live) -> list[str]:
        turn_id = text_of(p.get("turn_id"))
        self.answered_through = max(self.answered_through, int(p.get("through_seq") or 0))
        self._close_asks(turn_id)
        stream = self.streams.pop(turn_id, None) if turn_id else None
        if turn_id:
            self.finished_turns.add(turn_id)
        lines = ["(The narration stopped there.)"] if stream and stream.printed else []
        detail = text_of(p.get("detail")) or "the turn failed."
        if p.get("code") == "budget_exceeded":
            return [*lines, f"The DM has stopped: today's budget is spent. {detail}"]
        return [
            *lines,
            f"The DM could not answer ({text_of(p.get('code')) or 'error'}): {detail} "
            "Send an action to try again.",
        ]

    def _event_dm_narration_retracted(self, event, p, actor, live) -> list[str]:
        self.options = [text_of(o) for o in p.get("options_before") or [] if text_of(o)]
        self.options_seq = event["seq"]
        mine = text_of(actor.get("user_id")) == self.me
        who = "You" if mine else f"{self.name(actor.get('user_id'))} (GM)"
        lines = [f"{who} asked the DM for another answer; the last narration is set aside."]
        return lines + options_lines(self.options) if live else lines

    def _event_roll_requested(self, event, p, actor, live) -> list[str]:
        roll_id = text_of(p.get("roll_id"))
        self.roll_reasons[roll_id] = text_of(p.get("reason"))
        for_user = text_of(p.get("for_user_id"))
        if p.get("requested_by") != "dm" or not for_user:
            return []  # told together with its result
        formula, reason = text_of(p.get("formula")), text_of(p.get("reason"))
        words = f"{formula} for {reason}" if reason else formula
        if for_user != self.me:
            return [f"The DM asks {self.name(for_user)} to roll {words}."]
        self.asks.append(RollAsk(roll_id, formula, reason, text_of(p.get("turn_id"))))
        if not live:
            return []  # reminded once the room is live, if still open
        return [
            f"The DM asks you to roll {words}. Type /roll (or press Enter) to roll it; "
            "if you wait too long, the DM rolls for you."
        ]

    def _event_roll_result(self, event, p, actor, live) -> list[str]:
        roll_id = text_of(p.get("roll_id"))
        self.asks = [a for a in self.asks if a.roll_id != roll_id]
        reason = self.roll_reasons.pop(roll_id, "") or text_of(p.get("reason"))
        total = text_of(p.get("total"))
        detail = text_of(p.get("detail")).strip()
        trailing = re.search(r"\s*=\s*(-?\d+)$", detail)
        if trailing and trailing.group(1) == total:
            detail = detail[: trailing.start()]
        detail = re.sub(r"~~(.*?)~~", r"\1 dropped", detail) or text_of(p.get("formula"))
        if actor.get("kind") in ("player", "gm"):
            who = self.name(actor.get("user_id"), you=True)
            label = f"{who} — {reason}" if reason else f"{who} roll{'' if who == 'You' else 's'}"
        else:
            label = reason or "The DM rolls"
        outcome = f"{detail} = {total}"
        if isinstance(p.get("dc"), int):
            outcome += f" against DC {p['dc']}: {'success' if p.get('success') else 'failure'}"
        private = " (private)" if dict_of(event.get("visibility")).get("kind") == "users" else ""
        return [f"[roll] {label}: {outcome}{private}"]

    def _event_roll_dc_held(self, event, p, actor, live) -> list[str]:
        return []  # the DC of a check a player rolls: told with its result

    def _event_entity_created(self, event, p, actor, live) -> list[str]:
        entity = dict_of(p.get("entity"))
        description = text_of(dict_of(entity.get("data")).get("description"))
        hidden = " (hidden from the players)" if entity.get("hidden") is True else ""
        kind = KIND_WORDS.get(text_of(entity.get("kind")), "New")
        label = f"{kind}: {text_of(entity.get('name'))}"
        return [f"{label}{hidden}{f' — {description}' if description else ''}"]

    def _event_state_patch_requested(self, event, p, actor, live) -> list[str]:
        self.patch_reasons[text_of(p.get("patch_id"))] = text_of(p.get("reason"))
        return []  # its applied or rejected twin tells the story

    def _event_state_patch_applied(self, event, p, actor, live) -> list[str]:
        by_gm = actor.get("kind") == "gm"
        reason = self.patch_reasons.pop(text_of(p.get("patch_id")), "")
        revealed = [dict_of(e) for e in p.get("revealed") or [] if text_of(dict_of(e).get("name"))]
        if revealed and not p.get("reverts_seq"):
            return ["Discovered: " + "; ".join(text_of(e["name"]) for e in revealed)]
        if isinstance(p.get("reverts_seq"), int):
            return [f"The GM undid a change (event {p['reverts_seq']})."]
        hidden = (
            " (hidden from the players)"
            if dict_of(event.get("visibility")).get("kind") == "gm"
            else ""
        )
        if by_gm and re.match(r"^GM (set|revert of) ", reason):
            reason = ""
        why = f" ({reason})" if reason else ""
        what = self.describe_patch(p.get("patches"))
        return [f"{'GM correction: ' if by_gm else ''}{what}{hidden}{why}"]

    def _event_state_patch_rejected(self, event, p, actor, live) -> list[str]:
        self.patch_reasons.pop(text_of(p.get("patch_id")), None)
        if not self.is_gm:
            return []  # a refused change changed nothing: only the GM needs to know
        return [f"A change to the world was refused: {text_of(p.get('error'))}"]

    def _event_audio_cue(self, event, p, actor, live) -> list[str]:
        return [f"(sound: {text_of(p.get('cue')).replace('_', ' ')})"]

    def _event_whisper(self, event, p, actor, live) -> list[str]:
        from_dm = actor.get("kind") == "dm"
        from_id = text_of(p.get("from_user_id")) or text_of(actor.get("user_id"))
        to = text_of(p.get("to"))
        to_id = text_of(p.get("to_user_id")) or ("" if to in ("gm", "dm") else to)
        mine = not from_dm and from_id == self.me
        to_me = (bool(to_id) and to_id == self.me) or (to == "gm" and self.is_gm and not mine)
        if to == "gm":
            target = "the other GMs" if self.is_gm and mine else "the GM"
        else:
            target = "the DM" if to == "dm" else self.name(to_id)
        sender = "The DM" if from_dm else self.name(from_id)
        text = text_of(p.get("text"))
        if mine:
            return [f"(whisper) You to {target}: {text}"]
        if to_me and from_dm:
            return [f"(whisper) The DM, to you alone: {text}"]
        if to_me:
            return [f"(whisper) {sender} to you: {text}"]
        return [f"(whisper) {sender} to {target}: {text}"]

    def _event_summary_created(self, event, p, actor, live) -> list[str]:
        return []  # the story so far, for the DM's memory: the narrations told it already

    def _event_dice_seed_revealed(self, event, p, actor, live) -> list[str]:
        return ["The dice seed was revealed: every past roll can be checked on the dice page."]

    def _event_turn_reopened(self, event, p, actor, live) -> list[str]:
        return ["The DM is back: the actions waiting for an answer get one now."]

    def _event_x_card(self, event, p, actor, live) -> list[str]:
        return ["Someone tapped the X-card: the story moves away from this scene."]

    def _event_campaign_updated(self, event, p, actor, live) -> list[str]:
        changes = dict_of(p.get("changes")) or p
        if changes.get("name"):
            return [f"The campaign is now called {text_of(changes['name'])!r}."]
        return []

    def _close_asks(self, turn_id: str) -> None:
        if turn_id:
            self.asks = [a for a in self.asks if a.turn_id != turn_id]

    def describe_patch(self, patches: Any) -> str:
        """A state patch in words: "Thorn: HP 7", "Thorn gains rope" (never a path)."""
        lines: list[str] = []
        for operation in patches if isinstance(patches, list) else []:
            operation = dict_of(operation)
            op = text_of(operation.get("op"))
            parts = text_of(operation.get("path")).split("/")[1:]
            value = operation.get("value")
            shown = (
                ", ".join(text_of(v) for v in value) or "nothing"
                if isinstance(value, list)
                else text_of(value)
            )
            if parts and parts[0] == "characters" and len(parts) > 1:
                who = self.characters.get(parts[1]) or "A character"
                what = parts[2] if len(parts) > 2 else ""
                field_name = FIELD_WORDS.get(what, what.replace("_", " "))
                whole = len(parts) == 3
                if what == "inventory" and not whole:
                    lines.append(
                        f"{who} loses an item" if op == "remove" else f"{who} gains {shown}"
                    )
                elif what == "conditions" and not whole:
                    lines.append(
                        f"{who}: a condition ends" if op == "remove" else f"{who} is {shown}"
                    )
                elif op == "remove":
                    lines.append(f"{who}: {field_name} removed")
                else:
                    lines.append(f"{who}: {field_name} {shown}")
            elif parts and parts[0] == "scene":
                moved = len(parts) > 1 and parts[1] == "location" and op != "remove"
                lines.append(f"The scene moves to {shown}" if moved else "The scene changes")
            elif parts and parts[0] == "entities":
                lines.append("Someone or something changes")
            elif op != "test":
                lines.append("The world changes")
        return "; ".join(dict.fromkeys(lines)) or "The world changes"
