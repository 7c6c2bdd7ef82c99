"""The one way to call a model: `model_call` (and `model_answer`, which parses and repairs).

Every caller (each step of a DM turn, summaries, anything later) goes through here:

    throttle → reserve the worst case → call (streamed when a sink is given)
             → settle what it really cost, or release the reservation

The reservation is settled or released whatever happens: a model error, a bug, a
cancelled coroutine (a worker shutting down). Billing is called directly, not through
signals: a receiver that silently disconnected would make calls free.

`model_call` is a coroutine; its database work (billing) runs through `rpgai.aio.db`.
Sync callers use `model_call_sync`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from billing.prices import model_cost
from billing.services import budget_reserve, reservation_release, usage_settle
from realtime.throttle import amodel_call_allowed
from rpgai import metrics, tracing
from rpgai.aio import db, run_sync
from rpgai.errors import DomainError

from .adapters import ModelAdapter, ModelError, ModelReply, ModelRequest, StreamSink
from .tokens import count_message_tokens

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who a call is for: what billing charges and the rate limit counts."""

    campaign_id: uuid.UUID | str
    # The turn (or summary) the call belongs to: one reservation per call_id and purpose.
    call_id: str
    # Whose actions it answers; the first pays from their own allowance too.
    user_ids: Sequence[str] = ()
    request_id: str = ""

    @property
    def charged_user(self) -> str | None:
        return self.user_ids[0] if self.user_ids else None


def reservation_key(call_id: str, purpose: str) -> str:
    """One reservation per call: a turn makes several calls (its steps, a repair), and a
    turn taken over from a dead worker calls again while the old reservation lives."""
    return f"turn:{call_id}:{purpose}:{uuid.uuid4().hex[:12]}"[:100]


async def model_call(
    adapter: ModelAdapter,
    request: ModelRequest,
    caller: Caller,
    *,
    sink: StreamSink | None = None,
    input_tokens: int | None = None,
    throttle: bool = True,
) -> ModelReply:
    """One model call, paid for: raises ModelError (the call failed or was throttled) or
    BudgetExceeded (billing refused it; nothing was called). `throttle=False` for the later
    calls of one piece of work (a turn's next step, a repair): the rate limit counts turns,
    and a turn that has begun is not cut off halfway by it."""
    authors = list(dict.fromkeys(caller.user_ids))
    if throttle and not await amodel_call_allowed(
        caller.campaign_id, authors[0] if len(authors) == 1 else None
    ):
        raise ModelError(
            "too many DM turns in the last minute; wait a moment and act again",
            code="rate_limited",
        )
    key = reservation_key(caller.call_id, request.purpose)
    worst_case = model_cost(
        model=adapter.model,
        input_tokens=input_tokens
        if input_tokens is not None
        else count_message_tokens(request.messages),
        output_tokens=request.max_tokens,
    )
    await db(
        budget_reserve,
        campaign_id=caller.campaign_id,
        key=key,
        purpose=request.purpose,
        amount_usd=worst_case,
        user_id=caller.charged_user,
    )
    try:
        with tracing.span(
            "model.call",
            campaign_id=caller.campaign_id,
            turn_id=caller.call_id,
            purpose=request.purpose,
            provider=adapter.provider,
            model=adapter.model,
            streamed=sink is not None,
        ) as span:
            reply = await (
                adapter.stream(request, sink) if sink is not None else adapter.complete(request)
            )
            span.set_attribute("rpgai.input_tokens", reply.usage.input_tokens)
            span.set_attribute("rpgai.output_tokens", reply.usage.output_tokens)
            span.set_attribute("rpgai.attempts", reply.attempts)
            if "output_shape" in reply.extra:
                span.set_attribute("rpgai.output_shape", reply.extra["output_shape"])
    except BaseException as exc:
        # A model error, a bug, a cancellation: the money set aside comes back. Shielded,
        # so that a second cancellation cannot skip it.
        code = exc.code if isinstance(exc, ModelError) else "internal_error"
        try:
            await asyncio.shield(db(reservation_release, key=key))
        except Exception:
            log.exception("could not release the reservation %s (it expires)", key)
        metrics.model_call_observed(
            provider=adapter.provider, model=adapter.model, usage=None, error=code
        )
        raise
    await db(
        usage_settle,
        key=key,
        campaign_id=caller.campaign_id,
        user_id=caller.charged_user,
        provider=reply.usage.provider,
        model=reply.usage.model,
        purpose=reply.usage.purpose or request.purpose,
        input_tokens=reply.usage.input_tokens,
        output_tokens=reply.usage.output_tokens,
        estimated=reply.usage.estimated,
        request_id=caller.request_id,
        turn_id=caller.call_id,
    )
    metrics.model_call_observed(
        provider=adapter.provider,
        model=adapter.model,
        usage=reply.usage,
        error=None,
        turn_id=caller.call_id,
    )
    return reply


model_call_sync = run_sync(model_call)


@dataclass
class Answer(Generic[T]):
    """A parsed answer, with every reply it took (one, or two with a repair)."""

    value: T | None  # None: the answer could not be used, even after a repair
    replies: list[ModelReply]
    error: str = ""  # why the last answer could not be used


async def model_answer(
    adapter: ModelAdapter,
    request: ModelRequest,
    caller: Caller,
    *,
    parse: Callable[[str], T],
    repair_messages: Callable[[str, str], list[dict[str, str]]],
    sink: StreamSink | None = None,
    input_tokens: int | None = None,
    throttle: bool = True,
) -> Answer[T]:
    """A call whose answer must parse: on a `ValueError` from `parse`, one repair call
    (purpose `repair`, not streamed) carrying the bad answer and the error; if that is
    unusable too, an Answer with value None (the caller falls back). A failed or refused
    first call raises; a failed or refused repair counts as unusable."""
    reply = await model_call(
        adapter, request, caller, sink=sink, input_tokens=input_tokens, throttle=throttle
    )
    try:
        return Answer(parse(reply.text), [reply])
    except ValueError as exc:
        error = str(exc)
    if reply.finish_reason in ("length", "incomplete"):
        error += " (the answer was cut off at the token limit: write less)"
    log.warning("call %s: the model's answer is invalid (%s); repairing", caller.call_id, error)
    repair = ModelRequest(
        messages=repair_messages(reply.text, error),
        max_tokens=request.max_tokens,
        purpose="repair",
        answer_format=request.answer_format,
        fake_reply=request.fake_reply,
        deadline=request.deadline,
    )
    try:
        repaired = await model_call(adapter, repair, caller, throttle=False)
    except DomainError as exc:  # a ModelError, or billing refused the repair
        log.warning("call %s: the repair call failed (%s)", caller.call_id, exc.detail)
        return Answer(None, [reply], error)
    try:
        return Answer(parse(repaired.text), [reply, repaired])
    except ValueError as exc:
        log.warning("call %s: the repaired answer is invalid too (%s)", caller.call_id, exc)
        return Answer(None, [reply, repaired], str(exc))
