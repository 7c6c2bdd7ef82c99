"""The `budget_warning` event type, registered by billing: the GM's notice that the
campaign's spend over the last 24 hours reached a threshold of its daily cap.

Appended with visibility `{"kind": "gm"}`: players never see it. It changes nothing in
the story, so its reducer leaves the state alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from campaigns.events import FoldedEvent, Payload, event_type


class BudgetWarning(Payload):
    percent: int = Field(ge=0, le=1000)  # the threshold reached (80, 100)
    spent_usd: str = Field(max_length=40)  # decimal strings, CONTRACTS §0
    daily_cap_usd: str = Field(max_length=40)
    window_hours: int = Field(default=24, ge=1)
    hard_stop: bool
    degraded: bool = False  # the campaign now runs degraded (cheaper model, no voice, ...)
    detail: str = Field(default="", max_length=500)


@event_type("budget_warning", BudgetWarning)
def _budget_warning(state: dict[str, Any], event: FoldedEvent) -> None:
    pass
