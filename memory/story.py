"""The story as one member may read it: the shared core of the recap (memory.recap) and
the journal (memory.journal).

What a reader is told, event by event (`Teller.tell`):
- only events whose visibility names the reader (`campaigns.selectors.event_visible`:
  GMs see every event, a player those for everyone and those naming them);
- nothing a retracted turn said or did (`campaigns.retractions.told_by_retracted_turn`:
  its narration, private narrations and changes; its rolls stay, they are facts);
- narrations; the DM's private narrations (a `whisper` with actor `dm`) to those they
  name; player actions; rolls with their result (formula, total, DC and success when
  there is one), private ones marked so; whispers, to their sender, their recipient and
  the GMs (a whisper to the DM is often what a private narration answers: without it
  that narration makes no sense); public GM directions (facts of the world); entities
  made, players joining and leaving, characters made; what public state changes say
  (the scene moves, an item found, hit points), as the summaries tell them.
- never: a secret GM direction (an instruction to the DM, not the story; left out for
  GMs too), a GM-only state patch, dice seeds, audio, patch requests and rejections,
  failed turns, budget events.

Summaries (`summary_created`) are made from public events only
(`memory.summaries.story_lines` skips every event whose visibility is not `all`, and
what retracted turns said), and the event itself is visible to everyone: a summary
holds nothing any member of the campaign may not read. `summaries_for_reader` still
shows a summary only when its own event is visible to the reader, and drops any summary
that covers a narration the GM retracted after that narration was summarized (a summary
cannot be edited; the events of its span are told instead).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from campaigns import srd
from campaigns.retractions import told_by_retracted_turn, turns_retracted
from campaigns.selectors import (
    Viewer,
    event_visible,
    events_of_type_after,
    name_shown,
    names_withheld,
)

from .selectors import StoryEvent as Event
from .selectors import story_events
from .summaries import _entity_line, _patch_lines

# The event types a reader may be told about (the SQL filter of every story read).
STORY_TYPES = (
    "player_action",
    "dm_narration",
    "roll_requested",
    "roll_result",
    "whisper",
    "gm_direction",
    "entity_created",
    "state_patch_applied",
    "player_joined",
    "player_left",
    "character_created",
)
# What counts as "something happened" for the recap's `events` (a roll once, not twice).
COUNTED_TYPES = tuple(t for t in STORY_TYPES if t not in ("roll_requested", "state_patch_applied"))

GM = "The GM"
DM = "The DM"


@dataclass(frozen=True)
class Told:
    """One thing that happened, as the reader is told it."""

    seq: int
    at: datetime
    # narration | action | roll | whisper | direction | entity | scene | table
    kind: str
    text: str
    who: str = ""  # who acts, speaks or rolls
    # When not the whole table's: "to you alone", "to Alice alone", "private",
    # "hidden from the players".
    aside: str = ""
    to: str = ""  # a whisper's recipient, in words
    roll: dict[str, Any] | None = None  # formula, total, detail, dc, success, reason

    def plain(self) -> str:
        """One line in plain words (the recap)."""
        if self.kind == "narration":
            return (
                f"({self.aside[:1].upper() + self.aside[1:]}) {self.text}"
                if self.aside
                else self.text
            )
        if self.kind == "action":
            return f"{self.who}: {_sentence(self.text)}"
        if self.kind == "whisper":
            return f"{self.who} whispered to {self.to}: \u201c{self.text}\u201d"
        if self.kind == "direction":
            return f"{GM}: {_sentence(self.text)}"
        if self.kind == "roll" and self.aside:
            return f"{self.text[:-1]} ({self.aside})."
        return self.text


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in '.!?"\u2026\u201d)' else text + "."


def roll_words(who: str, roll: dict[str, Any]) -> str:
    """ "Alice rolled 22 for climbing the wall (1d20+5, DC 15: a success).\""""
    what = f" for {roll['reason']}" if roll.get("reason") else ""
    inside = str(roll.get("formula") or "")
    if roll.get("dc") is not None:
        outcome = "a success" if roll.get("success") else "a failure"
        inside += f", DC {roll['dc']}: {outcome}"
    return f"{who} rolled {roll.get('total')}{what}" + (f" ({inside})." if inside else ".")


def character_kind(sheet: dict[str, Any]) -> str:
    """ "Human Fighter": a 5e sheet's SRD ancestry and class by their names, a rules-light
    sheet's own words; "" for the placeholder made at join."""
    words = []
    for key, table in (("ancestry", srd.ANCESTRIES), ("class", srd.CLASSES)):
        value = sheet.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        known = table.get(value) if sheet.get("sheet") == "5e" else None
        words.append(str(known["name"]) if isinstance(known, dict) else value.strip())
    return " ".join(words)


