import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .scheduler import turn_request

_local = threading.local()


@contextmanager
def turns_deferred() -> Iterator[None]:
    """Actions committed inside do not ask for a turn (the caller runs it itself, as
    `manage.py play` does to print the narration as it streams)."""
    previous = getattr(_local, "deferred", False)
    _local.deferred = True
    try:
        yield
    finally:
        _local.deferred = previous


def asks_for_a_turn(event: Any) -> bool:
    """Whether a committed event means the DM owes the table an answer: a player action,
    a GM's direction to narrate now, a GM's retry of the last narration, a new campaign's
    opening scene, the X-card, a budget change that reopened what the DM stopped on for
    budget (`turn_reopened`), or a campaign brought back from the archive (what was owed
    when it was archived is answered then)."""
    payload = event.payload or {}
    if event.type in ("player_action", "dm_narration_retracted", "x_card", "turn_reopened"):
        return True
    if event.type == "gm_direction":
        return bool(payload.get("now", True))
    if event.type == "campaign_created":
        return bool(payload.get("opening"))
    if event.type == "campaign_updated":
        return (payload.get("changes") or {}).get("archived") is False
    return False


def queue_turn_after_actions(
    sender: Any, campaign_id: Any, events: list[Any], **kwargs: Any
) -> None:
    """Ask for the campaign's turn when a committed event owes the table an answer (the
    turn re-checks from the log what is owed: asking twice, or for a fork's copy of an
    opening already narrated, runs nothing)."""
    if getattr(_local, "deferred", False):
        return
    if any(asks_for_a_turn(event) for event in events):
        turn_request(campaign_id=campaign_id)
