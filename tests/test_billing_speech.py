"""Speech is costed too: before a narration is spoken its characters are reserved on the
campaign's budget (refused past a hard cap), and each spoken segment is recorded as
`tts` usage by its characters, priced per million characters."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from billing import selectors
from billing.models import ModelUsage, Reservation
from billing.services import budget_set
from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import events_append
from tests.test_voice_openai import SpeechServer
from voice.services import speech_budget_allows

pytestmark = pytest.mark.django_db(transaction=True)  # speech starts after the commit

PRICES = """
[models."tts-test"]
characters = "20.00"

[models."piper"]
characters = "0"
"""


@pytest.fixture
def speech_server(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    with SpeechServer() as server:
        settings.TTS_PROVIDER = "openai"
        settings.OPENAI_TTS_BASE_URL = server.url
        settings.OPENAI_TTS_API_KEY = "test-key"
        settings.OPENAI_TTS_MODEL = "tts-test"
        settings.MEDIA_ROOT = str(tmp_path)
        yield server


def narrate(campaign, text: str) -> Event:
    [event] = events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_narration",
                {"turn_id": str(uuid.uuid4()), "text": text, "options": ["Go on"]},
                "dm",
            )
        ],
    )
    return event


def test_each_spoken_segment_is_recorded_by_its_characters(speech_server, campaign):
    narrate(campaign, "The gate groans. Torches flare along the wall!")
    audio = list(Event.objects.filter(campaign=campaign, type="dm_audio_ready").order_by("seq"))
    assert len(audio) == 2

    usage = list(ModelUsage.objects.filter(campaign_id=campaign.id).order_by("created_at"))
    assert [(u.purpose, u.provider, u.model) for u in usage] == [("tts", "openai", "tts-test")] * 2
    assert [u.characters for u in usage] == [len(e.payload["text"]) for e in audio]
    for row in usage:
        assert row.cost_usd == Decimal(row.characters) * 20 / 1_000_000
        assert row.input_tokens == row.output_tokens == 0
    assert selectors.campaign_spent(campaign_id=campaign.id) == sum(u.cost_usd for u in usage)
    assert not Reservation.objects.exists()  # the reservation was used up by the segments


def test_speech_past_a_hard_cap_is_not_made(speech_server, campaign):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0", hard_stop=True)
    narrate(campaign, "The gate groans. Torches flare along the wall!")
    assert speech_server.requests == []
    assert not Event.objects.filter(campaign=campaign, type="dm_audio_ready").exists()
    assert not ModelUsage.objects.exists() and not Reservation.objects.exists()


def test_the_reservation_holds_the_characters_cost_until_spoken(speech_server, campaign):
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.01", hard_stop=True)
    # 400 characters at $20 per million: $0.008 held of the $0.01 cap.
    assert speech_budget_allows(campaign_id=campaign.id, characters=400) is True
    assert selectors.campaign_reserved(campaign_id=campaign.id) == Decimal("0.008")
    assert speech_budget_allows(campaign_id=campaign.id, characters=200) is False


def test_local_speech_costs_nothing_and_holds_nothing(campaign, settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    settings.TTS_PROVIDER = "piper"
    budget_set(campaign_id=campaign.id, daily_cap_usd="0", hard_stop=True)
    assert speech_budget_allows(campaign_id=campaign.id, characters=10_000) is True
    assert not Reservation.objects.exists()
