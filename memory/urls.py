from django.urls import path

from . import api

urlpatterns = [
    path(
        "campaigns/<uuid:campaign_id>/documents",
        api.DocumentListCreateApi.as_view(),
        name="api-documents",
    ),
    path(
        "campaigns/<uuid:campaign_id>/rag_search",
        api.RagSearchApi.as_view(),
        name="api-rag-search",
    ),
    path(
        "campaigns/<uuid:campaign_id>/npc_memories",
        api.NpcMemoryListApi.as_view(),
        name="api-npc-memories",
    ),
    path(
        "campaigns/<uuid:campaign_id>/recap",
        api.RecapApi.as_view(),
        name="api-recap",
    ),
    path(
        "campaigns/<uuid:campaign_id>/journal.md",
        api.JournalApi.as_view(),
        name="api-journal",
    ),
]
