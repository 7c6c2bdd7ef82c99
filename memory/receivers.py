from typing import Any

from rpgai.tasks import enqueue

# A finished turn (answered or failed) is when the log has grown by a whole turn.
TURN_END_TYPES = frozenset({"dm_narration", "turn_failed"})
# Play without DM turns (the GM runs the table) is remembered every this many events.
EVENTS_BETWEEN_RUNS = 40


def queue_memory_after_turns(
    sender: Any, campaign_id: Any, events: list[Any], **kwargs: Any
) -> None:
    """After a turn, or every EVENTS_BETWEEN_RUNS events without one: summarize what
    passed the budget, and let NPCs remember it."""
    crossed = bool(events) and (
        (events[0].seq - 1) // EVENTS_BETWEEN_RUNS != events[-1].seq // EVENTS_BETWEEN_RUNS
    )
    if not crossed and not any(event.type in TURN_END_TYPES for event in events):
        return
    from .tasks import extract_npc_memories, summarize_campaign

    enqueue(summarize_campaign, campaign_id=str(campaign_id))
    enqueue(extract_npc_memories, campaign_id=str(campaign_id))
