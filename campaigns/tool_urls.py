"""Routes of the authoritative tools: the internal execute endpoint and the dice page."""

from django.urls import path

from . import internal_api, verify_views

urlpatterns = [
    path("internal/tools/execute", internal_api.tools_execute, name="internal-tools-execute"),
    path("campaigns/<uuid:campaign_id>/dice", verify_views.dice_page, name="campaign-dice"),
    path(
        "campaigns/<uuid:campaign_id>/dice/reveal",
        verify_views.dice_reveal,
        name="campaign-dice-reveal",
    ),
]
