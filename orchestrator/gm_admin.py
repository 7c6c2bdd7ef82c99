"""The GM admin (`/gm/`, rpgai/gm_site.py) for the DM's settings of a campaign: the
provider and the model, the model chosen among those the operator allows
(DM_MODELS_ALLOWED), written through `dm_settings_set`. Only the user's own campaigns
(`GmScopedAdmin`)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from rpgai.gm_site import GmCampaignFilter, GmScopedAdmin, gm_site, service_call

from .admin import DMSettingsAdmin, DMSettingsForm
from .models import DMSettings
from .selectors import dm_models_allowed
from .services import dm_settings_set


class GmDMSettingsForm(DMSettingsForm):
    """The staff form, with a model outside the allow-list refused in plain words."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        offered = ", ".join(dm_models_allowed())
        self.fields["model"].error_messages["invalid_choice"] = (
            f"That model is not offered on this server. Choose one of: {offered}."
        )


class GmDMSettingsAdmin(GmScopedAdmin, DMSettingsAdmin):
    gm_can_add = True
    gm_can_change = True
    form = GmDMSettingsForm
    autocomplete_fields = ("campaign",)
    list_filter = (GmCampaignFilter, "provider")
    search_fields = ("model",)

    def save_model(self, request: HttpRequest, obj: DMSettings, form: Any, change: Any) -> None:
        with service_call():
            dm_settings_set(campaign_id=obj.campaign_id, provider=obj.provider, model=obj.model)


gm_site.register(DMSettings, GmDMSettingsAdmin)
