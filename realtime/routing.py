from django.urls import path

from .consumers import CampaignConsumer

websocket_urlpatterns = [
    path("ws/campaigns/<uuid:campaign_id>/", CampaignConsumer.as_asgi()),
]
