"""Reads of campaign memory: what a turn's prompt gets (summaries, passages, NPC
memories, each within its token budget), documents, NPC memories. Everything is read
for one campaign only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Min, Q, QuerySet, Sum

from campaigns.models import Event
from campaigns.selectors import Viewer, event_visible, hidden_entity_ids, snapshot_get
from llm.tokens import count_tokens

from . import summaries
from .conf import setting
from .models import Document, NpcMemory, Passage
from .npc_memory import NPC_KINDS, npc_refs, npcs_named
from .retrieval import passages_search

SUMMARIES_CACHE_SECONDS = 3600


@dataclass(frozen=True)
class TurnMemory:
    """The campaign's memory as one turn's prompt gets it (JSON-ready items)."""

    # Events up to this seq are told by `summaries`: the prompt shows only later ones.
    summarized_through_seq: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)
    passages: list[dict[str, Any]] = field(default_factory=list)
    npcs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.summaries or self.passages or self.npcs)


def turn_memory_get(
    *,
    campaign_id: uuid.UUID | str,
    state: dict[str, Any],
    action_texts: Sequence[str],
    recent_texts: Sequence[str] = (),
) -> TurnMemory:
    """Summaries of the past, lore for this turn's actions in their scene, and the
    memories of the NPCs the actions (or the last narration, `recent_texts`) name."""
    through, summary_items = summaries_for_prompt(
        campaign_id=campaign_id, budget=setting("MEMORY_PROMPT_SUMMARY_TOKENS")
    )
    actions = " ".join(action_texts)
    return TurnMemory(
        summarized_through_seq=through,
        summaries=summary_items,
        passages=passages_for_prompt(
            campaign_id=campaign_id,
            query=actions,
            context=scene_text(state),
            budget=setting("MEMORY_PROMPT_PASSAGE_TOKENS"),
        )
        if actions.strip()
        else [],
        npcs=npc_memories_for_prompt(
            campaign_id=campaign_id,
            state=state,
            texts=[*action_texts, *recent_texts],
            budget=setting("MEMORY_PROMPT_NPC_TOKENS"),
        ),
    )


# The scene's words that join a turn's lore query: the place, and the start of its
# description (the model reads the query's first 256 tokens, actions first).
SCENE_QUERY_MAX_CHARS = 300


def scene_text(state: dict[str, Any]) -> str:
    """The scene a turn's actions happen in, as the lore search's context: "The ferry
    landing. Fog on the river." ("I ask about the toll" there is about the ferry)."""
    scene = state.get("scene") or {}
    parts = [str(scene.get(key) or "").strip() for key in ("location", "description")]
    return ". ".join(part.rstrip(".") for part in parts if part)[:SCENE_QUERY_MAX_CHARS]


# --- Summaries ------------------------------------------------------------------------------------


def summaries_for_prompt(
    *, campaign_id: uuid.UUID | str, budget: int
) -> tuple[int, list[dict[str, Any]]]:
    """(summarized through seq, the summaries that tile the past, oldest first) within
    `budget` tokens: the oldest, widest one (the whole early story) first, then the
    newest ones back in time while they fit."""
    # Summaries change only when one is appended: the result is cached on the latest's seq.
    key = f"memory:prompt-summaries:{campaign_id}:{budget}:"
    key += str(summaries.summaries_last_seq(campaign_id=campaign_id))
    cached = cache.get(key)
    if cached is not None:
        return cached
    result = _summaries_for_prompt(campaign_id=campaign_id, budget=budget)
    cache.set(key, result, SUMMARIES_CACHE_SECONDS)
    return result


def _summaries_for_prompt(
    *, campaign_id: uuid.UUID | str, budget: int
) -> tuple[int, list[dict[str, Any]]]:
    index = summaries.summaries_index(campaign_id=campaign_id)
    through = summaries.summarized_through(index)
    tiling = summaries.summaries_tiling(index)
    if not tiling:
        return through, []
    texts = summaries.summaries_text(campaign_id=campaign_id, seqs=[s.seq for s in tiling])
    items = [
        {"from_seq": s.from_seq, "to_seq": s.to_seq, "layer": s.layer, "text": texts.get(s.seq, "")}
        for s in tiling
    ]
    costs = [count_tokens(item["text"]) + 24 for item in items]
    chosen: set[int] = set()
    room = budget
    order = [0, *range(len(items) - 1, 0, -1)]
    for i in order:
        if costs[i] <= room:
            chosen.add(i)
            room -= costs[i]
        elif i != 0:
            break  # a gap in the middle would tell the story out of order
    return through, [items[i] for i in sorted(chosen)]


