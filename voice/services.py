"""Every write of the voice app: voice profiles, spoken segments, and the pipeline that
turns a committed `dm_narration` into one `dm_audio_ready` per segment.

Speech while the DM narrates (issue 23, CONTRACTS §7): the turn's narration stream
(orchestrator.streaming) cuts sentences as they complete and queues each on the voice
worker (`sentence_speak`), which stores it as a row of the turn and tells the room
(`narration.audio`). The commit's speech (`narration_speak`) then adopts the rows whose
text the final narration kept (same audio, same URL, billed once), speaks only what
changed, and deletes the rest; a failed turn's rows are deleted (`turn_speech_discard`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing.services import speech_reserve, speech_usage_record
from campaigns.events import NewEvent
from campaigns.selectors import event_by_dedupe_key, snapshot_get
from campaigns.services import broadcast_room, events_append
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
from .text import PlannedSegment, narration_segments, speakable, spoken_key

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
    """The segment's audio, synthesized and stored once (a retry finds it made, and so
    does a narration whose sentence was spoken as it streamed: adopted already)."""
    existing = selectors.speech_segment_find(
        campaign_id=campaign_id, narration_seq=narration_seq, segment=index
    )
    if existing is not None:
        return existing
    return _speech_store(
        campaign_id=campaign_id,
        narration_seq=narration_seq,
        turn_id="",
        index=index,
        total=total,
        planned=planned,
        choice=choice,
    )


def _speech_store(
    *,
    campaign_id: uuid.UUID | str,
    narration_seq: int | None,
    turn_id: str,
    index: int,
    total: int,
    planned: PlannedSegment,
    choice: VoiceChoice,
) -> SpeechSegment:
    """Synthesize, bill, store the file and record the row (a narration's segment, or
    with `narration_seq` None a sentence of `turn_id` still streaming)."""
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
    place = f"{narration_seq}-{index}" if narration_seq is not None else f"t{turn_id[:8]}-{index}"
    name = storage.save(
        f"{settings.VOICE_STORAGE_PREFIX}/{campaign_id}/{place}-{uuid.uuid4().hex[:12]}.wav",
        ContentFile(speech.wav),
    )
    try:
        with transaction.atomic():
            return SpeechSegment.objects.create(
                campaign_id=campaign_id,
                narration_seq=narration_seq,
                turn_id=turn_id[:64],
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
        if narration_seq is None:
            made = selectors.speech_streamed_find(
                campaign_id=campaign_id, turn_id=turn_id, segment=index
            )
        else:
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

    The sentences its turn spoke while it streamed are used where the narration kept their
    words (not spoken or billed again; the same URL); the others are deleted, and so are
    all of them when the narration is a fallback.

    Idempotent: every segment's event has a dedupe key (`audio:<seq>:<segment>`) and its
    audio a unique row, so a retried task skips what is done and never appends twice.
    """
    if engine_get(settings.TTS_PROVIDER) is None:
        return 0
    narration = selectors.narration_get(campaign_id=campaign_id, narration_seq=narration_seq)
    if narration is None:
        log.warning("no dm_narration at seq %s of campaign %s to speak", narration_seq, campaign_id)
        return 0
    turn_id = str(narration.payload.get("turn_id") or "")
    streaming_swept(campaign_id=campaign_id)
    if turn_id:
        # Sentences queued and not begun are not spoken as streamed any more: spoken here.
        cache.set(_stream_key(campaign_id, turn_id, "closed"), True, STREAM_STATE_SECONDS)
    try:
        return _narration_speak(narration, campaign_id=campaign_id, turn_id=turn_id)
    finally:
        if turn_id:
            # Whatever the narration did not keep (or all of it, for a fallback), once the
            # sentences still being spoken are done.
            _turn_stream_close(campaign_id=campaign_id, turn_id=turn_id)
            _streamed_delete(campaign_id=campaign_id, turn_id=turn_id)


def _narration_speak(narration: Any, *, campaign_id: uuid.UUID | str, turn_id: str) -> int:
    narration_seq = narration.seq
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
    streamed = bool(turn_id) and not narration.payload.get("fallback")
    adopt = functools.partial(
        _streamed_adopt,
        campaign_id=campaign_id,
        turn_id=turn_id,
        narration_seq=narration_seq,
        voiced=voiced,
    )
    if streamed:
        adopt(pending=pending)
    made = {
        index
        for index in pending
        if selectors.speech_segment_find(
            campaign_id=campaign_id, narration_seq=narration_seq, segment=index
        )
        is not None
    }
    characters = sum(voiced[index][0].characters for index in pending if index not in made)
    if not speech_budget_allows(campaign_id=campaign_id, characters=characters):
        log.info("speech budget of campaign %s refuses %d characters", campaign_id, characters)
        # What is spoken already (as it streamed) is still heard; nothing more is made.
        pending = [index for index in pending if index in made]

    announced = 0
    deadline = time.monotonic() + float(settings.VOICE_STREAM_WAIT_SECONDS)
    for index in pending:
        planned_segment, choice = voiced[index]
        if streamed and index not in made:
            # Being spoken as it streamed, maybe: waited for (at most until the deadline),
            # and used, rather than made twice. Each segment is told as soon as it is here.
            _streamed_wait(
                campaign_id=campaign_id,
                turn_id=turn_id,
                key=spoken_key(planned_segment.text),
                deadline=deadline,
            )
            adopt(pending=[index])
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
        if turn_id:
            payload["turn_id"] = turn_id
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


