"""DM turn locks: read-only (a holder that dies is taken over after TURN_LOCK_SECONDS).
DM settings: the campaign's provider and model, the model chosen among those the
operator allows (DM_MODELS_ALLOWED), written through `dm_settings_set`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin
from rpgai.errors import DomainError

from .models import DMSettings, TurnLock
from .selectors import dm_models_allowed
from .services import dm_settings_check, dm_settings_set


@admin.register(TurnLock)
class TurnLockAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("campaign", "holder", "acquired_at")
    list_select_related = ("campaign",)
    search_fields = ("campaign__name", "holder")
    ordering = ("-acquired_at",)
    fields = ("campaign", "holder", "acquired_at")
    readonly_fields = fields


class DMSettingsForm(forms.ModelForm):
    """The model is a choice among the operator's DM_MODELS_ALLOWED (read when the form
    is built, so a changed setting shows at once); blank keeps DM_MODEL."""

    model = forms.ChoiceField(required=False)

    class Meta:
        model = DMSettings
        fields = ("campaign", "provider", "model")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", f"Default ({settings.DM_MODEL})")] + [
            (name, name) for name in dm_models_allowed()
        ]
        field.help_text = "The models this server offers (DM_MODELS_ALLOWED)."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # The service's own rules (a provider it knows, an allowed model) as form errors.
        if not self.errors:
            try:
                dm_settings_check(
                    provider=data.get("provider") or "", model=data.get("model") or ""
                )
            except DomainError as exc:
                raise forms.ValidationError(exc.detail, code=exc.code) from None
        return data


@admin.register(DMSettings)
class DMSettingsAdmin(admin.ModelAdmin):
    """The GM picks the campaign's DM provider and model; blank means the settings."""

    form = DMSettingsForm
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
        dm_settings_set(campaign_id=obj.campaign_id, provider=obj.provider, model=obj.model)
