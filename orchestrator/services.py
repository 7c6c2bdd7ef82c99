"""DM turns: who owes the table an answer, one turn at a time per campaign.

A turn answers every player action since the last narration. It builds the prompt,
calls the campaign's model (streaming the narration to the room), parses the answer
(one repair, then a fallback), and hands the tool calls and the narration to
`campaigns.tools.turn_commit`, which appends them in ONE transaction: a turn is all or
nothing. A failed model call ends the turn with `turn_failed` and a code the room shows.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.selectors import budget_model_choice
from billing.services import BudgetExceeded
from campaigns.events import NewEvent
from campaigns.selectors import campaign_get, player_actions_between
from campaigns.services import events_append
from campaigns.tools import ToolRejection, turn_commit
from realtime.throttle import model_call_allowed
from rpgai.errors import Conflict, DomainError, NotFound

from . import selectors
from .adapters import (
    PROVIDERS,
    ModelAdapter,
    ModelError,
    ModelReply,
    ModelRequest,
    Usage,
    adapter_for,
)
from .models import DMSettings, TurnLock
from .prompt import Prompt, TurnContext, prompt_build, repair_messages
from .rounds import round_hold
from .schema import AnswerInvalid, DMAnswer, answer_parse
from .signals import model_call_finished, model_call_starting
from .streaming import NarrationStream
from .tokens import count_message_tokens

log = logging.getLogger(__name__)

MAX_FOLLOW_UP_TURNS = 20
FALLBACK_NARRATION = (
    "The Dungeon Master falls silent for a moment, lost in thought, and the scene holds "
    "its breath. (The DM's answer could not be used this time; nothing has changed. "
    "Try again, or try something else.)"
)
FALLBACK_OPTIONS = ["Try the same thing again", "Look around", "Wait and listen"]


# --- Per-campaign model settings ---------------------------------------------------------


def dm_settings_check(*, provider: str = "", model: str = "") -> tuple[str, str]:
    """The provider and model, stripped, if a GM may choose them; else a DomainError."""
    provider = (provider or "").strip()
    model = (model or "").strip()
    if provider and provider not in PROVIDERS:
        raise DomainError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    if len(model) > 100:
        raise DomainError("a model name has at most 100 characters")
    allowed = selectors.dm_models_allowed()
    if model and model not in allowed:
        raise DomainError(
            f"That model is not offered on this server. Choose one of: {', '.join(allowed)}.",
            code="model_not_allowed",
        )
    return provider, model


def dm_settings_set(
    *, campaign_id: uuid.UUID | str, provider: str = "", model: str = ""
) -> DMSettings:
    """Choose the campaign's DM provider and model (blank: the settings' defaults).

    The operator's key pays for the model, so a GM picks only among the models the
    operator allows (`dm_models_allowed`); blank means DM_MODEL, always allowed."""
    provider, model = dm_settings_check(provider=provider, model=model)
    if campaign_get(campaign_id=campaign_id) is None:
        raise NotFound("no such campaign")
    row, _ = DMSettings.objects.update_or_create(
        campaign_id=campaign_id, defaults={"provider": provider, "model": model}
    )
    return row


# --- The lock: one turn at a time per campaign, across processes ---------------------------


def turn_lock_acquire(*, campaign_id: uuid.UUID | str, holder: str) -> bool:
    now = timezone.now()
    try:
        with transaction.atomic():
            TurnLock.objects.get_or_create(campaign_id=campaign_id)
    except IntegrityError:
        pass  # another process made the row first
    stale = now - timedelta(seconds=settings.TURN_LOCK_SECONDS)
    taken = (
        TurnLock.objects.filter(campaign_id=campaign_id)
        # A task redelivered after its worker died holds the lock under its own task id:
        # it takes it back at once instead of waiting for the lock to go stale.
        .filter(Q(holder="") | Q(acquired_at__lt=stale) | Q(holder=holder))
        .update(holder=holder, acquired_at=now)
    )
    return taken == 1


def turn_lock_release(*, campaign_id: uuid.UUID | str, holder: str) -> None:
    TurnLock.objects.filter(campaign_id=campaign_id, holder=holder).update(
        holder="", acquired_at=None
    )


def turn_lock_stale_in(*, campaign_id: uuid.UUID | str) -> float | None:
    """Seconds until the campaign's turn lock may be taken over; None when it is free."""
    lock = TurnLock.objects.filter(campaign_id=campaign_id).exclude(holder="").first()
    if lock is None or lock.acquired_at is None:
        return None
    expires = lock.acquired_at + timedelta(seconds=settings.TURN_LOCK_SECONDS)
    return max(0.0, (expires - timezone.now()).total_seconds())


