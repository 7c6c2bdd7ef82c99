"""DM turns: who owes the table an answer, one turn at a time per campaign.

A turn answers every player action since the last narration. It builds the prompt and
runs a short loop, as a human DM does (CONTRACTS §7): the model may first answer with
only `roll` calls and an empty narration; the server rolls them at once (`roll_result`
events, under the turn's `turn_id`) and calls the model again with their results, so the
narration follows the dice. At most DM_MAX_STEPS answers; each parsed with one repair,
then a fallback. The narrating answer's tool calls and narration go to
`campaigns.tools.turn_commit`, which appends them in ONE transaction. A failed model call
ends the turn with `turn_failed` and a code the room shows; its rolls stay in the log, and
a turn cut short after rolling goes on with its rolls instead of rolling again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.selectors import budget_model_choice
from billing.services import BudgetExceeded
from campaigns.events import NewEvent
from campaigns.selectors import (
    campaign_get,
    roll_answer,
    snapshot_get,
    turn_roll_requests_open,
    turn_rolls_logged,
)
from campaigns.services import CampaignArchived, events_append
from campaigns.tools import (
    ToolRejection,
    roll_request_settle,
    turn_commit,
    turn_rolls_commit,
    turn_rolls_request,
)
from campaigns.withdrawals import with_withdrawals
from llm.adapters import PROVIDERS, ModelError, ModelRequest, Usage, adapter_for
from llm.services import Caller, model_answer
from rpgai import tracing
from rpgai.aio import db, io, run_sync
from rpgai.errors import Conflict, DomainError, NotFound

from . import selectors
from .fake import fake_reply
from .models import DMSettings, TurnLock
from .prompt import Prompt, TurnContext, prompt_build, repair_messages, roll_results_message
from .rounds import round_hold
from .schema import DMAnswer, answer_format, answer_parse
from .streaming import NarrationStream, narration_so_far_forget

log = logging.getLogger(__name__)

MAX_FOLLOW_UP_TURNS = 20
# The backstop past DM_TURN_DEADLINE_SECONDS for a turn stuck outside its model calls.
TURN_DEADLINE_SLACK = 15.0
# How often a turn waiting for a player's own roll looks for it.
PLAYER_ROLL_POLL_SECONDS = 0.5
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


# --- Turns: coroutines -----------------------------------------------------------------------
#
# A turn waiting on its model holds no thread, process or database connection: it is a
# coroutine on an event loop (the server's, embedded; a worker's turn runner otherwise:
# orchestrator/scheduler.py), and its database work goes through `rpgai.aio.db`. Sync
# callers (`manage.py play`, tests) use `turn_run` and `turns_run_pending`.


async def aturns_run_pending(
    *,
    campaign_id: uuid.UUID | str,
    max_turns: int = MAX_FOLLOW_UP_TURNS,
    on_delta: Callable[[str], None] | None = None,
    holder: str | None = None,
    on_locked: Callable[[], None] | None = None,
) -> int:
    """Run turns until no action is owed an answer; return how many ran.

    Only the lock holder runs turns. It re-checks after releasing, so an action that
    arrived during its turn (whose own request found the lock taken and gave up) still
    gets exactly one follow-up turn, which answers every action that arrived meanwhile.
    After `max_turns` with actions still owed, another turn is asked of the scheduler.
    `on_locked` is called once the lock is held (the worker's task then lets go of its
    message: a turn that holds the lock is found again if its worker dies).
    """
    holder = holder or uuid.uuid4().hex
    ran = 0
    while await db(_turn_claim, campaign_id=campaign_id, holder=holder, may_run=ran < max_turns):
        if on_locked is not None:
            on_locked()
            on_locked = None
        try:
            if await aturn_run(campaign_id=campaign_id, on_delta=on_delta) is not None:
                ran += 1
        finally:
            # Shielded: a turn cancelled at a worker's shutdown still lets go of its lock.
            await asyncio.shield(db(turn_lock_release, campaign_id=campaign_id, holder=holder))
    return ran


def _turn_claim(*, campaign_id: uuid.UUID | str, holder: str, may_run: bool) -> bool:
    """Whether `holder` now runs the campaign's owed turn (it took the lock). Not when
    nothing is owed, when the campaign is archived (read-only: what is owed is answered
    once it is brought back), when a `rounds` campaign waits for its players or its timer
    (rounds.py; never after an X-card, which is answered at once), when another holder
    has the lock (it re-checks after its turn), or when this holder ran its share
    (another turn is asked for)."""
    from .scheduler import turn_request

    owed = selectors.turn_owed(campaign_id=campaign_id)
    if owed is None:
        return False
    campaign = campaign_get(campaign_id=campaign_id)
    if campaign is None or campaign.archived:
        return False
    # The X-card steers away at once: a round waiting for its players does not hold it.
    if (
        campaign.turn_mode == campaign.TurnMode.ROUNDS
        and not selectors.x_card_tapped(campaign_id, *owed)
        and round_hold(campaign_id=campaign_id)
    ):
        return False
    if not may_run:
        turn_request(campaign_id=campaign_id)
        return False
    return turn_lock_acquire(campaign_id=campaign_id, holder=holder)


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
    steps: int = 0  # model answers asked for (repairs not counted)
    answered_seq: int = 0  # what was answered when the turn began (its actions come after)


@dataclass
class _Turn:
    """What one running turn knows; its helpers append to `outcome`."""

    campaign_id: uuid.UUID | str
    context: TurnContext
    outcome: TurnOutcome
    request_id: str
    deadline: float
    backstop: asyncio.Timeout | None = None

    def extend(self, seconds: float) -> None:
        """Time spent waiting for players is not the DM's: move the deadlines on."""
        self.deadline += seconds
        if self.backstop is not None and self.backstop.when() is not None:
            self.backstop.reschedule(self.backstop.when() + seconds)  # type: ignore[operator]

    @property
    def caller(self) -> Caller:
        return Caller(
            campaign_id=self.campaign_id,
            call_id=self.outcome.turn_id,
            # Whose actions this turn answers (billing keeps spend per user too).
            user_ids=list(dict.fromkeys(a.user_id for a in self.context.actions if a.user_id)),
            request_id=self.request_id,
        )


