"""NPCs that remember: after turns (and as play goes without them: the GM may run the
table), the log is read into a small graph of what each NPC (an `npc` or `creature`
entity of the campaign) has seen and been told, whom it met, where it was, and how it
took it, every edge naming the event it came from.

The extraction is by rules, deterministic and free (no model call): an NPC takes part
in a turn when a player's action or the DM's narration names it (by name, or by what it
is: "the innkeeper"). Then it
- `met` the acting characters when it appears (and other NPCs named in the same turn),
- was `told` what a player said or did to it (the action names it),
- `saw` what the others did while it was there, items changing hands included,
- was `at` the scene's location.
Each edge carries a sentiment from -2 to +2 (threats and blows count against, thanks,
gifts and help for), summed per character into how the NPC feels about them.

Events every player may see make the edges above. A few private events are read too,
and their edges carry `known_by`, the user ids of who at the table knows them (an
empty list: everyone), so that the DM's prompt can mark them secret and a player's
view of the memories leaves out what they were never told:
- a whisper to the DM that names an NPC: that NPC was `told` it by the whisperer;
- the DM's private narration (`narrate_private`) or a private roll whose reason names
  an NPC: the NPC was `noticed` by that one player.
GM-only events, and whispers between people, are never read.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from campaigns.models import Event
from campaigns.selectors import EVENTS_PAGE_MAX, events_after, snapshot_get

from .models import MemoryCursor, NpcMemory
from .summaries import pointer_parts

NPC_KINDS = frozenset({"npc", "creature"})
TURN_END_TYPES = frozenset({"dm_narration", "turn_failed"})
# One window of the log per transaction (events_after reads at most EVENTS_PAGE_MAX).
EVENTS_PER_RUN = EVENTS_PAGE_MAX
WINDOWS_PER_RUN = 5
# Play without DM turns is read in scenes of about this many events (see _readable).
BEAT_EVENTS = 40
# Longer than a DM turn takes (DM_MAX_STEPS calls of DM_TIMEOUT_SECONDS, a player's roll).
TURN_WAIT = timedelta(minutes=5)
DETAIL_MAX_CHARS = 240
ARTICLES = ("the ", "a ", "an ", "some ")

_HOSTILE = re.compile(
    r"\b(attack\w*|hit|hits|strike\w*|stab\w*|slash\w*|punch\w*|kick\w*|shove\w*|slap\w*|"
    r"threat\w*|intimidat\w*|insult\w*|mock\w*|steal\w*|stole|rob\w*|kill\w*|spit\w*|"
    r"lie to|lies to|lied to|curse\w*|shoot\w*|shot)\b",
    re.I,
)
_WARM = re.compile(
    r"\b(thank\w*|help\w*|heal\w*|give\w*|gave|gift\w*|pay|pays|paid|tip\w*|compliment\w*|"
    r"praise\w*|save\w*|saved|protect\w*|bow\w*|smile\w*|hug\w*|buy\w* \w+ a drink|"
    r"apologi\w*|comfort\w*|share\w*|toast\w*)\b",
    re.I,
)


def sentiment_of(text: str) -> int:
    """-2..+2: how an NPC addressed with `text` would take it."""
    score = len(_WARM.findall(text)) - 2 * len(_HOSTILE.findall(text))
    return max(-2, min(2, score))


# --- Recognizing NPCs in text ---------------------------------------------------------------


@dataclass
class NpcRef:
    id: str
    name: str
    description: str
    patterns: list[re.Pattern[str]] = field(default_factory=list)


@functools.lru_cache(maxsize=2048)
def _phrase(text: str) -> re.Pattern[str]:
    return re.compile(
        r"(?<![\w-])" + r"\s+".join(map(re.escape, text.split())) + r"(?![\w-])", re.I
    )


def _bare(description: str) -> str:
    description = " ".join(description.lower().split())
    for article in ARTICLES:
        if description.startswith(article):
            return description[len(article) :]
    return description


def npc_refs(entities: dict[str, Any]) -> dict[str, NpcRef]:
    """The campaign's NPCs with the patterns that name them in text: the name, what
    they are ("innkeeper", "hooded stranger"), and the head word of that when no other
    NPC shares it ("stranger")."""
    refs: dict[str, NpcRef] = {}
    heads: dict[str, list[str]] = {}
    for entity_id, entity in entities.items():
        if entity.get("kind") not in NPC_KINDS:
            continue
        name = str(entity.get("name") or "").strip()
        data = entity.get("data") or {}
        description = str(data.get("description") or data.get("role") or "").strip()
        ref = NpcRef(id=str(entity_id), name=name, description=description)
        if name:
            ref.patterns.append(_phrase(name))
        bare = _bare(description)
        if bare and len(bare) >= 3 and len(bare.split()) <= 5:
            ref.patterns.append(_phrase(bare))
            words = bare.split()
            if len(words) > 1 and len(words[-1]) >= 4:
                heads.setdefault(words[-1], []).append(ref.id)
        refs[ref.id] = ref
    for head, owners in heads.items():
        if len(owners) == 1:
            refs[owners[0]].patterns.append(_phrase(head))
    return refs


def npcs_named(text: str, refs: Iterable[NpcRef]) -> list[NpcRef]:
    """The NPCs `text` names, in the order they are first named."""
    found: list[tuple[int, NpcRef]] = []
    for ref in refs:
        positions = [m.start() for p in ref.patterns if (m := p.search(text))]
        if positions:
            found.append((min(positions), ref))
    found.sort(key=lambda pair: pair[0])
    return [ref for _, ref in found]


# --- Extraction ---------------------------------------------------------------------------------


def _clip(text: Any, limit: int = DETAIL_MAX_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _key(*parts: Any) -> str:
    raw = ":".join(str(p) for p in parts)
    if len(raw) <= 255:
        return raw
    return raw[:200] + ":" + hashlib.sha256(raw.encode()).hexdigest()[:40]


class _Extractor:
    def __init__(
        self,
        campaign_id: uuid.UUID | str,
        state: dict[str, Any],
        location: str,
        created_later: set[str],
    ) -> None:
        self.campaign_id = campaign_id
        self.state = state
        self.location = location
        # NPCs are recognized from the event that created them on, not before.
        self.entities = {
            k: v for k, v in state.get("entities", {}).items() if str(k) not in created_later
        }
        self.refs = npc_refs(self.entities)
        self.edges: dict[str, NpcMemory] = {}

    def actor(self, event: Event) -> tuple[str, str]:
        """(character id, name) of an action's actor (the member's name if no character)."""
        character_id = str(event.payload.get("character_id") or "")
        character = self.state.get("characters", {}).get(character_id)
        if character:
            return character_id, str(character.get("name"))
        user_id = str(event.actor_user_id) if event.actor_user_id else ""
        member = self.state.get("members", {}).get(user_id, {})
        return user_id, str(member.get("display_name") or "someone")

    def edge(
        self,
        npc: NpcRef,
        relation: str,
        target_kind: str,
        target_id: str,
        target_name: str,
        seq: int,
        *,
        detail: str = "",
        sentiment: int = 0,
        once: bool = False,
        known_by: Sequence[str] = (),
    ) -> None:
        # `once`: the first such edge is what counts (they met; it was there).
        key = (
            _key(npc.id, relation, target_kind, target_id or target_name.lower())
            if once
            else _key(npc.id, relation, target_kind, target_id or target_name.lower(), seq)
        )
        if key in self.edges:
            return
        self.edges[key] = NpcMemory(
            campaign_id=self.campaign_id,
            npc_id=npc.id,
            npc_name=npc.name[:80],
            relation=relation,
            target_kind=target_kind,
            target_id=target_id[:64],
            target_name=target_name[:200],
            detail=_clip(detail, 400),
            sentiment=sentiment,
            source_seq=seq,
            known_by=sorted(set(known_by)),
            key=key,
        )

    def owner(self, user_id: str) -> tuple[str, str]:
        """(character id, name) of a member's character (their name if they have none)."""
        for character_id, character in self.state.get("characters", {}).items():
            if str(character.get("owner_user_id")) == user_id:
                return str(character_id), str(character.get("name"))
        member = self.state.get("members", {}).get(user_id, {})
        return user_id, str(member.get("display_name") or "someone")

    def secrets(self, events: Sequence[Event]) -> None:
        """Edges from a turn's private events, each known only to those who saw it."""
        reasons = {
            e.payload.get("roll_id"): str(e.payload.get("reason") or "")
            for e in events
            if e.type == "roll_requested"
        }
        for event in events:
            known_by = [str(u) for u in (event.visibility or {}).get("user_ids") or []]
            if not known_by:
                continue
            refs = list(self.refs.values())
            if event.type == "whisper" and event.actor_kind != "dm":
                if event.payload.get("to") != "dm" or not event.actor_user_id:
                    continue  # between people: never the DM's, nor its NPCs'
                text = str(event.payload.get("text", ""))
                character_id, name = self.owner(str(event.actor_user_id))
                for npc in npcs_named(text, refs):
                    self.edge(
                        npc,
                        "told",
                        "character",
                        character_id,
                        name,
                        event.seq,
                        detail=text,
                        sentiment=sentiment_of(text),
                        known_by=known_by,
                    )
            elif event.type == "whisper" or event.type == "roll_result":
                if event.type == "whisper":
                    text = str(event.payload.get("text", ""))
                    named = text
                else:
                    reason = reasons.get(event.payload.get("roll_id"), "")
                    named = reason
                    p = event.payload
                    text = f"{reason}: {p.get('formula')} = {p.get('total')}"
                for npc in npcs_named(named, refs):
                    for user_id in known_by:
                        character_id, name = self.owner(user_id)
                        self.edge(
                            npc,
                            "noticed",
                            "character",
                            character_id,
                            name,
                            event.seq,
                            detail=text,
                            known_by=known_by,
                        )

    def turn(self, events: Sequence[Event]) -> None:
        private = [e for e in events if (e.visibility or {}).get("kind", "all") != "all"]
        events = [e for e in events if (e.visibility or {}).get("kind", "all") == "all"]
        if not events:
            self.secrets(private)
            return
        actions = [e for e in events if e.type == "player_action"]
        narration = next((e for e in events if e.type == "dm_narration"), None)
        narration_text = str(narration.payload.get("text", "")) if narration else ""
        end_seq = events[-1].seq

        for event in events:
            if event.type == "campaign_created":
                scene = event.payload.get("scene") or {}
                self.location = _clip(scene.get("location") or self.location, 200)
            elif event.type == "entity_created":
                self.entity_created(event, actions)
            elif event.type == "state_patch_applied":
                self.patched(event, events)

        refs = list(self.refs.values())
        present: dict[str, NpcRef] = {}
        addressed: dict[str, list[Event]] = {}
        for action in actions:
            for npc in npcs_named(str(action.payload.get("text", "")), refs):
                present.setdefault(npc.id, npc)
                addressed.setdefault(npc.id, []).append(action)
        for npc in npcs_named(narration_text, refs):
            present.setdefault(npc.id, npc)

        for npc in present.values():
            if self.location:
                self.edge(npc, "at", "place", "", self.location, end_seq, once=True)
            for action in actions:
                character_id, name = self.actor(action)
                text = str(action.payload.get("text", ""))
                if action in addressed.get(npc.id, []):
                    self.edge(npc, "met", "character", character_id, name, action.seq, once=True)
                    self.edge(
                        npc,
                        "told",
                        "character",
                        character_id,
                        name,
                        action.seq,
                        detail=text,
                        sentiment=sentiment_of(text),
                    )
                else:
                    self.edge(npc, "saw", "character", character_id, name, action.seq, detail=text)
            for other in present.values():
                if other.id != npc.id:
                    self.edge(npc, "met", "npc", other.id, other.name, end_seq, once=True)
        self.secrets(private)

    def entity_created(self, event: Event, actions: Sequence[Event]) -> None:
        entity = event.payload.get("entity") or {}
        if entity.get("kind") not in NPC_KINDS:
            return
        # Known from now on (and recognized by name in this very turn).
        self.entities[str(entity.get("id"))] = entity
        self.refs = npc_refs(self.entities)
        npc = self.refs.get(str(entity.get("id")))
        if npc is None:
            return
        for action in actions:
            character_id, name = self.actor(action)
            self.edge(
                npc,
                "met",
                "character",
                character_id,
                name,
                event.seq,
                detail=str(action.payload.get("text", "")),
                once=True,  # how they took it is on the `told` edge, when it was said to them
            )

    def patched(self, event: Event, turn: Sequence[Event]) -> None:
        for op in (event.payload.get("patches") or [])[:16]:
            parts = pointer_parts(op.get("path", ""))
            if not parts:
                continue
            if parts == ["scene", "location"] and op.get("op") in ("add", "replace"):
                self.location = _clip(op.get("value"), 200)
            if (
                len(parts) >= 3
                and parts[0] == "characters"
                and parts[2] == "inventory"
                and op.get("op") == "add"
            ):
                character = self.state.get("characters", {}).get(parts[1], {})
                item = _clip(op.get("value"), 120)
                who = str(character.get("name") or "someone")
                texts = " ".join(
                    str(e.payload.get("text", ""))
                    for e in turn
                    if e.type in ("player_action", "dm_narration")
                )
                for npc in npcs_named(texts, self.refs.values()):
                    self.edge(
                        npc,
                        "saw",
                        "item",
                        "",
                        item,
                        event.seq,
                        detail=f"{who} took the {item}",
                    )