def turns_run_pending(
    *,
    campaign_id: uuid.UUID | str,
    max_turns: int = MAX_FOLLOW_UP_TURNS,
    on_delta: Callable[[str], None] | None = None,
    holder: str | None = None,
) -> int:
    """Run turns until no action is owed an answer; return how many ran.

    Only the lock holder runs turns. It re-checks after releasing, so an action that
    arrived during its turn (whose own task found the lock taken and gave up) still
    gets exactly one follow-up turn, which answers every action that arrived meanwhile.
    After `max_turns` with actions still owed, a new task is queued for the rest.
    """
    holder = holder or uuid.uuid4().hex
    ran = 0
    while selectors.turn_owed(campaign_id=campaign_id) is not None:
        if round_hold(campaign_id=campaign_id):
            break  # a `rounds` campaign waits for its players or its timer (rounds.py)
        if ran >= max_turns:
            from rpgai.tasks import enqueue

            from .tasks import run_turn

            enqueue(run_turn, campaign_id=str(campaign_id))
            break
        if not turn_lock_acquire(campaign_id=campaign_id, holder=holder):
            break  # the holder re-checks after its turn
        try:
            if turn_run(campaign_id=campaign_id, on_delta=on_delta) is not None:
                ran += 1
        finally:
            turn_lock_release(campaign_id=campaign_id, holder=holder)
    return ran


# --- One turn ------------------------------------------------------------------------------


@dataclass
class TurnOutcome:
    turn_id: str
    through_seq: int
    events: list[Any] = field(default_factory=list)
    fallback: bool = False
    failed_code: str | None = None
    usage: list[Usage] = field(default_factory=list)
    rejections: list[ToolRejection] = field(default_factory=list)
    prompt_tokens: int = 0
    first_delta_at: float | None = None


@dataclass
class _Turn:
    """What one running turn knows; its helpers append to `outcome`."""

    campaign_id: uuid.UUID | str
    context: TurnContext
    outcome: TurnOutcome
    request_id: str
    deadline: float

    def call(
        self,
        adapter: ModelAdapter,
        messages: list[dict[str, str]],
        *,
        purpose: str,
        stream: NarrationStream | None = None,
        input_tokens: int | None = None,
    ) -> ModelReply:
        request = ModelRequest(
            messages=messages,
            max_tokens=settings.DM_MAX_TOKENS,
            purpose=purpose,
            context=self.context,
            deadline=self.deadline,
        )
        signal_args = {
            "campaign_id": str(self.campaign_id),
            "turn_id": self.outcome.turn_id,
            "request_id": self.request_id,
            "provider": adapter.provider,
            "model": adapter.model,
            "purpose": purpose,
            # Whose actions this turn answers (billing keeps spend per user too).
            "user_ids": list(dict.fromkeys(a.user_id for a in self.context.actions if a.user_id)),
        }
        authors = signal_args["user_ids"]
        if not model_call_allowed(self.campaign_id, authors[0] if len(authors) == 1 else None):
            raise ModelError(
                "too many DM turns in the last minute; wait a moment and act again",
                code="rate_limited",
            )
        model_call_starting.send(
            sender=TurnOutcome,
            input_tokens=input_tokens
            if input_tokens is not None
            else count_message_tokens(messages),
            max_tokens=settings.DM_MAX_TOKENS,
            **signal_args,
        )
        try:
            reply = (
                adapter.stream(request, stream) if stream is not None else adapter.complete(request)
            )
        except ModelError as exc:
            model_call_finished.send(sender=TurnOutcome, usage=None, error=exc.code, **signal_args)
            raise
        except BaseException:
            # A bug or a time limit: billing still releases what it reserved for the call.
            model_call_finished.send_robust(
                sender=TurnOutcome, usage=None, error="internal_error", **signal_args
            )
            raise
        self.outcome.usage.append(reply.usage)
        model_call_finished.send(sender=TurnOutcome, usage=reply.usage, error=None, **signal_args)
        return reply