# --- Passages -------------------------------------------------------------------------------------


def passages_for_prompt(
    *, campaign_id: uuid.UUID | str, query: str, budget: int, context: str = ""
) -> list[dict[str, Any]]:
    """The best passages for `query` (in `context`: the scene) within `budget` tokens,
    each naming its source."""
    hits = passages_search(
        campaign_id=campaign_id,
        query=query,
        context=context,
        limit=setting("MEMORY_PROMPT_PASSAGES_MAX"),
        include_gm_only=True,  # the DM may know what the players may not read
    )
    items = []
    room = budget
    for hit in hits:
        cost = hit.tokens + count_tokens(hit.source) + 16
        if cost > room:
            continue
        room -= cost
        item: dict[str, Any] = {"source": hit.source, "score": hit.score, "text": hit.text}
        if hit.gm_only:
            # As hidden entities are marked: the DM uses it, the room never hears it.
            item["secret"] = (
                "GM-only lore: the players have not read it; use it, but never quote it, "
                "name its source or reveal it in the narration"
            )
        items.append(item)
    return items


# --- NPC memories ---------------------------------------------------------------------------------


def npcs_on_stage(*, state: dict[str, Any], texts: Sequence[str]) -> list[tuple[str, dict]]:
    """(entity id, entity) of the NPCs the texts name, in order of first mention, then
    those whose data places them at the scene's location."""
    entities = state.get("entities", {})
    refs = npc_refs(entities)
    ordered: list[str] = []
    for text in texts:
        for ref in npcs_named(text, refs.values()):
            if ref.id not in ordered:
                ordered.append(ref.id)
    location = str(state.get("scene", {}).get("location", "")).strip().lower()
    if location:
        for entity_id, entity in entities.items():
            where = str((entity.get("data") or {}).get("location", "")).strip().lower()
            if entity.get("kind") in NPC_KINDS and where == location and entity_id not in ordered:
                ordered.append(entity_id)
    return [(entity_id, entities[entity_id]) for entity_id in ordered]


def _known_by_names(known_by: Sequence[str], names: dict[str, str]) -> str:
    found = list(dict.fromkeys(names.get(str(u)) or "a former player" for u in known_by))
    return found[0] if len(found) == 1 else ", ".join(found[:-1]) + " and " + found[-1]


def _memory_line(edge: NpcMemory, names: dict[str, str] | None = None) -> str:
    """One edge as the DM reads it; a secret edge says who alone knows it."""
    if edge.relation == NpcMemory.Relation.TOLD:
        line = f"{edge.target_name} said or did to them: “{edge.detail}”"
    elif edge.relation == NpcMemory.Relation.SAW:
        line = (
            f"saw {edge.target_name}: “{edge.detail}”"
            if edge.target_kind == "character"
            else (f"saw {edge.detail or edge.target_name}")
        )
    elif edge.relation == NpcMemory.Relation.MET:
        how = f" (“{edge.detail}”)" if edge.detail else ""
        line = f"met {edge.target_name}{how}"
    elif edge.relation == NpcMemory.Relation.NOTICED:
        line = f"{edge.target_name} noticed: “{edge.detail}”"
    else:
        line = f"was at {edge.target_name}"
    if edge.known_by:
        who = _known_by_names(edge.known_by, names or {})
        verb = "knows" if len(set(edge.known_by)) == 1 else "know"
        line += f" (secret: only {who} {verb})"
    return line


def _feeling(score: int) -> str:
    if score >= 3:
        return "fond"
    if score >= 1:
        return "friendly"
    if score <= -3:
        return "hostile"
    if score <= -1:
        return "wary"
    return "neutral"