def _readable(events: Sequence[Event], *, now: datetime) -> tuple[list[list[Event]], int]:
    """The groups of `events` to read now, and how many events they span.

    A group is a turn, up to its `dm_narration` or `turn_failed`. Play without DM turns
    (the GM runs the table, the DM stopped for budget) has no such end: there a group
    closes at the first action past BEAT_EVENTS events (at any event past four times
    that), so that an NPC named there `saw` the actions of its own scene, not those of
    the whole stretch, and a full window is always read in part. The last, unfinished
    group is held back while the DM may still be answering it (a turn's own events come
    before its narration, and an NPC it creates `met` the turn's actors), that is while
    it is younger than TURN_WAIT; older, no answer is coming and it is read."""
    groups: list[list[Event]] = []
    group: list[Event] = []
    size = 0
    read = 0
    for i, event in enumerate(events):
        if (size >= BEAT_EVENTS and event.type == "player_action") or size >= 4 * BEAT_EVENTS:
            groups.append(group)
            group, size, read = [], 0, i
        size += 1
        # Public events, and those shown to some players (edges from them carry
        # known_by); GM-only events are never read.
        if (event.visibility or {}).get("kind", "all") in ("all", "users"):
            group.append(event)
        if event.type in TURN_END_TYPES:
            groups.append(group)
            group, size, read = [], 0, i + 1
    if read < len(events) and events[read].created_at <= now - TURN_WAIT:
        groups.append(group)
        read = len(events)
    return [g for g in groups if g], read


