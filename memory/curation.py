"""The GM's corrections of a campaign's memory (the GM admin, `/gm/`): a lore document's
title and visibility, removing a document (its passages go with it, and so leave
retrieval), and correcting or forgetting what an NPC remembers.

Each write names the campaign with the row: a row of another campaign is NotFound, as
is one that is gone. Uploading stays `memory.documents.document_create`.

An NPC memory the GM corrected keeps its key, so extraction (which only moves forward
and never overwrites an edge it already has) leaves the correction alone; a forgotten
edge is not extracted again either, as the events it came from are behind the cursor.
None of these writes is an event of the log: documents and NPC memories are the
campaign's memory, not its story (document uploads are not logged either).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from rpgai.errors import DomainError, NotFound

from .models import Document, NpcMemory

TITLE_MAX_CHARS = 200
DETAIL_MAX_CHARS = 400
SENTIMENT_MIN, SENTIMENT_MAX = -2, 2


class MemoryEditInvalid(DomainError):
    code = "invalid_memory_edit"


def _text(field: str, value: Any, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise MemoryEditInvalid(f"the {field} must be text")
    value = " ".join(value.split()) if field == "title" else value.strip()
    if "\x00" in value:
        raise MemoryEditInvalid(f"the {field} must not contain NUL characters")
    if required and not value:
        raise MemoryEditInvalid(f"the {field} must not be empty")
    if len(value) > limit:
        raise MemoryEditInvalid(
            f"the {field} is at most {limit} characters; this one has {len(value)}"
        )
    return value


def _document(campaign_id: uuid.UUID | str, document_id: uuid.UUID | str) -> Document:
    document = (
        Document.objects.select_for_update().filter(campaign_id=campaign_id, id=document_id).first()
    )
    if document is None:
        raise NotFound("no such document in this campaign")
    return document


def document_update(
    *,
    campaign_id: uuid.UUID | str,
    document_id: uuid.UUID | str,
    title: str | None = None,
    visibility: str | None = None,
) -> Document:
    """Rename a document or change who may read it (`all`, or `gm`: GMs and the DM only;
    retrieval for players follows at once). None leaves a value as it is."""
    if visibility is not None and visibility not in Document.Visibility.values:
        raise MemoryEditInvalid("visibility must be all or gm")
    clean_title = None if title is None else _text("title", title, TITLE_MAX_CHARS, required=True)
    with transaction.atomic():
        document = _document(campaign_id, document_id)
        fields = []
        if clean_title is not None and clean_title != document.title:
            document.title = clean_title
            fields.append("title")
        if visibility is not None and visibility != document.visibility:
            document.visibility = visibility
            fields.append("visibility")
        if fields:
            document.save(update_fields=fields)
    return document


def document_delete(*, campaign_id: uuid.UUID | str, document_id: uuid.UUID | str) -> None:
    """Remove a document and its passages (the full-text index follows by its triggers)."""
    with transaction.atomic():
        _document(campaign_id, document_id).delete()


def _memory(campaign_id: uuid.UUID | str, memory_id: int | str) -> NpcMemory:
    try:
        memory_id = int(memory_id)
    except (TypeError, ValueError):
        raise NotFound("no such NPC memory in this campaign") from None
    memory = (
        NpcMemory.objects.select_for_update().filter(campaign_id=campaign_id, id=memory_id).first()
    )
    if memory is None:
        raise NotFound("no such NPC memory in this campaign")
    return memory


def npc_memory_update(
    *,
    campaign_id: uuid.UUID | str,
    memory_id: int | str,
    detail: str | None = None,
    sentiment: int | None = None,
) -> NpcMemory:
    """Correct what an NPC remembers (`detail`) or how they took it (`sentiment`, -2
    hostile .. +2 warm). None leaves a value as it is."""
    if sentiment is not None and (
        isinstance(sentiment, bool)
        or not isinstance(sentiment, int)
        or not SENTIMENT_MIN <= sentiment <= SENTIMENT_MAX
    ):
        raise MemoryEditInvalid(
            f"the sentiment is a whole number from {SENTIMENT_MIN} to {SENTIMENT_MAX}"
        )
    clean_detail = None if detail is None else _text("detail", detail, DETAIL_MAX_CHARS)
    with transaction.atomic():
        memory = _memory(campaign_id, memory_id)
        fields = []
        if clean_detail is not None and clean_detail != memory.detail:
            memory.detail = clean_detail
            fields.append("detail")
        if sentiment is not None and sentiment != memory.sentiment:
            memory.sentiment = sentiment
            fields.append("sentiment")
        if fields:
            memory.save(update_fields=fields)
    return memory


def npc_memory_delete(*, campaign_id: uuid.UUID | str, memory_id: int | str) -> None:
    """Make an NPC forget one thing."""
    with transaction.atomic():
        _memory(campaign_id, memory_id).delete()
