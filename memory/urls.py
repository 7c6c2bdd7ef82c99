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
]
