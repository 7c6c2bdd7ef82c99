"""DM turn locks: read-only (a holder that dies is taken over after TURN_LOCK_SECONDS)."""

from __future__ import annotations

from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin

from .models import DMSettings, TurnLock


@admin.register(TurnLock)
class TurnLockAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("campaign", "holder", "acquired_at")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name", "holder")
    ordering = ("-acquired_at",)
    fields = ("campaign", "holder", "acquired_at")
    readonly_fields = fields


@admin.register(DMSettings)
class DMSettingsAdmin(admin.ModelAdmin):
    """The GM picks the campaign's DM provider and model; blank means the settings."""

    list_display = ("campaign", "provider", "model", "updated_at")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name", "model")
    list_filter = ("provider",)
    fields = ("campaign", "provider", "model", "updated_at")
    readonly_fields = ("updated_at",)
    raw_id_fields = ("campaign",)

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # The campaign of existing settings is fixed (it is the primary key).
        return ("campaign", "updated_at") if obj is not None else ("updated_at",)

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from .services import dm_settings_set

        dm_settings_set(campaign_id=obj.campaign_id, provider=obj.provider, model=obj.model)
