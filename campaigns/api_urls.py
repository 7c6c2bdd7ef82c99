from django.urls import path

from . import api, character_api, gm_api

urlpatterns = [
    path("campaigns/", api.CampaignListCreateApi.as_view(), name="api-campaigns"),
    path("campaigns/<uuid:campaign_id>/", api.CampaignDetailApi.as_view(), name="api-campaign"),
    path("campaigns/<uuid:campaign_id>/join", api.CampaignJoinApi.as_view(), name="api-join"),
    path("campaigns/<uuid:campaign_id>/events", api.EventListApi.as_view(), name="api-events"),
    path("campaigns/<uuid:campaign_id>/snapshot", api.SnapshotApi.as_view(), name="api-snapshot"),
    path("campaigns/<uuid:campaign_id>/actions", api.ActionCreateApi.as_view(), name="api-actions"),
    path("campaigns/<uuid:campaign_id>/rolls", api.RollCreateApi.as_view(), name="api-rolls"),
    path("campaigns/<uuid:campaign_id>/x_card", api.XCardApi.as_view(), name="api-x-card"),
    path(
        "campaigns/<uuid:campaign_id>/directions",
        gm_api.GmDirectionApi.as_view(),
        name="api-directions",
    ),
    path(
        "campaigns/<uuid:campaign_id>/narrations/<int:seq>/retry",
        gm_api.NarrationRetryApi.as_view(),
        name="api-narration-retry",
    ),
    path(
        "campaigns/<uuid:campaign_id>/members/<uuid:user_id>/kick",
        api.MemberKickApi.as_view(),
        name="api-member-kick",
    ),
    path("campaigns/<uuid:campaign_id>/bans", api.BanListApi.as_view(), name="api-bans"),
    path(
        "campaigns/<uuid:campaign_id>/bans/<uuid:user_id>",
        api.BanDeleteApi.as_view(),
        name="api-ban",
    ),
    path(
        "campaigns/<uuid:campaign_id>/invite_code",
        api.InviteCodeRotateApi.as_view(),
        name="api-invite-code",
    ),
    path("campaigns/<uuid:campaign_id>/leave", api.LeaveApi.as_view(), name="api-leave"),
    path("campaigns/<uuid:campaign_id>/gm_role", api.GmRoleApi.as_view(), name="api-gm-role"),
    path(
        "campaigns/<uuid:campaign_id>/characters",
        character_api.CharacterListCreateApi.as_view(),
        name="api-characters",
    ),
    path(
        "campaigns/<uuid:campaign_id>/characters/options",
        character_api.CharacterOptionsApi.as_view(),
        name="api-character-options",
    ),
    path(
        "campaigns/<uuid:campaign_id>/characters/<uuid:character_id>",
        character_api.CharacterDetailApi.as_view(),
        name="api-character",
    ),
]
