"""Routes of campaigns.fork_api (forks and turn settings), under /api/."""

from django.urls import path

from . import fork_api

urlpatterns = [
    path(
        "campaigns/<uuid:campaign_id>/fork",
        fork_api.CampaignForkApi.as_view(),
        name="api-campaign-fork",
    ),
    path(
        "campaigns/<uuid:campaign_id>/turns",
        fork_api.CampaignTurnsApi.as_view(),
        name="api-campaign-turns",
    ),
]
