"""Every write of the voice app: voice profiles, spoken segments, and the pipeline that
turns a committed `dm_narration` into one `dm_audio_ready` per segment."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing.services import speech_reserve, speech_usage_record
from campaigns.events import NewEvent
from campaigns.selectors import event_by_dedupe_key, snapshot_get
from campaigns.services import events_append
from rpgai.errors import DomainError, NotFound

from . import selectors
from .engine_piper import piper_voice_files
from .engines import (
    ENGINE_NAMES,
    PITCH_MAX,
    PITCH_MIN,
    SPEED_MAX,
    SPEED_MIN,
    SpeechError,
    engine_get,
)
from .models import SpeechSegment, VoiceProfile
from .selectors import VoiceChoice
from .text import PlannedSegment, narration_segments, speakable

log = logging.getLogger(__name__)


# --- Budget (billing, issue 6) -----------------------------------------------------------------


def speech_budget_allows(*, campaign_id: uuid.UUID | str, characters: int) -> bool:
    """Whether the campaign's budget allows speaking `characters` more characters: billing
    reserves their cost on the campaign's budget row (refused past a hard cap, or when a
    campaign past its cap degrades to no voice); each segment spoken settles its part."""
    return speech_reserve(campaign_id=campaign_id, characters=characters)


# --- Voice profiles ------------------------------------------------------------------------------


class InvalidVoiceProfile(DomainError):
    code = "invalid_voice_profile"


def voice_profile_check(
    *,
    campaign_id: uuid.UUID | str,
    entity_id: uuid.UUID | str | None,
    engine: str,
    voice: str,
    speed: float,
    pitch: float,
) -> None:
    """Raise InvalidVoiceProfile (naming the field) when a profile cannot be spoken."""
    if engine and engine not in ENGINE_NAMES:
        raise InvalidVoiceProfile(f"engine: {engine!r} is not one of {', '.join(ENGINE_NAMES)}")
    if not SPEED_MIN <= speed <= SPEED_MAX:
        raise InvalidVoiceProfile(f"speed: between {SPEED_MIN} and {SPEED_MAX}")
    if not PITCH_MIN <= pitch <= PITCH_MAX:
        raise InvalidVoiceProfile(f"pitch: between {PITCH_MIN} and {PITCH_MAX}")
    if voice and (engine or settings.TTS_PROVIDER) == "piper":
        known = piper_voice_files()
        if voice not in known:
            names = ", ".join(sorted(known)) or "none installed"
            raise InvalidVoiceProfile(f"voice: no piper voice {voice!r} (installed: {names})")
    if entity_id:
        snapshot = snapshot_get(campaign_id=campaign_id)
        if snapshot is None:
            raise NotFound("no such campaign")
        if str(entity_id) not in snapshot.state.get("entities", {}):
            raise InvalidVoiceProfile(
                f"entity_id: the campaign has no entity {entity_id} (see its entity_created events)"
            )


def voice_profile_set(
    *,
    campaign_id: uuid.UUID | str,
    entity_id: uuid.UUID | str | None = None,
    engine: str = "",
    voice: str = "",
    speed: float = 1.0,
    pitch: float = 1.0,
    label: str = "",
    profile_id: uuid.UUID | str | None = None,
) -> VoiceProfile:
    """Create or change the voice of the DM (no entity) or of one entity of a campaign;
    with `profile_id`, change that profile (also whom it speaks for)."""
    engine, voice = engine.strip().lower(), voice.strip()
    voice_profile_check(
        campaign_id=campaign_id,
        entity_id=entity_id,
        engine=engine,
        voice=voice,
        speed=speed,
        pitch=pitch,
    )
    fields: dict[str, Any] = {
        "entity_id": entity_id or None,
        "engine": engine,
        "voice": voice,
        "speed": speed,
        "pitch": pitch,
        "label": label.strip()[:80],
    }
    with transaction.atomic():
        if profile_id is not None:
            profile = (
                VoiceProfile.objects.select_for_update()
                .filter(id=profile_id, campaign_id=campaign_id)
                .first()
            )
            if profile is None:
                raise NotFound("no such voice profile in this campaign")
            for name, value in fields.items():
                setattr(profile, name, value)
            profile.save()
            return profile
        entity = fields.pop("entity_id")
        profile, _ = VoiceProfile.objects.update_or_create(
            campaign_id=campaign_id, entity_id=entity, defaults=fields
        )
    return profile


# --- Spoken segments -----------------------------------------------------------------------------


def _audio_dedupe_key(narration_seq: int, segment: int) -> str:
    # The same key DmAudioReady.dedupe_key() gives the event.
    return f"audio:{narration_seq}:{segment}"


def speech_segment_make(
    *,
    campaign_id: uuid.UUID | str,
    narration_seq: int,
    index: int,
    total: int,
    planned: PlannedSegment,
    choice: VoiceChoice,
) -> SpeechSegment:
    """The segment's audio, synthesized and stored once (a retry finds it made)."""
    existing = selectors.speech_segment_find(
        campaign_id=campaign_id, narration_seq=narration_seq, segment=index
    )
    if existing is not None:
        return existing
    engine = engine_get(choice.engine)
    if engine is None:
        raise SpeechError("this voice is silent", code="speech_silent")
    started = time.perf_counter()
    speech = engine.synthesize(
        speakable(planned.text), voice=choice.voice, speed=choice.speed, pitch=choice.pitch
    )
    synthesis_ms = round((time.perf_counter() - started) * 1000)
    # Spoken is paid for, whatever happens to the audio next.
    speech_usage_record(campaign_id=campaign_id, engine=engine.name, characters=planned.characters)

    storage = storages[settings.VOICE_STORAGE_ALIAS]
    name = storage.save(
        f"{settings.VOICE_STORAGE_PREFIX}/{campaign_id}/"
        f"{narration_seq}-{index}-{uuid.uuid4().hex[:12]}.wav",
        ContentFile(speech.wav),
    )
    try:
        with transaction.atomic():
            return SpeechSegment.objects.create(
                campaign_id=campaign_id,
                narration_seq=narration_seq,
                segment=index,
                segments=total,
                speaker=planned.speaker,
                text=planned.text,
                characters=planned.characters,
                engine=engine.name,
                voice_id=speech.voice_id,
                storage_name=name,
                size_bytes=len(speech.wav),
                duration_ms=speech.duration_ms,
                synthesis_ms=synthesis_ms,
            )
    except IntegrityError:
        # Another worker made this segment at the same time: keep theirs, drop ours.
        log.info("segment %s of narration %s was made twice; dropping a copy", index, narration_seq)
        storage.delete(name)
        made = selectors.speech_segment_find(
            campaign_id=campaign_id, narration_seq=narration_seq, segment=index
        )
        if made is None:
            raise
        return made


