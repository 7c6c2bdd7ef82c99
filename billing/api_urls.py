from django.urls import path

from . import api

urlpatterns = [
    path("campaigns/<uuid:campaign_id>/usage", api.UsageApi.as_view(), name="api-usage"),
    path("campaigns/<uuid:campaign_id>/budget", api.BudgetApi.as_view(), name="api-budget"),
]
