"""Admin: the campaign's memory as the DM reads it, for operators and GMs to look at.

Read-only: lore documents are uploaded through the API (memory/api.py) and NPC memories
are extracted from the log (memory/npc_memory.py); editing either here would make them
disagree with their source.
"""

from __future__ import annotations

from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin

from .models import Document, NpcMemory


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("title", "campaign", "visibility", "content_type", "size_bytes", "created_at")
    list_filter = ("visibility", "content_type")
    list_select_related = ("campaign",)
    search_fields = ("title", "filename", "campaign__name")
    fields = (
        "id",
        "campaign",
        "title",
        "filename",
        "content_type",
        "visibility",
        "size_bytes",
        "sha256",
        "uploaded_by",
        "created_at",
        "text",
    )
    readonly_fields = fields


@admin.register(NpcMemory)
class NpcMemoryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "npc_name",
        "relation",
        "target_name",
        "known_by_text",
        "sentiment",
        "source_seq",
        "campaign",
    )
    list_filter = ("relation", "target_kind")
    list_select_related = ("campaign",)
    search_fields = ("npc_name", "target_name", "detail")
    ordering = ("campaign_id", "source_seq", "id")
    fields = (
        "campaign",
        "npc_id",
        "npc_name",
        "relation",
        "target_kind",
        "target_id",
        "target_name",
        "detail",
        "sentiment",
        "known_by",
        "source_seq",
        "key",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="known by")
    def known_by_text(self, obj: NpcMemory) -> str:
        # Who was told: user ids of the members who know it; empty means the whole table.
        return ", ".join(obj.known_by) if obj.known_by else "everyone"