def turn_run(
    *,
    campaign_id: uuid.UUID | str,
    request_id: str = "",
    on_delta: Callable[[str], None] | None = None,
) -> TurnOutcome | None:
    """One DM turn answering every player action not yet answered; None if none is owed
    (or another turn answered them first)."""
    owed = selectors.turn_owed(campaign_id=campaign_id)
    if owed is None:
        return None
    answered, through = owed
    context = selectors.turn_context_get(
        campaign_id=campaign_id, answered_seq=answered, through_seq=through
    )
    turn = _Turn(
        campaign_id=campaign_id,
        context=context,
        outcome=TurnOutcome(turn_id=str(uuid.uuid4()), through_seq=through),
        request_id=request_id or _last_request_id(campaign_id, through),
        deadline=time.monotonic() + settings.DM_TURN_DEADLINE_SECONDS,
    )
    try:
        return _turn_play(turn, on_delta)
    except Conflict:
        log.info("turn for campaign %s through seq %s was already answered", campaign_id, through)
        return None
    except DatabaseError:
        raise  # nothing was appended; the task retries the whole turn
    except Exception as exc:
        # A bug or a time limit must not leave the actions waiting forever.
        code = "turn_timeout" if isinstance(exc, SoftTimeLimitExceeded) else "internal_error"
        try:
            _turn_fail(turn, code, "the DM could not finish this turn; try again")
        except Exception:
            log.exception("turn %s: could not record its failure", turn.outcome.turn_id)
        raise


def _last_request_id(campaign_id: uuid.UUID | str, through: int) -> str:
    """The request id of the action that closes the turn: its logs follow the turn."""
    actions = player_actions_between(
        campaign_id=campaign_id, after_seq=through - 1, through_seq=through
    )
    return actions[-1].request_id if actions else ""


def _turn_play(turn: _Turn, on_delta: Callable[[str], None] | None) -> TurnOutcome:
    config = selectors.dm_config_get(campaign_id=turn.campaign_id)
    # Past its cap without hard stop, a campaign may be played by a cheaper model.
    provider, model = budget_model_choice(
        campaign_id=turn.campaign_id, provider=config.provider, model=config.model
    )
    try:
        adapter = adapter_for(provider=provider, model=model)
    except ModelError as exc:
        return _turn_fail(turn, exc.code, exc.detail)
    prompt = prompt_build(context=turn.context, budget=settings.DM_PROMPT_TOKEN_BUDGET)
    turn.outcome.prompt_tokens = prompt.tokens

    stream = None
    if settings.DM_STREAM:
        stream = NarrationStream(
            campaign_id=turn.campaign_id, turn_id=turn.outcome.turn_id, on_delta=on_delta
        )
    try:
        reply = turn.call(
            adapter, prompt.messages, purpose="dm_turn", stream=stream, input_tokens=prompt.tokens
        )
    except DomainError as exc:  # a ModelError, or refused before the call (a budget, say)
        return _turn_fail(turn, exc.code, exc.detail, notices=_failure_notices(exc, turn))
    finally:
        if stream is not None:
            stream.close()  # the last deltas go before the narration event
            turn.outcome.first_delta_at = stream.first_delta_at

    answer = _answer_or_repair(turn, adapter, prompt, reply)
    if answer is None:
        answer = DMAnswer(
            narration=FALLBACK_NARRATION, options=_fallback_options(turn.context), tool_calls=[]
        )
        turn.outcome.fallback = True
    result = turn_commit(
        campaign_id=turn.campaign_id,
        turn_id=turn.outcome.turn_id,
        narration=answer.narration,
        options=answer.options,
        tool_calls=answer.tool_calls_as_dicts(),
        through_seq=turn.outcome.through_seq,
        fallback=turn.outcome.fallback,
        request_id=turn.request_id,
        actor_kind="dm",
    )
    turn.outcome.events = result.events
    turn.outcome.rejections = result.rejections
    return turn.outcome


