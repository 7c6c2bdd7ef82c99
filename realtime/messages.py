"""Client-to-server WebSocket messages (CONTRACTS §3), validated by pydantic."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Hello(ClientMessage):
    type: Literal["client.hello"]
    # Strict: `true` or "5" is a client bug to report, not a number to guess.
    last_seq: StrictInt = Field(default=0, ge=0)


class PlayerAction(ClientMessage):
    type: Literal["client.player_action"]
    action_id: uuid.UUID
    text: str = Field(min_length=1, max_length=2000)


class Whisper(ClientMessage):
    type: Literal["client.whisper"]
    to: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=2000)


class Roll(ClientMessage):
    type: Literal["client.roll"]
    formula: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="", max_length=500)
    # The target (told with the result only) and whether only the roller and the GMs see
    # it (CONTRACTS §7 "Rolls carry their target"). The DC is checked by
    # `campaigns.tools.roll_make`, whose refusal is in plain words for the room.
    dc: Any = None
    private: StrictBool = False
    # The client's own id for this roll (optional): echoed in its `server.ack` and in an
    # `error` about it, so that the page can tell which roll was refused.
    action_id: uuid.UUID | None = None
    # The check the DM asked this player to roll (a `roll_requested` with `for_user_id`):
    # its formula, reason and DC are the request's.
    roll_id: uuid.UUID | None = None


class GmDirection(ClientMessage):
    """A GM's line to the DM (CONTRACTS §7): `secret` keeps it to the GMs, `now` asks the
    DM to narrate it at once instead of with the next turn."""

    type: Literal["client.gm_direction"]
    text: str = Field(min_length=1, max_length=2000)
    secret: StrictBool = False
    now: StrictBool = True


class XCard(ClientMessage):
    """The X-card (CONTRACTS §7): no fields. Anonymous: the event records no one."""

    type: Literal["client.x_card"]


class Ping(ClientMessage):
    type: Literal["client.ping"]


MESSAGE_MODELS: dict[str, type[ClientMessage]] = {
    "client.hello": Hello,
    "client.player_action": PlayerAction,
    "client.ping": Ping,
    "client.whisper": Whisper,
    "client.roll": Roll,
    "client.gm_direction": GmDirection,
    "client.x_card": XCard,
}
