from typing import Any

from rpgai.tasks import enqueue


def queue_turn_after_actions(sender: Any, campaign_id: Any, events: list[Any], **kwargs: Any) -> None:
    """A committed player action means the DM owes the table an answer."""
    if any(event.type == "player_action" for event in events):
        from .tasks import run_turn

        enqueue(run_turn, campaign_id=str(campaign_id))
