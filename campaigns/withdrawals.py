"""An entity the players had seen, hidden again: they are told it left their view.

Hiding an entity (`/entities/<id>/hidden` set to true, by the GM's "Hide" in the room, a GM
revert of a reveal, a retry that undoes one, or the DM's own patch) is a GM-only state
patch: what the patch says about the entity is a secret from then on. Without a word to
the players their pages would keep showing it until reloaded. So the change that hides it
is followed, in the same transaction, by a public `entity_withdrawn` {`entity_id`}: the id
of an entity every player already knew (it was visible before, or made in public by the
same change), and nothing else: no name, no data, no reason, no actor. A player learns
no more than reloading the page would show them (it is gone from their snapshot).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import transaction

from rpgai.errors import NotFound

from .events import NewEvent
from .models import Event, Snapshot
from .services import events_append

T = TypeVar("T")


def _visible_ids(state: dict[str, Any]) -> set[str]:
    entities = state.get("entities") or {}
    return {
        entity_id
        for entity_id, entity in entities.items()
        if isinstance(entity, dict) and entity.get("hidden") is not True
    }


def _hidden_ids(state: dict[str, Any]) -> set[str]:
    entities = state.get("entities") or {}
    return {
        entity_id
        for entity_id, entity in entities.items()
        if isinstance(entity, dict) and entity.get("hidden") is True
    }


def _made_in_public(events: Iterable[Event]) -> set[str]:
    """The entities a public `entity_created` of the change made (the players saw them)."""
    made = set()
    for event in events:
        if event.type == "entity_created" and (event.visibility or {}).get("kind") == "all":
            entity = (event.payload or {}).get("entity") or {}
            if isinstance(entity.get("id"), str):
                made.add(entity["id"])
    return made


def entities_withdrawn(
    before: dict[str, Any], after: dict[str, Any], events: Iterable[Event] = ()
) -> list[str]:
    """The entities the players could see before the change (or saw it make) that are
    there and hidden after it. A removed entity is not one: its removal is public."""
    seen = _visible_ids(before) | _made_in_public(events)
    return sorted(seen & _hidden_ids(after))


def _events_of(result: Any) -> list[Event]:
    if isinstance(result, list):
        return [e for e in result if isinstance(e, Event)]
    return list(getattr(result, "events", None) or [])


def with_withdrawals(
    *,
    campaign_id: uuid.UUID | str,
    change: Callable[[], T],
    request_id: str = "",
) -> tuple[T, list[Event]]:
    """Run `change` (a write that appends through `events_append` and returns its events,
    or a result with `.events`) and, in the same transaction, `entity_withdrawn` for each
    entity it hid from the players. Returns the change's result and the withdrawals.

    The snapshot row is locked first (on PostgreSQL; SQLite's IMMEDIATE transaction holds
    the database's write lock), so "before" is the state the change starts from."""
    with transaction.atomic():
        row = Snapshot.objects.select_for_update().filter(campaign_id=campaign_id).first()
        if row is None:
            raise NotFound("no such campaign")
        before = row.state
        result = change()
        after = Snapshot.objects.get(campaign_id=campaign_id).state
        withdrawn = entities_withdrawn(before, after, _events_of(result))
        if not withdrawn:
            return result, []
        appended = events_append(
            campaign_id=campaign_id,
            events=[
                NewEvent("entity_withdrawn", {"entity_id": entity_id}) for entity_id in withdrawn
            ],
            request_id=request_id,
        )
    return result, appended
