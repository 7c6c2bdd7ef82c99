"""Voice profiles (who speaks how) and the segments of speech made from narrations."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from .engines import PITCH_MAX, PITCH_MIN, SPEED_MAX, SPEED_MIN


class VoiceProfile(models.Model):
    """How the DM (no entity) or one entity of a campaign sounds. Set by the GM in admin;
    blank engine and voice fall back to TTS_PROVIDER and the engine's default voice."""

    class Engine(models.TextChoices):
        DEFAULT = "", "Default (TTS_PROVIDER)"
        PIPER = "piper", "Piper (local)"
        OPENAI = "openai", "OpenAI-compatible speech"
        NONE = "none", "Silent"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="voice_profiles"
    )
    # An entity id of the campaign's state (an NPC, a creature); blank for the DM's voice.
    entity_id = models.UUIDField(
        null=True, blank=True, help_text="Blank: the DM's own voice. Else the NPC's entity id."
    )
    label = models.CharField(
        max_length=80, blank=True, default="", help_text="For you: who this is."
    )
    engine = models.CharField(max_length=10, blank=True, default="", choices=Engine.choices)
    voice = models.CharField(
        max_length=80,
        blank=True,
        default="",
        help_text="Piper: a voice name (en_US-joe-medium). OpenAI: alloy, onyx, nova... "
        "Blank: the engine's default.",
    )
    speed = models.FloatField(
        default=1.0, validators=[MinValueValidator(SPEED_MIN), MaxValueValidator(SPEED_MAX)]
    )
    pitch = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(PITCH_MIN), MaxValueValidator(PITCH_MAX)],
        help_text="Piper only: below 1 deeper, above 1 higher.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "entity_id"], name="voice_profile_unique_entity"
            ),
            models.UniqueConstraint(
                fields=["campaign"],
                condition=models.Q(entity_id__isnull=True),
                name="voice_profile_unique_dm",
            ),
            models.CheckConstraint(
                condition=models.Q(speed__gte=SPEED_MIN, speed__lte=SPEED_MAX),
                name="voice_profile_speed_range",
            ),
            models.CheckConstraint(
                condition=models.Q(pitch__gte=PITCH_MIN, pitch__lte=PITCH_MAX),
                name="voice_profile_pitch_range",
            ),
        ]
        ordering = ["campaign", "entity_id"]

    def __str__(self) -> str:
        who = self.label or (f"entity {self.entity_id}" if self.entity_id else "the DM")
        return f"voice of {who}"


class SpeechSegment(models.Model):
    """One spoken segment of a narration: its audio file in storage and what it cost in
    characters (what billing will count, issue 6). The `dm_audio_ready` event points
    here; the audio view serves the file to the campaign's members only.

    A sentence spoken while its narration still streams (issue 23) is a row of its turn
    (`turn_id`) with no `narration_seq` yet, `segment` its place in the stream. When the
    narration commits, the rows whose text it kept are adopted (given the narration's seq
    and their place in it: the same row, so the same URL, spoken and billed once); the
    others are deleted with their files."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="speech_segments"
    )
    # Null while the narration streams: the row belongs to its turn only.
    narration_seq = models.PositiveIntegerField(null=True, blank=True)
    turn_id = models.CharField(max_length=64, blank=True, default="")
    segment = models.PositiveIntegerField()
    segments = models.PositiveIntegerField()
    speaker = models.UUIDField(null=True, blank=True)
    text = models.TextField()
    characters = models.PositiveIntegerField()
    engine = models.CharField(max_length=10)
    voice_id = models.CharField(max_length=120)
    storage_name = models.CharField(max_length=300)
    size_bytes = models.PositiveIntegerField()
    duration_ms = models.PositiveIntegerField()
    synthesis_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "narration_seq", "segment"], name="speech_segment_unique"
            ),
            models.UniqueConstraint(
                fields=["campaign", "turn_id", "segment"],
                condition=models.Q(narration_seq__isnull=True),
                name="speech_segment_streamed_unique",
            ),
        ]
        indexes = [models.Index(fields=["campaign", "created_at"], name="speech_campaign_time")]
        ordering = ["campaign", "narration_seq", "segment"]

    def __str__(self) -> str:
        if self.narration_seq is None:
            return f"turn {self.turn_id[:8]} sentence {self.segment + 1} (streaming)"
        return f"narration #{self.narration_seq} segment {self.segment + 1}/{self.segments}"
