"""Who is in which campaign room: read-only (the consumers own these rows)."""

from __future__ import annotations

from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin

from .models import RoomPresence


@admin.register(RoomPresence)
class RoomPresenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("display_name", "role", "campaign", "user", "connected_at", "last_seen")
    list_select_related = ("campaign", "user")
    list_filter = ("role",)
    search_fields = ("display_name", "campaign__name", "user__username")
    ordering = ("-last_seen",)
    fields = (
        "channel_name",
        "campaign",
        "user",
        "display_name",
        "role",
        "connected_at",
        "last_seen",
    )
    readonly_fields = fields