class Teller:
    """Turns events into `Told` items for one reader. Feed it events in seq order (it
    remembers roll reasons and who is who as it goes)."""

    def __init__(
        self,
        *,
        viewer: Viewer,
        state: dict[str, Any],
        retracted: set[str],
        names: dict[str, str] | None = None,
        withheld: dict[str, str] | None = None,
    ) -> None:
        self.viewer = viewer
        self.withheld: dict[str, str] = dict(withheld or {})  # deleted accounts' names
        self.state = state
        self.retracted = retracted
        self.reader = str(viewer.user_id) if viewer.user_id else ""
        self.names: dict[str, str] = dict(names or {})
        for user_id, member in (state.get("members") or {}).items():
            self.names[str(user_id)] = str(member.get("display_name") or "Someone")
        self.characters: dict[str, str] = {
            str(cid): str(c.get("name") or "")
            for cid, c in (state.get("characters") or {}).items()
            if isinstance(c, dict)
        }
        self.reasons: dict[str, str] = {}

    # --- who is who --------------------------------------------------------------------

    def name_of(self, user_id: Any) -> str:
        if not user_id:
            return "Someone"
        return self.names.get(str(user_id), "A former player")

    def _actor(self, event: Event) -> str:
        if event.actor_kind == "dm":
            return DM
        character = self.characters.get(str(event.payload.get("character_id") or ""))
        if event.actor_user_id:
            name = self.name_of(event.actor_user_id)
            return f"{character} ({name})" if character and character != name else name
        if character:
            return character
        return GM if event.actor_kind == "gm" else "Someone"

    def _only_for(self, event: Event) -> str:
        """Words for whom alone an event is, or "" when it is the whole table's."""
        visibility = event.visibility or {}
        kind = visibility.get("kind", "all")
        if kind == "all":
            return ""
        if kind == "gm":
            return "GMs only"
        users = [str(u) for u in visibility.get("user_ids") or []]
        if users == [self.reader]:
            return "to you alone"
        others = [self.name_of(u) for u in users if u != self.reader]
        return f"to {' and '.join(others)} alone" if others else "private"

    # --- telling -----------------------------------------------------------------------

    def tell_all(self, events: Iterable[Event]) -> list[Told]:
        return [told for event in events for told in self.tell(event)]

    def tell(self, event: Event) -> list[Told]:
        if not event_visible(event.visibility or {}, self.viewer):
            return []
        payload = event.payload if isinstance(event.payload, dict) else {}
        if self.retracted and told_by_retracted_turn(event.type, payload, self.retracted):
            return []
        teller = getattr(self, "_" + event.type, None)
        if teller is None:
            return []
        return teller(event, payload)

    def _told(self, event: Event, kind: str, text: str, **extra: Any) -> list[Told]:
        text = str(text or "").strip()
        if not text:
            return []
        return [Told(seq=event.seq, at=event.created_at, kind=kind, text=text, **extra)]

    def _player_joined(self, event: Event, p: dict[str, Any]) -> list[Told]:
        name = name_shown(p, self.withheld)
        self.names[str(p.get("user_id"))] = name
        return self._told(event, "table", f"{name} joins the table.")

    def _player_left(self, event: Event, p: dict[str, Any]) -> list[Told]:
        name = name_shown(p, self.withheld)
        return self._told(event, "table", f"{name} leaves the table.")

    def _character_created(self, event: Event, p: dict[str, Any]) -> list[Told]:
        sheet = p.get("character") if isinstance(p.get("character"), dict) else {}
        name = str(sheet.get("name") or "")
        if not name:
            return []
        self.characters[str(sheet.get("id"))] = name
        what = character_kind(sheet)
        level = sheet.get("level")
        if what and level:
            what = f", a level {level} {what}"
        elif what:
            what = f", a {what}"
        owner = self.name_of(sheet.get("owner_user_id")) if sheet.get("owner_user_id") else ""
        if owner and owner != name:
            return self._told(event, "table", f"{owner} plays {name}{what}.")
        return self._told(event, "table", f"Enter {name}{what}.")

    def _player_action(self, event: Event, p: dict[str, Any]) -> list[Told]:
        return self._told(
            event, "action", " ".join(str(p.get("text", "")).split()), who=self._actor(event)
        )

    def _dm_narration(self, event: Event, p: dict[str, Any]) -> list[Told]:
        return self._told(event, "narration", p.get("text", ""))

    def _roll_requested(self, event: Event, p: dict[str, Any]) -> list[Told]:
        self.reasons[str(p.get("roll_id"))] = str(p.get("reason") or "")
        return []

    def _roll_result(self, event: Event, p: dict[str, Any]) -> list[Told]:
        roll = {
            "formula": str(p.get("formula") or ""),
            "total": p.get("total"),
            "detail": str(p.get("detail") or ""),
            "dc": p.get("dc"),
            "success": p.get("success"),
            "reason": " ".join(self.reasons.pop(str(p.get("roll_id")), "").split())[:200],
        }
        who = self._actor(event)
        aside = "private" if (event.visibility or {}).get("kind", "all") != "all" else ""
        return self._told(event, "roll", roll_words(who, roll), who=who, aside=aside, roll=roll)

    def _whisper(self, event: Event, p: dict[str, Any]) -> list[Told]:
        if event.actor_kind == "dm":  # the DM's private narration
            return self._told(event, "narration", p.get("text", ""), aside=self._only_for(event))
        to = str(p.get("to") or "")
        if to == "gm":
            recipient = "the GM"
        elif to == "dm":
            recipient = "the DM"
        else:
            target = str(p.get("to_user_id") or to)
            recipient = "you" if target == self.reader else self.name_of(target)
        sender = self.name_of(p.get("from_user_id") or event.actor_user_id)
        return self._told(
            event, "whisper", " ".join(str(p.get("text", "")).split()), who=sender, to=recipient
        )

    def _gm_direction(self, event: Event, p: dict[str, Any]) -> list[Told]:
        # A secret direction is an instruction to the DM, not the story: left out for all.
        if (event.visibility or {}).get("kind", "all") != "all":
            return []
        return self._told(event, "direction", " ".join(str(p.get("text", "")).split()), who=GM)

    def _entity_created(self, event: Event, p: dict[str, Any]) -> list[Told]:
        entity = p.get("entity") if isinstance(p.get("entity"), dict) else {}
        aside = "hidden from the players" if entity.get("hidden") is True else ""
        return self._told(event, "entity", _entity_line(entity), aside=aside)

    def _state_patch_applied(self, event: Event, p: dict[str, Any]) -> list[Told]:
        if (event.visibility or {}).get("kind", "all") != "all":
            return []
        told: list[Told] = []
        for kind, text in _patch_lines(self.state, p.get("patches") or []):
            told += self._told(event, kind, text)
        for entity in (p.get("revealed") or [])[:8]:
            if isinstance(entity, dict):
                told += self._told(
                    event, "entity", _entity_line(entity).replace("New ", "Revealed: ", 1)
                )
        return told


