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


def queue_turn_after_actions(
    sender: Any, campaign_id: Any, events: list[Any], **kwargs: Any
) -> None:
    """A committed player action, a GM's direction to narrate now, or a GM's retry of the
    last narration means the DM owes the table an answer."""
    if getattr(_local, "deferred", False):
        return
    if any(
        event.type in ("player_action", "dm_narration_retracted")
        or (event.type == "gm_direction" and (event.payload or {}).get("now", True))
        for event in events
    ):
        turn_request(campaign_id=campaign_id)
