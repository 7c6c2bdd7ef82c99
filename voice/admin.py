"""Voice profiles, set by the GM; spoken segments, read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from campaigns.admin import ReadOnlyAdminMixin
from campaigns.selectors import snapshot_get

from . import services
from .models import SpeechSegment, VoiceProfile


class VoiceProfileForm(forms.ModelForm):
    class Meta:
        model = VoiceProfile
        fields = ("campaign", "entity_id", "label", "engine", "voice", "speed", "pitch")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        campaign = data.get("campaign") or getattr(self.instance, "campaign", None)
        if campaign is None or self.errors:
            return data
        try:
            services.voice_profile_check(
                campaign_id=campaign.id,
                entity_id=data.get("entity_id"),
                engine=data.get("engine") or "",
                voice=(data.get("voice") or "").strip(),
                speed=data.get("speed", 1.0),
                pitch=data.get("pitch", 1.0),
            )
        except services.InvalidVoiceProfile as exc:
            field, _, message = exc.detail.partition(": ")
            if field in self.fields and message:
                self.add_error(field, message)
            else:
                raise forms.ValidationError(exc.detail) from exc
        return data


@admin.register(VoiceProfile)
class VoiceProfileAdmin(admin.ModelAdmin):
    """The DM's voice (no entity) and each NPC's; blank fields use the settings."""

    form = VoiceProfileForm
    list_display = ("campaign", "who", "engine", "voice", "speed", "pitch", "updated_at")
    list_select_related = ("campaign",)
    list_filter = ("engine",)
    search_fields = ("campaign__name", "label", "voice", "=entity_id")
    raw_id_fields = ("campaign",)
    readonly_fields = ("entity_name", "updated_at")
    fields = (
        "campaign",
        "entity_id",
        "entity_name",
        "label",
        "engine",
        "voice",
        "speed",
        "pitch",
        "updated_at",
    )

    @admin.display(description="speaks for")
    def who(self, obj: VoiceProfile) -> str:
        return obj.label or ("an NPC" if obj.entity_id else "the DM")

    @admin.display(description="entity")
    def entity_name(self, obj: VoiceProfile) -> str:
        if obj.pk is None or obj.entity_id is None:
            return "the DM" if obj.pk else "-"
        snapshot = snapshot_get(campaign_id=obj.campaign_id)
        entity = (snapshot.state.get("entities", {}) if snapshot else {}).get(str(obj.entity_id))
        return f"{entity['name']} ({entity['kind']})" if entity else "unknown entity"

    def save_model(self, request: HttpRequest, obj: VoiceProfile, form: Any, change: bool) -> None:
        saved = services.voice_profile_set(
            campaign_id=obj.campaign_id,
            entity_id=obj.entity_id,
            engine=obj.engine,
            voice=obj.voice,
            speed=obj.speed,
            pitch=obj.pitch,
            label=obj.label,
            profile_id=obj.pk if change else None,
        )
        obj.pk = saved.pk


@admin.register(SpeechSegment)
class SpeechSegmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "campaign",
        "narration_seq",
        "segment",
        "engine",
        "voice_id",
        "characters",
        "duration_ms",
        "synthesis_ms",
        "created_at",
    )
    list_select_related = ("campaign",)
    list_filter = ("engine",)
    search_fields = ("campaign__name", "text")
    ordering = ("-created_at",)
    fields = (
        "campaign",
        "narration_seq",
        "turn_id",
        "segment",
        "segments",
        "speaker",
        "text",
        "characters",
        "engine",
        "voice_id",
        "storage_name",
        "size_bytes",
        "duration_ms",
        "synthesis_ms",
        "created_at",
    )
    readonly_fields = fields