def npc_memories_extract(*, campaign_id: uuid.UUID | str) -> int:
    """Read the log since the last extraction into NPC memories; return how many edges
    were added. Idempotent (edges have keys) and serialized per campaign. At most
    WINDOWS_PER_RUN windows of EVENTS_PER_RUN events; with more to read (an imported
    log, say) the task is queued again."""
    added = 0
    for _ in range(WINDOWS_PER_RUN):
        window_added, read, full = _extract_window(campaign_id)
        added += window_added
        if not (read and full):
            return added
    from rpgai.tasks import enqueue

    from .tasks import extract_npc_memories

    enqueue(extract_npc_memories, campaign_id=str(campaign_id))
    return added


def _extract_window(campaign_id: uuid.UUID | str) -> tuple[int, int, bool]:
    """One window: (edges added, events read, whether the window was full)."""
    snapshot = snapshot_get(campaign_id=campaign_id)
    if snapshot is None:
        return 0, 0, False
    with transaction.atomic():
        cursor, _ = MemoryCursor.objects.get_or_create(campaign_id=campaign_id)
        cursor = MemoryCursor.objects.select_for_update().get(pk=cursor.pk)
        events = events_after(
            campaign_id=campaign_id, after_seq=cursor.npc_through_seq, limit=EVENTS_PER_RUN
        )
        groups, read = _readable(events, now=timezone.now())
        if not read:
            return 0, 0, False
        created_later = {
            str((e.payload.get("entity") or {}).get("id"))
            for e in events[:read]
            if e.type == "entity_created"
        }
        # From seq 0 the log's campaign_created sets the scene.
        location = cursor.location if cursor.npc_through_seq else ""
        extractor = _Extractor(campaign_id, snapshot.state, location, created_later)
        for group in groups:
            extractor.turn(group)
        before = NpcMemory.objects.filter(campaign_id=campaign_id).count()
        NpcMemory.objects.bulk_create(extractor.edges.values(), ignore_conflicts=True)
        added = NpcMemory.objects.filter(campaign_id=campaign_id).count() - before
        cursor.npc_through_seq = events[read - 1].seq
        cursor.location = extractor.location[:200]
        cursor.save(update_fields=["npc_through_seq", "location", "updated_at"])
    return added, read, len(events) >= EVENTS_PER_RUN