async def aturn_run(
    *,
    campaign_id: uuid.UUID | str,
    request_id: str = "",
    on_delta: Callable[[str], None] | None = None,
) -> TurnOutcome | None:
    """One DM turn answering every player action not yet answered; None if none is owed
    (or another turn answered them first)."""
    prepared = await db(_turn_prepare, campaign_id=campaign_id)
    if prepared is None:
        return None
    context = prepared.context
    through = context.through_seq
    turn = _Turn(
        campaign_id=campaign_id,
        context=context,
        outcome=TurnOutcome(
            turn_id=prepared.turn_id, through_seq=through, answered_seq=prepared.answered_seq
        ),
        request_id=request_id or prepared.request_id,
        deadline=time.monotonic() + settings.DM_TURN_DEADLINE_SECONDS,
    )
    try:
        # The turn's own deadline bounds every model call; this is the backstop for the
        # rest (a database that stopped answering, say).
        async with asyncio.timeout(
            settings.DM_TURN_DEADLINE_SECONDS + TURN_DEADLINE_SLACK
        ) as turn.backstop:
            with tracing.span(
                "turn",
                campaign_id=campaign_id,
                turn_id=turn.outcome.turn_id,
                through_seq=through,
                actions=len(context.actions),
            ) as span:
                outcome = await _turn_play(turn, prepared, on_delta)
                span.set_attribute("rpgai.outcome", outcome.failed_code or "ok")
                span.set_attribute("rpgai.fallback", outcome.fallback)
                return outcome
    except CampaignArchived:
        # Archived while the turn ran: what it had to say was refused (before Conflict,
        # whose subclass it is: this is no "already answered").
        return await _turn_end_archived(turn)
    except Conflict:
        log.info("turn for campaign %s through seq %s was already answered", campaign_id, through)
        return None
    except DatabaseError:
        raise  # nothing was appended; the turn is tried again (scheduler.py)
    except Exception as exc:
        # A bug or the backstop must not leave the actions waiting forever.
        code = "turn_timeout" if isinstance(exc, TimeoutError) else "internal_error"
        try:
            await db(_turn_fail, turn, code, "the DM could not finish this turn; try again")
        except Exception:
            log.exception("turn %s: could not record its failure", turn.outcome.turn_id)
        raise
    finally:
        # The narration streamed for a page reloaded mid-turn is kept no longer.
        try:
            await io(narration_so_far_forget, campaign_id=campaign_id, turn_id=turn.outcome.turn_id)
        except Exception:
            log.warning("turn %s: its streamed text was not let go", turn.outcome.turn_id)


# What the table reads when the GM archived the campaign while the DM was answering.
ARCHIVED_TURN_DETAIL = (
    "The campaign was archived before the DM could answer: nothing more is played until "
    "the GM brings it back."
)


