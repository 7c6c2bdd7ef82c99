"""The `summary_created` event type (CONTRACTS §1, extended with `layer`).

A layer-0 summary covers raw events `from_seq..to_seq`; a summary of layer k+1 covers
the consecutive layer-k summaries of its range. The event is the record: the prompt
reads summaries back from the log. The fold keeps nothing of it (a summary changes no
game state), so re-folding a log with or without its summaries gives the same state.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from campaigns.events import FoldedEvent, Payload, event_type

SUMMARY_LAYER_MAX = 8
SUMMARY_TEXT_MAX_CHARS = 8000


class SummaryCreated(Payload):
    from_seq: int = Field(ge=1)
    to_seq: int = Field(ge=1)
    text: str = Field(min_length=1, max_length=SUMMARY_TEXT_MAX_CHARS)
    layer: int = Field(default=0, ge=0, le=SUMMARY_LAYER_MAX)
    # How many events (layer 0) or summaries (higher layers) it was made from.
    sources: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> SummaryCreated:
        if self.to_seq < self.from_seq:
            raise ValueError("to_seq must not be before from_seq")
        return self

    def dedupe_key(self) -> str:
        # Two workers summarizing the same range append it once.
        return f"summary:{self.layer}:{self.from_seq}:{self.to_seq}"


@event_type("summary_created", SummaryCreated)
def _summary_created(state: dict[str, Any], event: FoldedEvent) -> None:
    pass