def names_known(
    *, campaign_id: uuid.UUID | str, withheld: dict[str, str] | None = None
) -> dict[str, str]:
    """Every member's name as they joined (a former player's words keep a name), but for
    the names of deleted accounts, which are withheld."""
    names: dict[str, str] = {}
    for page in story_events(
        campaign_id=campaign_id, viewer=Viewer(user_id=None, is_gm=True), types=["player_joined"]
    ):
        for event in page:
            names[str(event.payload.get("user_id"))] = name_shown(event.payload, withheld or {})
    return names


def teller_for(*, campaign_id: uuid.UUID | str, viewer: Viewer, state: dict[str, Any]) -> Teller:
    withheld = names_withheld(campaign_id=campaign_id)
    return Teller(
        viewer=viewer,
        state=state,
        retracted=turns_retracted(campaign_id=campaign_id),
        names=names_known(campaign_id=campaign_id, withheld=withheld),
        withheld=withheld,
    )


# --- Summaries a reader may be shown ---------------------------------------------------------


@dataclass(frozen=True)
class ReaderSummary:
    seq: int
    layer: int
    from_seq: int
    to_seq: int
    text: str
    # False when it tells a narration the GM retracted after it was summarized: its
    # span is still a chapter of the journal, but its text is not shown.
    usable: bool = True


def summaries_for_reader(*, campaign_id: uuid.UUID | str, viewer: Viewer) -> list[ReaderSummary]:
    """The campaign's summaries whose own event this reader may see, oldest first, each
    marked `usable` unless it covers a narration the GM retracted after that narration
    was summarized (module docstring)."""
    found: list[ReaderSummary] = []
    for page in story_events(campaign_id=campaign_id, viewer=viewer, types=["summary_created"]):
        for event in page:
            p = event.payload
            try:
                found.append(
                    ReaderSummary(
                        seq=event.seq,
                        layer=int(p.get("layer") or 0),
                        from_seq=int(p["from_seq"]),
                        to_seq=int(p["to_seq"]),
                        text=" ".join(str(p.get("text", "")).split()),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
    if not found:
        return found
    layer0 = [s for s in found if s.layer == 0]
    told_then_retracted: set[int] = set()
    for retraction in events_of_type_after(
        campaign_id=campaign_id, event_type="dm_narration_retracted"
    ):
        narration_seq = retraction.payload.get("narration_seq")
        if not isinstance(narration_seq, int):
            continue
        if any(s.from_seq <= narration_seq <= s.to_seq and s.seq < retraction.seq for s in layer0):
            told_then_retracted.add(narration_seq)
    return [
        replace(
            s,
            usable=bool(s.text)
            and not any(s.from_seq <= n <= s.to_seq for n in told_then_retracted),
        )
        for s in found
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s")


def clip_words(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut after a sentence when one ends late enough,
    else after a word, with an ellipsis."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    ends = [m.start() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= limit // 2:
        return head[: ends[-1]].rstrip()
    cut = head.rsplit(" ", 1)[0] if " " in head else head
    return cut.rstrip(" ,;:") + "\u2026"
