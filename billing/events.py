"""Billing's event types: notices of money, for GMs.

`budget_warning`: the campaign's spend over the last 24 hours reached a threshold of its
daily cap. Appended with visibility `{"kind": "gm"}`: players never see it.

`budget_refused`: a call was refused because it could pass a hard cap, with the figures
that the public `turn_failed` beside it leaves out (CONTRACTS §7: players are told no
money). Visibility `{"kind": "gm"}`, whoever's cap it was: the campaign's, or a player's
own allowance (older logs may hold one with `{"kind": "users"}` naming that player; since
issue 20 no player receives a money figure, not even of their own allowance). A later
`turn_reopened` (campaigns) reads `scope`, `user_id` and `call_usd` from it to tell when a
budget change made room for the refused call.

Neither changes anything in the story, so their reducers leave the state alone.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

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


class BudgetRefused(Payload):
    scope: Literal["campaign", "user"]  # whose cap: the campaign's, or a user's allowance
    turn_id: uuid.UUID | None = None
    purpose: str = Field(default="", max_length=40)  # dm_turn, repair, ...
    user_id: uuid.UUID | None = None  # whose allowance (scope `user`)
    spent_usd: str = Field(max_length=40)  # settled in the window
    reserved_usd: str = Field(max_length=40)  # held for calls in flight
    cap_usd: str = Field(max_length=40)
    call_usd: str = Field(max_length=40)  # the refused call's worst case
    window_hours: int = Field(default=24, ge=1)
    detail: str = Field(default="", max_length=500)


@event_type("budget_refused", BudgetRefused)
def _budget_refused(state: dict[str, Any], event: FoldedEvent) -> None:
    pass
