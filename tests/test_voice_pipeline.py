"""The voice pipeline: a committed narration is spoken segment by segment, each segment
announced with `dm_audio_ready` in order, once, in the speaker's voice."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.events import InvalidEvent, NewEvent
from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import events_append, player_action_submit
from voice.engine_piper import PACKAGED_VOICE
from voice.models import SpeechSegment
from voice.services import speech_budget_allows, voice_profile_set
from voice.tasks import synthesize_narration
from voice.text import sentences

pytest.importorskip("piper")

# Real commits: speech starts after the narration commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

DM_VOICE = f"piper:{PACKAGED_VOICE}"


@pytest.fixture(autouse=True)
def piper_in_tmp_media(settings, tmp_path):
    settings.TTS_PROVIDER = "piper"
    settings.MEDIA_ROOT = str(tmp_path)


def narrate(campaign, text: str, **extra) -> Event:
    created_at = extra.pop("created_at", None)
    [event] = events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_narration",
                {"turn_id": str(uuid.uuid4()), "text": text, "options": ["Go on"], **extra},
                "dm",
                created_at=created_at,
            )
        ],
    )
    return event


def audio_events(campaign) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="dm_audio_ready").order_by("seq"))


def npc(campaign, name: str) -> str:
    entity_id = str(uuid.uuid4())
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "entity_created",
                {"entity": {"id": entity_id, "kind": "npc", "name": name, "data": {}}},
                "dm",
            )
        ],
    )
    return entity_id


def test_a_players_action_is_answered_then_spoken_sentence_by_sentence(campaign, make_user, join):
    alice = make_user("alice")
    join(alice, "Alice")
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)

    # Committing the action runs the (fake) DM turn, whose narration is then spoken.
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I open the door")

    [narration] = Event.objects.filter(campaign=campaign, type="dm_narration")
    events = audio_events(campaign)
    expected = sentences(narration.payload["text"])
    assert len(expected) >= 2
    assert [e.payload["text"] for e in events] == expected
    assert [e.payload["segment"] for e in events] == list(range(len(expected)))
    assert {e.payload["segments"] for e in events} == {len(expected)}
    assert {e.payload["narration_seq"] for e in events} == {narration.seq}
    # After the narration, in seq order, each with a duration and its own audio URL.
    assert [e.seq for e in events] == list(
        range(narration.seq + 1, narration.seq + 1 + len(expected))
    )
    assert all(e.payload["duration_ms"] > 0 for e in events)
    assert len({e.payload["url"] for e in events}) == len(events)
    assert all(e.payload["url"].startswith(f"/api/campaigns/{campaign.id}/audio/") for e in events)
    assert all(e.payload["voice_id"] == DM_VOICE and e.payload["speaker"] is None for e in events)
    assert all(e.actor_kind == "system" for e in events)


def test_tts_provider_none_appends_nothing(campaign, settings):
    settings.TTS_PROVIDER = "none"
    narration = narrate(campaign, "Silence falls. Nobody speaks.")

    assert audio_events(campaign) == []
    # Even a task queued before the switch was flipped speaks nothing.
    synthesize_narration.apply(
        kwargs={"campaign_id": str(campaign.id), "narration_seq": narration.seq}
    ).get()
    assert audio_events(campaign) == []
    assert not SpeechSegment.objects.filter(campaign=campaign).exists()


def test_a_retried_task_appends_each_segment_once(campaign, settings, tmp_path):
    settings.TTS_PROVIDER = "none"  # append the narration; its task is delivered below
    narration = narrate(campaign, "The bell tolls. Once. Twice.")
    settings.TTS_PROVIDER = "piper"
    kwargs = {"campaign_id": str(campaign.id), "narration_seq": narration.seq}

    # Delivered twice at once (acks_late after a lost worker), then retried once more.
    def deliver() -> None:
        try:
            synthesize_narration.run(**kwargs)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    first = audio_events(campaign)
    assert synthesize_narration.apply(kwargs=kwargs).get() == 0

    assert [e.id for e in audio_events(campaign)] == [e.id for e in first]
    assert [e.payload["segment"] for e in first] == [0, 1, 2]
    assert [e.payload["text"] for e in first] == ["The bell tolls.", "Once.", "Twice."]
    assert SpeechSegment.objects.filter(campaign=campaign).count() == 3
    # The loser of a race drops its own copy of the audio: one file per segment.
    assert len(list((tmp_path / "voice" / str(campaign.id)).iterdir())) == 3


def test_segments_of_a_lost_run_are_made_and_announced_in_order(campaign, settings):
    settings.TTS_PROVIDER = "none"  # the first delivery of the task never ran
    narration = narrate(campaign, "Wind howls. Snow falls. A wolf calls.")
    settings.TTS_PROVIDER = "piper"

    assert synthesize_narration.run(campaign_id=str(campaign.id), narration_seq=narration.seq) == 3
    events = audio_events(campaign)
    assert [e.payload["segment"] for e in events] == [0, 1, 2]
    assert [e.payload["text"] for e in events] == ["Wind howls.", "Snow falls.", "A wolf calls."]


def test_speaker_tagged_segments_use_the_npc_voice(campaign):
    innkeeper = npc(campaign, "Marta the innkeeper")
    voice_profile_set(campaign_id=campaign.id, entity_id=innkeeper, pitch=0.8, label="Marta")
    narration = narrate(
        campaign,
        "Marta leans close. Not here. They listen.",
        segments=[
            {"speaker": None, "text": "Marta leans close."},
            {"speaker": innkeeper, "text": "Not here. They listen."},
        ],
    )

    events = audio_events(campaign)
    assert [(e.payload["segment"], e.payload["text"]) for e in events] == [
        (0, "Marta leans close."),
        (1, "Not here."),
        (2, "They listen."),
    ]
    assert [e.payload["speaker"] for e in events] == [None, innkeeper, innkeeper]
    assert [e.payload["voice_id"] for e in events] == [DM_VOICE] + [f"{DM_VOICE};pitch=0.8"] * 2
    assert {e.payload["narration_seq"] for e in events} == {narration.seq}


def test_the_dm_profile_sets_the_narrator_and_a_silent_voice_is_skipped(campaign):
    ghost = npc(campaign, "A ghost")
    voice_profile_set(campaign_id=campaign.id, speed=1.25)
    voice_profile_set(campaign_id=campaign.id, entity_id=ghost, engine="none")
    narrate(
        campaign,
        "unused",
        segments=[
            {"speaker": ghost, "text": "Ooooh."},
            {"speaker": None, "text": "A chill. Then nothing."},
        ],
    )

    events = audio_events(campaign)
    assert [e.payload["text"] for e in events] == ["A chill.", "Then nothing."]
    assert [e.payload["segment"] for e in events] == [0, 1]
    assert {e.payload["segments"] for e in events} == {2}
    assert {e.payload["voice_id"] for e in events} == {f"{DM_VOICE};speed=1.25"}


def test_an_old_narration_is_not_spoken(campaign):
    # An imported or long-queued narration: speech that late is worse than none.
    narrate(campaign, "Long ago.", created_at=timezone.now() - timedelta(hours=2))
    assert audio_events(campaign) == []


def test_malformed_speaker_segments_fall_back_to_the_text(campaign):
    narrate(campaign, "Plain text wins.", segments=[{"speaker": "not-a-uuid", "text": "x"}])
    assert [e.payload["text"] for e in audio_events(campaign)] == ["Plain text wins."]


def test_voice_profiles_are_checked(campaign):
    from voice.services import InvalidVoiceProfile

    with pytest.raises(InvalidVoiceProfile, match="entity_id"):
        voice_profile_set(campaign_id=campaign.id, entity_id=uuid.uuid4())
    with pytest.raises(InvalidVoiceProfile, match="pitch"):
        voice_profile_set(campaign_id=campaign.id, pitch=3.0)
    with pytest.raises(InvalidVoiceProfile, match="voice"):
        voice_profile_set(campaign_id=campaign.id, engine="piper", voice="nobody")
    with pytest.raises(InvalidVoiceProfile, match="engine"):
        voice_profile_set(campaign_id=campaign.id, engine="espeak")


def test_the_event_is_validated_and_deduplicated_by_segment(campaign):
    with pytest.raises(InvalidEvent):
        events_append(
            campaign_id=campaign.id,
            events=[
                NewEvent(
                    "dm_audio_ready",
                    {
                        "narration_seq": 1,
                        "url": "/x",
                        "voice_id": "v",
                        "duration_ms": 5,
                        "segment": 2,
                        "segments": 2,
                    },
                )
            ],
        )
    payload = {"narration_seq": 1, "url": "/x", "voice_id": "v", "duration_ms": 5}
    first = events_append(campaign_id=campaign.id, events=[NewEvent("dm_audio_ready", payload)])
    again = events_append(campaign_id=campaign.id, events=[NewEvent("dm_audio_ready", payload)])
    assert first[0].id == again[0].id


def test_the_budget_hook_allows_until_billing_exists(campaign):
    # issue 6 replaces this with a reservation on the campaign's budget.
    assert speech_budget_allows(campaign_id=campaign.id, characters=10_000) is True


def test_a_long_first_sentence_is_cut_so_the_first_audio_comes_sooner(campaign, settings):
    settings.VOICE_FIRST_SEGMENT_MAX_CHARS = 60
    first = (
        "Beyond the broken gate, where the road bends toward the marsh, "
        "a lantern sways in the fog and a figure waits."
    )
    narrate(campaign, f"{first} It does not move.")

    texts = [e.payload["text"] for e in audio_events(campaign)]
    assert texts == [
        "Beyond the broken gate,",
        "where the road bends toward the marsh, a lantern sways in the fog and a figure waits.",
        "It does not move.",
    ]


def test_the_task_runs_on_the_voice_queue():
    from rpgai.celery import app

    route = app.amqp.router.route({}, synthesize_narration.name, (), {})
    assert route["queue"].name == "voice"
    assert synthesize_narration.acks_late


def test_the_gm_sets_an_npc_voice_in_the_admin(admin_client, campaign):
    from django.urls import reverse

    from voice.models import VoiceProfile

    smith = npc(campaign, "Brannoc the smith")
    add = reverse("admin:voice_voiceprofile_add")
    form = {
        "campaign": str(campaign.id),
        "entity_id": str(uuid.uuid4()),
        "label": "Brannoc",
        "engine": "piper",
        "voice": "",
        "speed": "0.9",
        "pitch": "0.75",
    }
    refused = admin_client.post(add, form)
    assert refused.status_code == 200 and "has no entity" in refused.content.decode()

    assert admin_client.post(add, {**form, "entity_id": smith}).status_code == 302
    profile = VoiceProfile.objects.get(campaign=campaign, entity_id=smith)
    assert (profile.speed, profile.pitch, profile.label) == (0.9, 0.75, "Brannoc")
    change = reverse("admin:voice_voiceprofile_change", args=[profile.pk])
    page = admin_client.get(change).content.decode()
    assert "Brannoc the smith (npc)" in page
    changed = admin_client.post(change, {**form, "entity_id": smith, "pitch": "1.1"})
    assert changed.status_code == 302
    assert VoiceProfile.objects.get(pk=profile.pk).pitch == 1.1
    assert admin_client.get(reverse("admin:voice_speechsegment_changelist")).status_code == 200

    narrate(campaign, "unused", segments=[{"speaker": smith, "text": "Mind the forge."}])
    [audio] = audio_events(campaign)
    assert audio.payload["voice_id"] == f"{DM_VOICE};speed=0.9;pitch=1.1"


def test_voice_settings_that_cannot_work_fail_the_system_check(settings):
    from voice.checks import voice_settings_check

    assert voice_settings_check() == []
    settings.TTS_PROVIDER = "espeak"
    settings.VOICE_STORAGE_ALIAS = "s3"
    assert {e.id for e in voice_settings_check()} == {"voice.E001", "voice.E003"}


def test_deleting_the_campaign_deletes_its_audio(campaign, tmp_path):
    from campaigns.services import campaign_delete

    narrate(campaign, "Soon forgotten.")
    [segment] = SpeechSegment.objects.filter(campaign=campaign)
    stored = tmp_path / segment.storage_name
    assert stored.exists()

    campaign_delete(campaign_id=campaign.id)
    assert not SpeechSegment.objects.filter(id=segment.id).exists()
    assert not stored.exists()