async def _turn_end_archived(turn: _Turn) -> TurnOutcome | None:
    """The campaign was archived while this turn ran (its narration or its rolls were
    refused). The table is told with `turn_failed` `archived` if the log still takes it
    (it does, archived or not, unless another turn answered these actions meanwhile: then
    there is nothing more to say)."""
    turn_id = turn.outcome.turn_id
    try:
        outcome = await db(_turn_fail, turn, "archived", ARCHIVED_TURN_DETAIL)
    except Conflict:
        log.info(
            "turn %s: the campaign was archived while the DM answered, and these actions were "
            "answered already; nothing is added",
            turn_id,
        )
        return None
    log.info(
        "turn %s: the campaign was archived while the DM answered; the turn ended as archived",
        turn_id,
    )
    return outcome


turns_run_pending = run_sync(aturns_run_pending)
turn_run = run_sync(aturn_run)


@dataclass(frozen=True)
class _Prepared:
    """What a turn reads before its model call, in one database round."""

    context: TurnContext
    request_id: str
    provider: str
    model: str
    prompt: Prompt
    turn_id: str
    rolled: list[dict[str, Any]]  # the rolls of this turn made before it was cut short
    asked: list[str]  # and the players' rolls it asked for, not made yet
    answered_seq: int = 0  # the answered mark the turn starts from


def _turn_prepare(*, campaign_id: uuid.UUID | str) -> _Prepared | None:
    snapshot = snapshot_get(campaign_id=campaign_id)
    owed = selectors.owed_in(snapshot.state) if snapshot is not None else None
    if owed is None:
        return None
    answered, through = owed
    # The log since the last answer is read once, for the context, the unfinished turn
    # and the request id (this CPU, before the model call, bounds the turns one process
    # keeps in flight: issue 17).
    since = selectors.events_since(
        campaign_id=campaign_id, after_seq=selectors.turn_window_start(answered, through)
    )
    context = selectors.turn_context_get(
        campaign_id=campaign_id,
        answered_seq=answered,
        through_seq=through,
        state=snapshot.state,
        since=since,
    )
    config = selectors.dm_config_get(campaign_id=campaign_id)
    # Past its cap without hard stop, a campaign may be played by a cheaper model.
    provider, model = budget_model_choice(
        campaign_id=campaign_id, provider=config.provider, model=config.model
    )
    # A turn that rolled and was then cut short (its worker died) goes on under its own
    # turn_id, with the rolls it made; a retried turn (the GM retracted its answer) is a
    # turn of its own, given the rolls of the answer retracted.
    unfinished = selectors.turn_unfinished(
        campaign_id=campaign_id, answered_seq=answered, since=since
    )
    return _Prepared(
        turn_id=(
            unfinished.turn_id
            if unfinished is not None and unfinished.resumed
            else str(uuid.uuid4())
        ),
        rolled=(
            turn_rolls_logged(
                campaign_id=campaign_id, turn_id=unfinished.turn_id, after_seq=answered
            )
            if unfinished is not None
            else []
        ),
        asked=(
            turn_roll_requests_open(
                campaign_id=campaign_id, turn_id=unfinished.turn_id, after_seq=answered
            )
            if unfinished is not None and unfinished.resumed
            else []
        ),
        context=context,
        answered_seq=answered,
        # The request id of the action that closes the turn: its logs follow the turn.
        request_id=next(
            (
                str(e.request_id)
                for e in reversed(since)
                if e.type == "player_action" and e.seq <= through
            ),
            "",
        ),
        provider=provider,
        model=model,
        prompt=prompt_build(context=context, budget=settings.DM_PROMPT_TOKEN_BUDGET),
    )


