from django.urls import path

from . import api

urlpatterns = [
    path(
        "campaigns/<uuid:campaign_id>/audio/<uuid:segment_id>",
        api.SpeechAudioApi.as_view(),
        name="api-speech-audio",
    ),
]