def speech_segment_url(segment: SpeechSegment) -> str:
    return reverse(
        "api-speech-audio", kwargs={"campaign_id": segment.campaign_id, "segment_id": segment.id}
    )


def narration_speak(*, campaign_id: uuid.UUID | str, narration_seq: int) -> int:
    """Speak a committed `dm_narration`: one `dm_audio_ready` per segment, in order, each
    appended as soon as its audio is stored. Returns how many segments were announced now.

    Idempotent: every segment's event has a dedupe key (`audio:<seq>:<segment>`) and its
    audio a unique row, so a retried task skips what is done and never appends twice.
    """
    if engine_get(settings.TTS_PROVIDER) is None:
        return 0
    narration = selectors.narration_get(campaign_id=campaign_id, narration_seq=narration_seq)
    if narration is None:
        log.warning("no dm_narration at seq %s of campaign %s to speak", narration_seq, campaign_id)
        return 0
    age = timezone.now() - narration.created_at
    if age > timedelta(seconds=settings.VOICE_MAX_AGE_SECONDS):
        log.info("narration %s of %s is %s old: not voiced", narration_seq, campaign_id, age)
        return 0

    planned = narration_segments(
        narration.payload,
        max_chars=settings.VOICE_SEGMENT_MAX_CHARS,
        max_total_chars=settings.VOICE_NARRATION_MAX_CHARS,
        first_max_chars=settings.VOICE_FIRST_SEGMENT_MAX_CHARS,
    )
    profiles = selectors.voice_profiles_of(campaign_id=campaign_id)
    voiced = [
        (segment, choice)
        for segment in planned
        if (choice := selectors.voice_choice(profiles, segment.speaker)).engine != "none"
    ]
    total = len(voiced)
    pending = [
        index
        for index in range(total)
        if event_by_dedupe_key(campaign_id=campaign_id, key=_audio_dedupe_key(narration_seq, index))
        is None
    ]
    if not pending:
        return 0
    characters = sum(voiced[index][0].characters for index in pending)
    if not speech_budget_allows(campaign_id=campaign_id, characters=characters):
        log.info("speech budget of campaign %s refuses %d characters", campaign_id, characters)
        return 0

    announced = 0
    for index in pending:
        planned_segment, choice = voiced[index]
        stored = speech_segment_make(
            campaign_id=campaign_id,
            narration_seq=narration_seq,
            index=index,
            total=total,
            planned=planned_segment,
            choice=choice,
        )
        payload: dict[str, Any] = {
            "narration_seq": narration_seq,
            "url": speech_segment_url(stored),
            "voice_id": stored.voice_id,
            "duration_ms": stored.duration_ms,
            "segment": index,
            "segments": total,
            "speaker": str(stored.speaker) if stored.speaker else None,
            "text": stored.text,
        }
        events_append(
            campaign_id=campaign_id,
            request_id=narration.request_id,
            events=[
                NewEvent(
                    "dm_audio_ready",
                    payload,
                    "system",
                    # Heard by those who read the narration, no one else.
                    visibility=dict(narration.visibility),  # type: ignore[arg-type]
                )
            ],
        )
        announced += 1
    return announced


def speech_file_delete(*, storage_name: str) -> None:
    """Remove a segment's audio from storage (its row is gone)."""
    try:
        storages[settings.VOICE_STORAGE_ALIAS].delete(storage_name)
    except Exception:
        log.exception("could not delete speech file %s", storage_name)


# --- Warm-up -------------------------------------------------------------------------------

_warm_lock = threading.Lock()
_warmed: set[str] = set()


def engine_warm_up_in_background() -> None:
    """Load the default engine's voice in a thread, once per process, so the first
    narration does not wait for it (piper: about a second)."""
    name = (settings.TTS_PROVIDER or "none").strip().lower()
    with _warm_lock:
        if name in _warmed or name == "none":
            return
        _warmed.add(name)

    def warm() -> None:
        try:
            engine = engine_get(name)
            if engine is not None:
                engine.warm_up()
        except Exception:
            log.exception("warming up the %s speech engine failed", name)

    threading.Thread(target=warm, name=f"voice-warm-up-{name}", daemon=True).start()