async def _turn_play(
    turn: _Turn, prepared: _Prepared, on_delta: Callable[[str], None] | None
) -> TurnOutcome:
    """The turn's loop (CONTRACTS §7): each step is one model answer. An answer that only
    rolls (narration "") has its rolls made at once, and the next step is given their
    results; the answer that narrates is committed with its tool calls. At most
    DM_MAX_STEPS steps; the last must narrate (or the turn falls back)."""
    try:
        adapter = adapter_for(provider=prepared.provider, model=prepared.model)
    except ModelError as exc:
        return await db(_turn_fail, turn, exc.code, exc.detail)
    prompt = prepared.prompt
    turn.outcome.prompt_tokens = prompt.tokens
    max_steps = max(1, settings.DM_MAX_STEPS)
    messages = list(prompt.messages)
    results = list(prepared.rolled)
    if prepared.asked:  # cut short while its players were to roll: wait for them again
        results += await _player_rolls(turn, list(prepared.asked))
    refused: list[dict[str, Any]] = []  # tool calls of rolling steps: not run
    if results:
        # A turn cut short after its rolls (its worker died), or retried by the GM: the
        # rolls are facts; the answer goes on from them and never rolls them again.
        messages += [
            {"role": "assistant", "content": _rolls_answer_text(results)},
            roll_results_message(
                prompt=prompt, results=results, state=turn.context.state, last_step=max_steps <= 2
            ),
        ]
    step = 2 if results else 1

    stream = None
    if settings.DM_STREAM:
        stream = NarrationStream(
            campaign_id=turn.campaign_id,
            turn_id=turn.outcome.turn_id,
            on_delta=on_delta,
            marker=prompt.nonce,
        )
    answer: DMAnswer | None = None
    try:
        while True:
            last_step = step >= max_steps
            request = ModelRequest(
                messages=messages,
                max_tokens=settings.DM_MAX_TOKENS,
                purpose="dm_turn",
                answer_format=answer_format(),
                fake_reply=fake_reply(turn.context, results, last_step=last_step),
                deadline=turn.deadline,
            )
            if stream is not None:
                stream.restart()  # a rolling step streams no narration; the next one may
            answered = await model_answer(
                adapter,
                request,
                turn.caller,
                parse=functools.partial(
                    answer_parse, must_narrate=last_step, data_marker=prompt.nonce
                ),
                repair_messages=lambda bad, error, m=messages: repair_messages(
                    messages=m, bad_answer=bad, error=error
                ),
                sink=stream,
                input_tokens=prompt.tokens if step == 1 else None,  # counted once, at build
                throttle=step == 1,  # the rate limit counts turns, not their steps
            )
            turn.outcome.usage += [reply.usage for reply in answered.replies]
            answer = answered.value
            if answer is None or not answer.asks_for_rolls:
                break
            slots = await db(_rolls_step, turn, answer, refused, offset=len(results))
            rolled = await _player_rolls(turn, slots)
            results += rolled
            messages = [
                *messages,
                {"role": "assistant", "content": _answer_text(answer)},
                roll_results_message(
                    prompt=prompt,
                    results=rolled,
                    state=turn.context.state,
                    last_step=step + 1 >= max_steps,
                ),
            ]
            step += 1
    except DomainError as exc:  # a ModelError, or refused before the call (a budget, say)
        # Rolls made by earlier steps stay in the log: they are facts (CONTRACTS §7).
        return await db(_turn_fail, turn, exc.code, exc.detail, notices=_failure_notices(exc, turn))
    finally:
        if stream is not None:
            await stream.close()  # the last deltas go before the narration event
            turn.outcome.first_delta_at = stream.first_delta_at
    turn.outcome.steps = step

    if answer is None:
        answer = DMAnswer(
            narration=FALLBACK_NARRATION, options=_fallback_options(turn.context), tool_calls=[]
        )
        turn.outcome.fallback = True
    # An entity the DM hid that the players had seen leaves their view (withdrawals.py).
    result, withdrawn = await db(
        with_withdrawals,
        campaign_id=turn.campaign_id,
        request_id=turn.request_id,
        change=functools.partial(
            turn_commit,
            campaign_id=turn.campaign_id,
            turn_id=turn.outcome.turn_id,
            narration=answer.narration,
            options=answer.options,
            tool_calls=answer.tool_calls_as_dicts(),
            through_seq=turn.outcome.through_seq,
            fallback=turn.outcome.fallback,
            request_id=turn.request_id,
            actor_kind="dm",
            narration_extra={"tool_errors": refused} if refused else None,
        ),
    )
    turn.outcome.events = [*result.events, *withdrawn]
    turn.outcome.rejections = result.rejections
    return turn.outcome


