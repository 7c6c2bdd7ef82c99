"""Client-to-server WebSocket messages (CONTRACTS §3), validated by pydantic."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


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


class Ping(ClientMessage):
    type: Literal["client.ping"]


MESSAGE_MODELS: dict[str, type[ClientMessage]] = {
    "client.hello": Hello,
    "client.player_action": PlayerAction,
    "client.ping": Ping,
    "client.whisper": Whisper,
    "client.roll": Roll,
}