# --- Speech while the narration streams (issue 23) ---------------------------------------------

# How long the counts of a turn's streamed sentences are kept: longer than any turn.
STREAM_STATE_SECONDS = 3600
# How often the commit's speech looks whether the streamed sentences are all spoken.
STREAM_POLL_SECONDS = 0.05


def _stream_key(campaign_id: uuid.UUID | str, turn_id: str, what: str) -> str:
    return f"rpgai:voice-stream:{campaign_id}:{turn_id}:{what}"


def _count_up(key: str) -> None:
    cache.add(key, 0, STREAM_STATE_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between the two calls
        cache.set(key, 1, STREAM_STATE_SECONDS)


def speech_streaming_on() -> bool:
    """Whether sentences are spoken as the narration streams (VOICE_STREAM, and a voice)."""
    provider = (settings.TTS_PROVIDER or "none").strip().lower()
    return bool(settings.VOICE_STREAM) and provider != "none"


def sentence_queued(*, campaign_id: uuid.UUID | str, turn_id: str) -> None:
    """Count a sentence queued for the turn (before it is queued): the commit waits for it."""
    _count_up(_stream_key(campaign_id, turn_id, "queued"))


def _streamed_wait(
    *, campaign_id: uuid.UUID | str, turn_id: str, key: str, deadline: float
) -> None:
    """Until a sentence of the turn spoken as it streamed says `key`, or none is being
    spoken any more, or the deadline."""
    while time.monotonic() < deadline:
        rows = selectors.speech_streamed_of(campaign_id=campaign_id, turn_id=turn_id)
        if any(spoken_key(row.text) == key for row in rows):
            return
        queued = cache.get(_stream_key(campaign_id, turn_id, "queued")) or 0
        done = cache.get(_stream_key(campaign_id, turn_id, "done")) or 0
        if done >= queued:
            return
        time.sleep(STREAM_POLL_SECONDS)


def _turn_stream_close(*, campaign_id: uuid.UUID | str, turn_id: str) -> None:
    """The turn's narration is committed (or it failed): sentences not yet started are not
    spoken as streamed any more, and those being spoken are waited for (at most
    VOICE_STREAM_WAIT_SECONDS), so that the commit finds them."""
    cache.set(_stream_key(campaign_id, turn_id, "closed"), True, STREAM_STATE_SECONDS)
    deadline = time.monotonic() + float(settings.VOICE_STREAM_WAIT_SECONDS)
    while time.monotonic() < deadline:
        queued = cache.get(_stream_key(campaign_id, turn_id, "queued")) or 0
        done = cache.get(_stream_key(campaign_id, turn_id, "done")) or 0
        if done >= queued:
            return
        time.sleep(STREAM_POLL_SECONDS)
    log.info("turn %s: streamed sentences still being spoken; going on without them", turn_id)


def sentence_speak(
    *, campaign_id: uuid.UUID | str, turn_id: str, segment: int, text: str
) -> SpeechSegment | None:
    """Speak one sentence of a narration still streaming (the voice task), store it as a
    row of the turn, and tell the room: `narration.audio` {turn_id, segment, text, url,
    duration_ms}. Nothing when the turn has ended already (its commit speaks instead),
    the DM's voice is silent, or the budget refuses (a degraded one first)."""
    try:
        if not _turn_sentence_turn(campaign_id=campaign_id, turn_id=turn_id, segment=segment):
            return None
        choice = selectors.voice_choice(selectors.voice_profiles_of(campaign_id=campaign_id), None)
        if choice.engine == "none":
            return None
        planned = PlannedSegment(text=text)
        existing = selectors.speech_streamed_find(
            campaign_id=campaign_id, turn_id=turn_id, segment=segment
        )
        if existing is not None:
            if existing.text == text:
                return existing  # a redelivered task: spoken and told already
            # The turn ran again (its first worker died) and said something else there.
            existing.delete()
        if not speech_budget_allows(campaign_id=campaign_id, characters=planned.characters):
            log.info("speech budget of campaign %s refuses a streamed sentence", campaign_id)
            return None
        stored = _speech_store(
            campaign_id=campaign_id,
            narration_seq=None,
            turn_id=turn_id,
            index=segment,
            total=0,
            planned=planned,
            choice=choice,
        )
        if cache.get(_stream_key(campaign_id, turn_id, "closed")):
            # The turn ended while this was spoken: its commit adopts it (told with
            # `dm_audio_ready`) or its failure deletes it; the room is told nothing now.
            return stored
        broadcast_room(
            campaign_id,
            {
                "type": "room.audio",
                "turn_id": turn_id,
                "segment": segment,
                "text": stored.text,
                "url": speech_segment_url(stored),
                "duration_ms": stored.duration_ms,
                # The narration that streams is the public one: private words go by
                # `narrate_private`, never streamed. Said anyway, for the consumer to apply.
                "visibility": {"kind": "all"},
            },
        )
        return stored
    finally:
        cache.set(
            _stream_key(campaign_id, turn_id, f"spoken:{segment}"), True, STREAM_STATE_SECONDS
        )
        _count_up(_stream_key(campaign_id, turn_id, "done"))


def _turn_sentence_turn(*, campaign_id: uuid.UUID | str, turn_id: str, segment: int) -> bool:
    """Wait until the sentence before this one is spoken (or given up): sentences queued at
    once would otherwise race for the engine (piper speaks one at a time per process) and
    the first could come last. False when the turn ended meanwhile: its commit speaks it."""
    deadline = time.monotonic() + float(settings.VOICE_STREAM_WAIT_SECONDS)
    while True:
        if cache.get(_stream_key(campaign_id, turn_id, "closed")):
            return False
        if segment == 0 or cache.get(_stream_key(campaign_id, turn_id, f"spoken:{segment - 1}")):
            return True
        if time.monotonic() >= deadline:
            return True
        time.sleep(STREAM_POLL_SECONDS)


def _streamed_adopt(
    *,
    campaign_id: uuid.UUID | str,
    turn_id: str,
    narration_seq: int,
    voiced: list[tuple[PlannedSegment, VoiceChoice]],
    pending: list[int],
) -> set[int]:
    """Make the turn's streamed sentences the narration's segments where the words agree
    (in order, each once): the same row, now with the narration's seq and place."""
    streamed = list(selectors.speech_streamed_of(campaign_id=campaign_id, turn_id=turn_id))
    if not streamed:
        return set()
    adopted: set[int] = set()
    for index in pending:
        planned, choice = voiced[index]
        if planned.speaker is not None:
            continue  # another voice than the DM's, which the stream spoke in
        if (
            selectors.speech_segment_find(
                campaign_id=campaign_id, narration_seq=narration_seq, segment=index
            )
            is not None
        ):
            continue
        key = spoken_key(planned.text)
        row = next(
            (r for r in streamed if r.engine == choice.engine and spoken_key(r.text) == key),
            None,
        )
        if row is None:
            continue
        streamed.remove(row)
        try:
            with transaction.atomic():
                taken = SpeechSegment.objects.filter(id=row.id, narration_seq__isnull=True).update(
                    narration_seq=narration_seq,
                    segment=index,
                    segments=len(voiced),
                    text=planned.text,
                )
        except IntegrityError:
            continue  # made meanwhile by another run of this task
        if taken:
            adopted.add(index)
    return adopted


def _streamed_delete(*, campaign_id: uuid.UUID | str, turn_id: str) -> int:
    """Delete the turn's streamed sentences no narration adopted, and their files."""
    deleted = 0
    for row in selectors.speech_streamed_of(campaign_id=campaign_id, turn_id=turn_id):
        row.delete()  # its file goes once this commits (receivers.delete_speech_file)
        deleted += 1
    return deleted


def turn_speech_discard(*, campaign_id: uuid.UUID | str, turn_id: str) -> int:
    """A turn that failed: what was spoken for it as it streamed is deleted (the room was
    told by its `turn_failed`). Returns how many sentences went."""
    _turn_stream_close(campaign_id=campaign_id, turn_id=turn_id)
    return _streamed_delete(campaign_id=campaign_id, turn_id=turn_id)


def streaming_swept(*, campaign_id: uuid.UUID | str) -> int:
    """Delete streamed sentences of turns that never ended in a narration or a failure
    (a worker that died, a turn answered by another), older than
    VOICE_STREAM_ORPHAN_SECONDS."""
    before = timezone.now() - timedelta(seconds=settings.VOICE_STREAM_ORPHAN_SECONDS)
    deleted = 0
    for row in selectors.speech_streamed_older(campaign_id=campaign_id, before=before):
        row.delete()
        deleted += 1
    return deleted


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


async def asentence_queue(
    *, campaign_id: uuid.UUID | str, turn_id: str, segment: int, text: str
) -> None:
    """Queue one whole sentence of the streaming narration on the voice worker (the
    `voice` queue, never the turns'), from the turn's coroutine, without blocking it."""
    from rpgai.aio import db, in_sync_caller, io
    from rpgai.tasks import enqueue

    from .tasks import speak_sentence

    kwargs = {
        "campaign_id": str(campaign_id),
        "turn_id": turn_id,
        "segment": segment,
        "text": text,
    }
    await io(sentence_queued, campaign_id=campaign_id, turn_id=turn_id)
    try:
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            await io(enqueue, speak_sentence, **kwargs)  # a Redis round trip
        elif in_sync_caller():
            # A sync caller (a command, a test) runs the turn on its own thread: so does
            # the sentence, before the turn goes on.
            await db(speak_sentence.run, **kwargs)
        else:
            enqueue(speak_sentence, **kwargs)  # a thread of the server's loop
    except Exception:
        log.exception("sentence %s of turn %s could not be queued", segment, turn_id)
        await io(_count_up, _stream_key(campaign_id, turn_id, "done"))
