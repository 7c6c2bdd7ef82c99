"""The `dm_audio_ready` event type (CONTRACTS §1), registered by the voice app.

One event per spoken segment of a narration, in segment order. `segment` (0-based) and
`segments` (how many the narration has) let the room play them in order as they come;
`speaker` is the entity whose voice spoke it (null for the DM) and `text` what it says.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, model_validator

from campaigns.events import FoldedEvent, Payload, event_type


class DmAudioReady(Payload):
    narration_seq: int = Field(ge=1)
    url: str = Field(min_length=1, max_length=500)
    voice_id: str = Field(min_length=1, max_length=120)
    duration_ms: int = Field(ge=0)
    segment: int = Field(default=0, ge=0)
    segments: int = Field(default=1, ge=1, le=1000)
    speaker: uuid.UUID | None = None
    text: str = Field(default="", max_length=4000)

    @model_validator(mode="after")
    def _segment_in_range(self) -> DmAudioReady:
        if self.segment >= self.segments:
            raise ValueError(f"segment {self.segment} out of {self.segments}")
        return self

    def dedupe_key(self) -> str:
        # A retried synthesis task appends each segment once.
        return f"audio:{self.narration_seq}:{self.segment}"


@event_type("dm_audio_ready", DmAudioReady)
def _dm_audio_ready(state: dict[str, Any], event: FoldedEvent) -> None:
    # Audio changes nothing in the story; the log keeps it, the state does not.
    pass