def npc_memory_view(
    *,
    campaign_id: uuid.UUID | str,
    npc_id: str,
    entity: dict[str, Any],
    recent: int,
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One NPC as the DM should remember it: who it is, how it met the party, how it
    feels about each character, where it has been and its latest memories (with seqs;
    a secret one names who alone knows it, from `names`: user id to display name).
    A few bounded queries, however long the NPC's memory."""
    edges = NpcMemory.objects.filter(campaign_id=campaign_id, npc_id=npc_id)
    first_met = (
        edges.filter(relation=NpcMemory.Relation.MET, target_kind=NpcMemory.TargetKind.CHARACTER)
        .order_by("source_seq", "id")
        .first()
    )
    feelings = (
        edges.filter(target_kind=NpcMemory.TargetKind.CHARACTER)
        .exclude(relation__in=[NpcMemory.Relation.SAW, NpcMemory.Relation.NOTICED])
        .values("target_name")
        .annotate(score=Sum("sentiment"), first=Min("source_seq"))
        .order_by("first")
    )
    places = list(
        edges.filter(relation=NpcMemory.Relation.AT)
        .order_by("-source_seq")
        .values_list("target_name", flat=True)[:3]
    )
    latest = list(
        edges.filter(
            relation__in=[
                NpcMemory.Relation.TOLD,
                NpcMemory.Relation.SAW,
                NpcMemory.Relation.MET,
                NpcMemory.Relation.NOTICED,
            ]
        )
        .exclude(pk=first_met.pk if first_met else None)
        .order_by("-source_seq", "-id")[:recent]
    )
    latest.reverse()
    data = entity.get("data") or {}
    view: dict[str, Any] = {"npc": entity.get("name"), "kind": entity.get("kind"), "id": npc_id}
    if data.get("description"):
        view["is"] = str(data["description"])[:200]
    if first_met is not None:
        view["first_met"] = f"seq {first_met.source_seq}: {_memory_line(first_met, names)}"
    feels = {
        f["target_name"]: f"{_feeling(f['score'] or 0)} ({f['score'] or 0:+d})"
        for f in feelings[:8]
    }
    if feels:
        view["feels"] = feels
    if places:
        view["places"] = list(reversed(places))
    view["memories"] = [f"seq {e.source_seq}: {_memory_line(e, names)}" for e in latest]
    return view


def _fit(view: dict[str, Any], room: int) -> tuple[dict[str, Any], int] | None:
    """The view, its oldest memories dropped until it costs at most `room` tokens."""
    view = dict(view)
    memories = list(view.get("memories", []))
    while True:
        view["memories"] = memories
        cost = count_tokens(json.dumps(view, ensure_ascii=False)) + 8
        if cost <= room:
            return view, cost
        if not memories:
            return None
        memories = memories[1:]


def npc_memories_for_prompt(
    *, campaign_id: uuid.UUID | str, state: dict[str, Any], texts: Sequence[str], budget: int
) -> list[dict[str, Any]]:
    items = []
    room = budget
    names = {
        str(user_id): str(member.get("display_name") or "")
        for user_id, member in state.get("members", {}).items()
    }
    for npc_id, entity in npcs_on_stage(state=state, texts=texts)[
        : setting("MEMORY_PROMPT_NPCS_MAX")
    ]:
        view = npc_memory_view(
            campaign_id=campaign_id,
            npc_id=npc_id,
            entity=entity,
            recent=setting("MEMORY_PROMPT_NPC_MEMORIES_MAX"),
            names=names,
        )
        fitted = _fit(view, room)
        if fitted is None:
            break
        items.append(fitted[0])
        room -= fitted[1]
    return items


def npc_memories_of(
    *,
    campaign_id: uuid.UUID | str,
    npc_id: str | None = None,
    reader_user_id: uuid.UUID | str | None = None,
) -> QuerySet[NpcMemory]:
    """A campaign's NPC memory edges (of one NPC). With `reader_user_id` (a player),
    only those everyone knows and the secrets that player was told, and none of an NPC
    (or about an entity) the players have not discovered yet (hidden in the current
    state); without, all."""
    qs = NpcMemory.objects.filter(campaign_id=campaign_id)
    if npc_id:
        qs = qs.filter(npc_id=npc_id)
    if reader_user_id is None:
        return qs
    snapshot = snapshot_get(campaign_id=campaign_id)
    hidden = sorted(hidden_entity_ids(snapshot.state)) if snapshot is not None else []
    if hidden:
        qs = qs.exclude(npc_id__in=hidden).exclude(
            Q(target_id__in=hidden) & ~Q(target_kind=NpcMemory.TargetKind.CHARACTER)
        )
    reader = str(reader_user_id)
    # known_by is a short list; matched in Python so that it works on every database.
    secret_ids = [
        pk
        for pk, known_by in qs.exclude(known_by=[]).values_list("pk", "known_by")
        if reader in (known_by or [])
    ]
    return qs.filter(Q(known_by=[]) | Q(pk__in=secret_ids))


# --- Documents ------------------------------------------------------------------------------------


def documents_list(*, campaign_id: uuid.UUID | str, include_gm_only: bool) -> list[Document]:
    qs = Document.objects.filter(campaign_id=campaign_id).defer("text").order_by("created_at")
    if not include_gm_only:
        qs = qs.filter(visibility=Document.Visibility.ALL)
    return list(qs)


def passage_counts(*, document_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = (
        Passage.objects.filter(document_id__in=list(document_ids))
        .values("document_id")
        .annotate(n=Count("id"))
        .values_list("document_id", "n")
    )
    return dict(rows)


# --- The story as one member may read it (recap, journal) ---------------------------------------
#
# These two read campaigns' Event table directly, filtered by type in SQL: the existing
# `campaigns.selectors.events_after` reads every type (dice seeds, audio, patch requests)
# and loads all of them. They belong in campaigns/selectors.py (as
# `events_of_types_between` and `events_of_types_count`); they sit here until that
# module is free to change.

STORY_PAGE_SIZE = 500
_STORY_FIELDS = (
    "seq",
    "type",
    "payload",
    "visibility",
    "actor_kind",
    "actor_user_id",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class StoryEvent:
    """The fields of an event the story is told from (a plain row: building 10,000 model
    instances costs more than reading them)."""

    seq: int
    type: str
    payload: dict[str, Any]
    visibility: dict[str, Any]
    actor_kind: str
    actor_user_id: uuid.UUID | None
    created_at: datetime


def story_events(
    *,
    campaign_id: uuid.UUID | str,
    viewer: Viewer,
    types: Sequence[str],
    after_seq: int = 0,
    through_seq: int | None = None,
    page_size: int = STORY_PAGE_SIZE,
) -> Iterator[list[StoryEvent]]:
    """The events of `types` with after_seq < seq <= through_seq that `viewer` may see,
    in seq order, a page at a time: one bounded query per page (keyset on seq), so a
    campaign of any length is read in constant memory."""
    cursor = after_seq
    while True:
        qs = Event.objects.filter(campaign_id=campaign_id, seq__gt=cursor, type__in=list(types))
        if through_seq is not None:
            qs = qs.filter(seq__lte=through_seq)
        page = [
            StoryEvent(*row) for row in qs.order_by("seq").values_list(*_STORY_FIELDS)[:page_size]
        ]
        if not page:
            return
        cursor = page[-1].seq
        visible = [e for e in page if event_visible(e.visibility or {}, viewer)]
        if visible:
            yield visible
        if len(page) < page_size:
            return


def story_events_count(
    *,
    campaign_id: uuid.UUID | str,
    viewer: Viewer,
    types: Sequence[str],
    after_seq: int,
    through_seq: int,
) -> int:
    """How many events of `types` in after_seq < seq <= through_seq `viewer` may see
    (only the visibility column is read: a week of play counts in milliseconds)."""
    qs = Event.objects.filter(
        campaign_id=campaign_id, seq__gt=after_seq, seq__lte=through_seq, type__in=list(types)
    )
    if viewer.is_gm:
        return qs.count()
    return sum(
        1
        for visibility in qs.values_list("visibility", flat=True).iterator(chunk_size=2000)
        if event_visible(visibility or {}, viewer)
    )
