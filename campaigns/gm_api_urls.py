"""Routes of the GM's tools in the room (campaigns.gm_api), under /api/."""

from django.urls import path

from . import gm_api

urlpatterns = [
    path(
        "campaigns/<uuid:campaign_id>/gm/values",
        gm_api.GmSetValueApi.as_view(),
        name="api-gm-set-value",
    ),
    path(
        "campaigns/<uuid:campaign_id>/gm/reverts",
        gm_api.GmRevertApi.as_view(),
        name="api-gm-revert",
    ),
    path(
        "campaigns/<uuid:campaign_id>/gm/dice/reveal",
        gm_api.GmDiceRevealApi.as_view(),
        name="api-gm-dice-reveal",
    ),
]
