"""Billing's hold on every DM model call, through the orchestrator's two signals
(orchestrator/signals.py): reserve before the call (raising BudgetExceeded refuses it,
and the turn ends with `turn_failed` `budget_exceeded` without calling the model, in
plain words for the table, with the figures in a GM-only `budget_refused` beside it),
settle after it with the usage the adapter reported, release when it failed."""

from __future__ import annotations

from typing import Any

from .prices import model_cost
from .services import budget_reserve, reservation_release, usage_settle


def _key(turn_id: Any, purpose: str) -> str:
    return f"turn:{turn_id}:{purpose}"[:100]


def _charged_user(user_ids: list[str] | None) -> str | None:
    # A turn answering several players is charged to the first whose action it answers.
    return user_ids[0] if user_ids else None


def reserve_model_call(
    sender: Any,
    *,
    campaign_id: str,
    turn_id: str,
    purpose: str,
    model: str,
    user_ids: list[str],
    input_tokens: int,
    max_tokens: int,
    **kwargs: Any,
) -> None:
    # The worst case is bounded: the prompt as counted, plus every token it may write.
    estimate = model_cost(model=model, input_tokens=input_tokens, output_tokens=max_tokens)
    budget_reserve(
        campaign_id=campaign_id,
        key=_key(turn_id, purpose),
        purpose=purpose,
        amount_usd=estimate,
        user_id=_charged_user(user_ids),
    )


def settle_model_call(
    sender: Any,
    *,
    campaign_id: str,
    turn_id: str,
    purpose: str,
    user_ids: list[str],
    usage: Any,
    request_id: str = "",
    **kwargs: Any,
) -> None:
    key = _key(turn_id, purpose)
    if usage is None:
        reservation_release(key=key)
        return
    usage_settle(
        key=key,
        campaign_id=campaign_id,
        user_id=_charged_user(user_ids),
        provider=usage.provider,
        model=usage.model,
        purpose=usage.purpose or purpose,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        estimated=usage.estimated,
        request_id=request_id,
        turn_id=turn_id,
    )