def _rolls_step(
    turn: _Turn, answer: DMAnswer, refused: list[dict[str, Any]], *, offset: int
) -> list[dict[str, Any] | str]:
    """Make the rolls of an answer that asks to see its dice first, and ask players for
    the checks they roll themselves; its other tool calls are refused (state changes
    belong to the narrating answer) into `refused`. Returns, in the calls' order, each
    roll's result, or the roll_id of a player's roll still to come."""
    rolls: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    order: list[str] = []
    for index, call in enumerate(answer.tool_calls_as_dicts()):
        if call["name"] == "roll":
            rolls.append(call["args"])
            order.append("roll")
        elif call["name"] == "request_roll":
            requests.append(call["args"])
            order.append("request")
        else:
            refused.append(
                {
                    "index": offset + index,
                    "name": call["name"],
                    "reason": "only rolls run before the narration; send this call with it",
                }
            )
    made = iter(
        turn_rolls_commit(
            campaign_id=turn.campaign_id,
            turn_id=turn.outcome.turn_id,
            rolls=rolls,
            request_id=turn.request_id,
        )
        if rolls
        else []
    )
    asked = iter(
        turn_rolls_request(
            campaign_id=turn.campaign_id,
            turn_id=turn.outcome.turn_id,
            requests=requests,
            request_id=turn.request_id,
        )
        if requests
        else []
    )
    slots: list[dict[str, Any] | str] = []
    for kind in order:
        if kind == "roll":
            slots.append(next(made))
            continue
        request = next(asked)
        slots.append(request["roll_id"] if request["error"] is None else request)
    return slots


async def _player_rolls(turn: _Turn, slots: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """Wait for the players' own rolls among `slots` (roll ids), holding no worker: each
    comes when its player rolls, or the server rolls it for them after
    DM_PLAYER_ROLL_SECONDS. The turn's deadline moves on by the time waited."""
    waiting = [slot for slot in slots if isinstance(slot, str)]
    got: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    until = started + settings.DM_PLAYER_ROLL_SECONDS
    while waiting and time.monotonic() < until:
        for roll_id in list(waiting):
            answer = await db(roll_answer, campaign_id=turn.campaign_id, roll_id=roll_id)
            if answer is not None:
                got[roll_id] = answer
                waiting.remove(roll_id)
        if waiting:
            await asyncio.sleep(PLAYER_ROLL_POLL_SECONDS)
    for roll_id in waiting:  # their time is up: the server rolls for them
        settled = await db(
            roll_request_settle,
            campaign_id=turn.campaign_id,
            roll_id=roll_id,
            request_id=turn.request_id,
        )
        got[roll_id] = settled or {"error": "the roll could not be made", "formula": ""}
    turn.extend(time.monotonic() - started)
    return [got[slot] if isinstance(slot, str) else slot for slot in slots]


def _answer_text(answer: DMAnswer) -> str:
    """An earlier step's answer, replayed to the model as plain assistant text."""
    return json.dumps(
        {
            "narration": answer.narration,
            "tool_calls": answer.tool_calls_as_dicts(),
            "options": answer.options,
        },
        ensure_ascii=False,
    )


def _rolls_answer_text(results: list[dict[str, Any]]) -> str:
    """The rolling answer of a turn cut short, rebuilt from the rolls it logged."""
    calls = []
    for result in results:
        args = {"formula": result.get("formula"), "reason": result.get("reason")}
        if result.get("dc") is not None:
            args["dc"] = result["dc"]
        if result.get("private_to"):
            args["private_to"] = result["private_to"]
        calls.append({"name": "roll", "args": args})
    return json.dumps({"narration": "", "tool_calls": calls, "options": []}, ensure_ascii=False)


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


# Failures whose own words are not for the table (CONTRACTS §7 "What players are told"):
# the prices file's refusal quotes the figures it could not read.
PLAIN_FAILURE_DETAIL = {
    "prices_file_invalid": (
        "The DM cannot answer just now: this server's settings need fixing. Tell whoever "
        "runs the server; your action is kept."
    ),
}


def _turn_fail(
    turn: _Turn, code: str, detail: str, *, notices: list[NewEvent] | None = None
) -> TurnOutcome:
    """End the turn with `turn_failed`: the room shows the code, the actions count as
    answered (the players may act again), and a retry of the turn changes nothing.

    `detail` is read by every player: plain words, no money or game state (a code whose
    own words are not for the table gets PLAIN_FAILURE_DETAIL; the log keeps the rest).
    `answered_seq` records where the turn began, so that a budget stop can be reopened
    exactly (`turn_reopened`). `notices` (events with narrower visibility) are appended
    with it, in the same transaction."""
    through = turn.outcome.through_seq
    public_detail = PLAIN_FAILURE_DETAIL.get(code, detail)

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
                    "detail": public_detail[:2000],
                    "through_seq": through,
                    "answered_seq": turn.outcome.answered_seq,
                },
                "system",
            ),
            *(notices or []),
        ],
    )
    log.warning("turn %s failed: %s (%s)", turn.outcome.turn_id, code, detail)
    return turn.outcome
