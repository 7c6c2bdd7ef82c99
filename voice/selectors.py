"""Reads of voice profiles and spoken segments."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.files.storage import storages

from campaigns.models import Campaign, Event
from campaigns.selectors import SYSTEM_VIEWER, Viewer, events_after

from .models import SpeechSegment, VoiceProfile


@dataclass(frozen=True)
class VoiceChoice:
    """The voice one segment is spoken in, with every default resolved."""

    engine: str  # piper, openai or none
    voice: str  # blank: the engine's default voice
    speed: float = 1.0
    pitch: float = 1.0


def voice_profiles_of(*, campaign_id: uuid.UUID | str) -> dict[str | None, VoiceProfile]:
    """The campaign's profiles by entity id (None: the DM's)."""
    return {
        (str(p.entity_id) if p.entity_id else None): p
        for p in VoiceProfile.objects.filter(campaign_id=campaign_id)
    }


def voice_choice(profiles: dict[str | None, VoiceProfile], speaker: str | None) -> VoiceChoice:
    """The speaker's voice: its profile, else the DM's, else TTS_PROVIDER's default."""
    profile = profiles.get(speaker) if speaker else None
    if profile is None:
        profile = profiles.get(None)
    provider = (settings.TTS_PROVIDER or "none").strip().lower()
    if provider == "none":
        # The operator's switch: no speech at all, whatever the profiles say.
        return VoiceChoice(engine="none", voice="")
    if profile is None:
        return VoiceChoice(engine=provider, voice="")
    return VoiceChoice(
        engine=profile.engine or provider,
        voice=profile.voice,
        speed=profile.speed,
        pitch=profile.pitch,
    )


def narration_get(
    *, campaign_id: uuid.UUID | str, narration_seq: int, viewer: Viewer = SYSTEM_VIEWER
) -> Event | None:
    """The `dm_narration` event at this seq, if there is one and `viewer` may see it."""
    found = events_after(
        campaign_id=campaign_id,
        after_seq=narration_seq - 1,
        through_seq=narration_seq,
        limit=1,
        viewer=viewer,
    )
    if found and found[0].type == "dm_narration":
        return found[0]
    return None


def speech_segment_get(
    *, campaign_id: uuid.UUID | str, segment_id: uuid.UUID | str
) -> SpeechSegment | None:
    """The segment, recorded in this campaign or, for a fork, in the ancestor it was copied
    from (a fork's copied `dm_audio_ready` events name the fork; the audio stays where it
    was made). Only a segment of a narration at or before the fork point counts."""
    found = SpeechSegment.objects.filter(campaign_id=campaign_id, id=segment_id).first()
    if found is not None:
        return found
    campaign = Campaign.objects.filter(id=campaign_id).only("forked_from", "forked_at_seq").first()
    through_seq = None
    hops = 0
    while campaign is not None and campaign.forked_from_id is not None and hops < 32:
        hops += 1
        at = campaign.forked_at_seq or 0
        through_seq = at if through_seq is None else min(through_seq, at)
        found = SpeechSegment.objects.filter(
            campaign_id=campaign.forked_from_id, id=segment_id, narration_seq__lte=through_seq
        ).first()
        if found is not None:
            return found
        campaign = (
            Campaign.objects.filter(id=campaign.forked_from_id)
            .only("forked_from", "forked_at_seq")
            .first()
        )
    return None


def speech_segment_find(
    *, campaign_id: uuid.UUID | str, narration_seq: int, segment: int
) -> SpeechSegment | None:
    return SpeechSegment.objects.filter(
        campaign_id=campaign_id, narration_seq=narration_seq, segment=segment
    ).first()


def speech_streamed_find(
    *, campaign_id: uuid.UUID | str, turn_id: str, segment: int
) -> SpeechSegment | None:
    """The sentence `segment` spoken while the turn's narration streamed, not adopted yet."""
    return SpeechSegment.objects.filter(
        campaign_id=campaign_id, turn_id=turn_id, segment=segment, narration_seq__isnull=True
    ).first()


def speech_streamed_of(*, campaign_id: uuid.UUID | str, turn_id: str) -> list[SpeechSegment]:
    """The turn's sentences spoken as its narration streamed and not adopted, in order."""
    return list(
        SpeechSegment.objects.filter(
            campaign_id=campaign_id, turn_id=turn_id, narration_seq__isnull=True
        ).order_by("segment")
    )


def speech_streamed_older(
    *, campaign_id: uuid.UUID | str, before: datetime
) -> Iterable[SpeechSegment]:
    """Streamed sentences of the campaign never adopted, made before `before`."""
    return SpeechSegment.objects.filter(
        campaign_id=campaign_id, narration_seq__isnull=True, created_at__lt=before
    )


def speech_audio_read(*, segment: SpeechSegment) -> bytes:
    """The segment's WAV file from storage (a few hundred KB at most)."""
    storage = storages[settings.VOICE_STORAGE_ALIAS]
    with storage.open(segment.storage_name, "rb") as audio:
        return audio.read()
