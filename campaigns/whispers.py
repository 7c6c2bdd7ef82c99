"""Whispers: a few words only some of the table may read (CONTRACTS §1 visibility, §3
`client.whisper`).

A whisper is a `whisper` event in the log, visible to its sender, its recipient and the
campaign's GMs (who see everything). `to` is:
- `gm`: the GMs only (and the sender);
- `dm`: the AI Dungeon Master; the room shows it to the sender and the GMs only, and the
  DM reads it in its prompt (as any event of the log) as a secret of that player;
- a member's user id: that member (a GM whispering to a player, or player to player).

The DM whispers too: its `narrate_private` tool (campaigns.tools) appends a `whisper`
with actor kind `dm`, `from_user_id` null and `to` the one player who perceives
something, visible to that player (and the GMs) only.

Whispers do not change the shared state: the reducer keeps, in the fold's `hidden` part
(which a player's snapshot never carries), who was told what, so the DM's prompt and
the GM can know who knows a secret.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, field_validator

from rpgai.errors import DomainError

from . import selectors, services
from .events import FoldedEvent, NewEvent, Payload, Visibility, event_type
from .models import Event, Membership

WHISPER_TEXT_MAX = 2000
HIDDEN_WHISPERS_KEPT = 50  # the fold keeps the latest few; the log keeps them all


class WhisperInvalid(DomainError):
    code = "invalid_message"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (PostgreSQL refuses NUL in text and jsonb; a lone
    surrogate cannot be encoded), or None."""
    if "\x00" in text:
        return "text must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (no lone surrogates)"
    return None


class Whisper(Payload):
    to: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=WHISPER_TEXT_MAX)
    # Null for the DM's private narration (actor kind `dm`).
    from_user_id: uuid.UUID | None = None
    to_user_id: uuid.UUID | None = None

    @field_validator("text")
    @classmethod
    def _text_is_storable(cls, value: str) -> str:
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("to")
    @classmethod
    def _to_is_known(cls, value: str) -> str:
        if value in ("gm", "dm"):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("to is gm, dm or a member's user id") from None


@event_type("whisper", Whisper)
def _whisper(state: dict[str, Any], event: FoldedEvent) -> None:
    told = state.setdefault("hidden", {}).setdefault("whispers", [])
    told.append(
        {
            "seq": event.seq,
            "from": event.payload.get("from_user_id")
            or ("dm" if event.actor_kind == "dm" else None),
            "to": event.payload.get("to_user_id") or event.payload["to"],
        }
    )
    del told[:-HIDDEN_WHISPERS_KEPT]


def whisper_visibility(
    *, sender_id: uuid.UUID | str, to_user_id: uuid.UUID | str | None
) -> Visibility:
    users = [str(sender_id)]
    if to_user_id is not None and str(to_user_id) not in users:
        users.append(str(to_user_id))
    return {"kind": "users", "user_ids": users}


def whisper_send(
    *,
    membership: Membership,
    to: str,
    text: str,
    request_id: str = "",
) -> Event:
    """Append a whisper from `membership`'s user to `to` (`gm`, `dm` or a member's id)."""
    if not isinstance(text, str) or not text.strip():
        raise WhisperInvalid("a whisper needs some text")
    text = text.strip()
    problem = text_problem(text)
    if problem:
        raise WhisperInvalid(problem)
    if len(text) > WHISPER_TEXT_MAX:
        raise WhisperInvalid(f"a whisper has at most {WHISPER_TEXT_MAX} characters")
    to = (to or "").strip() if isinstance(to, str) else ""
    to_user_id: str | None = None
    if to not in ("gm", "dm"):
        try:
            to_user_id = str(uuid.UUID(to))
        except ValueError:
            raise WhisperInvalid("to is gm, dm or a member's user id") from None
        if to_user_id == str(membership.user_id):
            raise WhisperInvalid("whisper to someone else")
        if selectors.membership_get(campaign_id=membership.campaign_id, user_id=to_user_id) is None:
            raise WhisperInvalid("to must be a member of this campaign")
        to = to_user_id
    payload: dict[str, Any] = {
        "to": to,
        "text": text,
        "from_user_id": str(membership.user_id),
    }
    if to_user_id is not None:
        payload["to_user_id"] = to_user_id
    [event] = services.events_append(
        campaign_id=membership.campaign_id,
        request_id=request_id,
        # Like actions: a sender kicked a moment ago (socket not closed yet) is refused.
        precondition=services.still_a_member(
            campaign_id=membership.campaign_id, user_id=membership.user_id
        ),
        events=[
            NewEvent(
                "whisper",
                payload,
                "gm" if membership.is_gm else "player",
                membership.user_id,
                whisper_visibility(sender_id=membership.user_id, to_user_id=to_user_id),
            )
        ],
    )
    return event
