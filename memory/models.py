"""Long-campaign memory: uploaded lore cut into searchable passages, and what each NPC
remembers (a small graph whose edges name the event they came from).

Summaries have no table: `summary_created` events in the log are their record.

Full-text search lives outside these models, in the migration `0002_fulltext`: on
PostgreSQL a generated `tsvector` column `search` with a GIN index on memory_passage;
on SQLite an FTS5 table `memory_passage_fts` kept in sync by triggers. A later migration
that makes Django rebuild memory_passage on SQLite (most ALTERs do) drops those triggers
and must create them again. The update trigger fires only when the heading or the text
changes (migration `0005_passage_embedding`): storing a passage's vector leaves the
index alone.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Document(models.Model):
    """Lore or rules a GM uploaded for retrieval (plain text or Markdown)."""

    class Visibility(models.TextChoices):
        ALL = "all", "Everyone in the campaign"
        GM = "gm", "GMs and the DM only"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=200)
    filename = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=40)  # text/plain | text/markdown
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.ALL)
    text = models.TextField()
    size_bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "sha256"], name="document_once_per_campaign"
            )
        ]

    def __str__(self) -> str:
        return self.title


class Passage(models.Model):
    """A piece of a document cut along its headings and paragraphs; the unit retrieved."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="passages")
    # Denormalized from the document: every search filters on it first.
    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    ordinal = models.PositiveIntegerField()
    heading = models.CharField(max_length=500, blank=True, default="")  # "Combat / Grappling"
    text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)
    # The passage's meaning as a vector (memory.vectors): float32 bytes, little-endian,
    # of the model named beside it; both null until the background task has embedded it.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    embedding_model = models.CharField(max_length=64, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="passage_ordinal_unique")
        ]
        indexes = [models.Index(fields=["campaign"], name="passage_campaign")]

    def __str__(self) -> str:
        return f"{self.document_id} #{self.ordinal}"


class NpcMemory(models.Model):
    """One edge of an NPC's memory: the NPC (an entity of the campaign) to a character,
    another NPC, an item or a place, with what happened and the event it came from."""

    class Relation(models.TextChoices):
        MET = "met", "met"
        TOLD = "told", "was told by"
        SAW = "saw", "saw"
        AT = "at", "was at"
        # A player alone perceived something of the NPC (a private narration or roll).
        NOTICED = "noticed", "was noticed by"

    class TargetKind(models.TextChoices):
        CHARACTER = "character", "character"
        NPC = "npc", "NPC"
        ITEM = "item", "item"
        PLACE = "place", "place"

    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="npc_memories"
    )
    npc_id = models.CharField(max_length=64)  # the entity's id in the campaign state
    npc_name = models.CharField(max_length=80)
    relation = models.CharField(max_length=8, choices=Relation.choices)
    target_kind = models.CharField(max_length=10, choices=TargetKind.choices)
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_name = models.CharField(max_length=200)
    detail = models.CharField(max_length=400, blank=True, default="")
    # How the NPC took it: -2 (hostile) .. +2 (warm).
    sentiment = models.SmallIntegerField(default=0)
    source_seq = models.PositiveIntegerField()
    # Who at the table knows this edge: the user ids of the private event it came from
    # (a whisper to the DM, the DM's private narration or roll); empty: everyone.
    known_by = models.JSONField(default=list, blank=True)
    # Makes extraction idempotent: the same edge from the same event is stored once.
    key = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "NPC memory"
        verbose_name_plural = "NPC memories"
        ordering = ["source_seq", "id"]
        constraints = [models.UniqueConstraint(fields=["campaign", "key"], name="npc_memory_once")]
        indexes = [
            models.Index(fields=["campaign", "npc_id", "source_seq"], name="npc_memory_by_npc")
        ]

    def __str__(self) -> str:
        return f"{self.npc_name} {self.relation} {self.target_name} (seq {self.source_seq})"


class MemoryCursor(models.Model):
    """How far the NPC-memory extraction has read a campaign's log."""

    campaign = models.OneToOneField(
        "campaigns.Campaign", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    npc_through_seq = models.PositiveIntegerField(default=0)
    # The scene's location as of npc_through_seq (the fold keeps only the current one).
    location = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"memory cursor of {self.campaign_id}"