def _answer_or_repair(
    turn: _Turn, adapter: ModelAdapter, prompt: Prompt, reply: ModelReply
) -> DMAnswer | None:
    """The parsed answer; else one repair carrying the error; else None (fallback)."""
    try:
        return answer_parse(reply.text)
    except AnswerInvalid as exc:
        error = str(exc)
    if reply.finish_reason in ("length", "incomplete"):
        error += " (the answer was cut off at the token limit: write less)"
    log.warning(
        "turn %s: the model's answer is invalid (%s); repairing", turn.outcome.turn_id, error
    )
    try:
        repaired = turn.call(
            adapter,
            repair_messages(prompt=prompt, bad_answer=reply.text, error=error),
            purpose="repair",
        )
    except DomainError as exc:
        log.warning("turn %s: the repair call failed (%s)", turn.outcome.turn_id, exc.detail)
        return None
    try:
        return answer_parse(repaired.text)
    except AnswerInvalid as exc:
        log.warning("turn %s: the repaired answer is invalid too (%s)", turn.outcome.turn_id, exc)
        return None


def _fallback_options(context: TurnContext) -> list[str]:
    last = context.state.get("last_options") or []
    if (
        isinstance(last, list)
        and 1 <= len(last) <= 8
        and all(isinstance(o, str) and o for o in last)
    ):
        return list(last)
    return list(FALLBACK_OPTIONS)


def _failure_notices(exc: DomainError, turn: _Turn) -> list[NewEvent]:
    """What only some may know of a failure, appended beside the public `turn_failed`:
    a budget refusal's figures go to the GMs (or the user whose allowance it was), never
    to the table (CONTRACTS §7)."""
    if isinstance(exc, BudgetExceeded):
        return [exc.refusal_event(turn_id=turn.outcome.turn_id)]
    return []


def _turn_fail(
    turn: _Turn, code: str, detail: str, *, notices: list[NewEvent] | None = None
) -> TurnOutcome:
    """End the turn with `turn_failed`: the room shows the code, the actions count as
    answered (the players may act again), and a retry of the task changes nothing.

    `detail` is read by every player: plain words, no money or game state. `notices`
    (events with narrower visibility) are appended with it, in the same transaction."""
    through = turn.outcome.through_seq

    def not_yet_answered(state: dict[str, Any]) -> None:
        if state.get("turn", {}).get("answered_through_seq", 0) >= through:
            raise Conflict("these actions were answered by another turn")

    turn.outcome.failed_code = code
    turn.outcome.events = events_append(
        campaign_id=turn.campaign_id,
        request_id=turn.request_id,
        precondition=not_yet_answered,
        events=[
            NewEvent(
                "turn_failed",
                {
                    "turn_id": turn.outcome.turn_id,
                    "code": code[:40],
                    "detail": detail[:2000],
                    "through_seq": through,
                },
                "system",
            ),
            *(notices or []),
        ],
    )
    log.warning("turn %s failed: %s (%s)", turn.outcome.turn_id, code, detail)
    return turn.outcome
