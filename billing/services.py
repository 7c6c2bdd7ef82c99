"""Every write of billing: reserve before a model or speech call, settle after it,
release on failure; budgets per campaign and per user.

The concurrency rule: a reservation is decided under a lock on the campaign's budget row
(SELECT ... FOR UPDATE on PostgreSQL; on SQLite the IMMEDIATE transaction already holds
the database's write lock), and so is a settlement, which swaps a reservation for its
usage row in one transaction. So the money counted against a cap (settled in the last 24
hours, plus reserved for calls in flight) is always whole, and concurrent calls cannot
together pass a hard cap: each reserves a bounded worst case (prompt tokens plus
`max_tokens`) before it may call. Locks are taken in one order, the campaign's budget
row then the user's, so two transactions never wait on each other in a circle.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status

from campaigns.events import NewEvent, Visibility
from campaigns.selectors import budget_stop_get, campaign_get, campaigns_for_user
from campaigns.services import events_append, turn_reopen
from rpgai.errors import Conflict, DomainError, NotFound
from rpgai.metrics import spend_record

from . import selectors
from .models import CampaignBudget, ModelUsage, Purpose, Reservation, UserBudget
from .prices import model_cost, speech_cost
from .selectors import usd_str

log = logging.getLogger(__name__)

CAP_MAX_USD = Decimal("100000")


# What players are told (CONTRACTS §7): plain words, no money figures, caps or anyone's
# spend. `turn_failed` is seen by the whole table, so the user's case names nobody.
CAMPAIGN_CAP_REACHED = "The DM has reached today's budget for this campaign; the GM has been told."
USER_CAP_REACHED = (
    "The DM cannot answer this now: a player's daily allowance for the DM on this server "
    "is used up. It frees up over the next 24 hours; the GM has been told."
)


class BudgetExceeded(DomainError):
    """The call could pass a hard daily cap; it is not made.

    `detail` is for everyone who may see the refusal (a `turn_failed` reaches every
    player): it carries no money. The figures are in `figures` and `gm_detail`, for the
    GM-only `budget_refused` event that `refusal_event` builds."""

    code = "budget_exceeded"
    http_status = status.HTTP_402_PAYMENT_REQUIRED

    def __init__(
        self,
        *,
        scope: str,
        campaign_id: uuid.UUID | str,
        purpose: str,
        spent: Decimal,
        reserved: Decimal,
        cap: Decimal,
        amount: Decimal,
        user_id: uuid.UUID | str | None = None,
    ) -> None:
        super().__init__(CAMPAIGN_CAP_REACHED if scope == "campaign" else USER_CAP_REACHED)
        self._kwargs = {
            "scope": scope,
            "campaign_id": campaign_id,
            "purpose": purpose,
            "spent": spent,
            "reserved": reserved,
            "cap": cap,
            "amount": amount,
            "user_id": user_id,
        }
        self.scope = scope
        self.campaign_id = campaign_id
        self.user_id = user_id
        self.purpose = purpose
        self.figures = {
            "spent_usd": usd_str(spent),
            "reserved_usd": usd_str(reserved),
            "cap_usd": usd_str(cap),
            "call_usd": usd_str(amount),
        }
        held = f" (${usd_str(reserved)} more held for calls in flight)" if reserved else ""
        if scope == "campaign":
            self.gm_detail = (
                f"The campaign's daily budget would be passed: ${usd_str(spent)} of its "
                f"${usd_str(cap)} cap used in the last 24 hours{held}, and this call could "
                f"cost up to ${usd_str(amount)}. Raise the daily cap from the GM panel in the "
                "room or at /gm/ (or turn hard stop off): the DM then answers what is waiting."
            )
        else:
            self.gm_detail = (
                f"This player's daily allowance across campaigns would be passed: "
                f"${usd_str(spent)} of ${usd_str(cap)} used in the last 24 hours{held}, and "
                f"this call could cost up to ${usd_str(amount)}. It frees up as the spend "
                "leaves the 24-hour window; an operator can change the allowance in /admin/."
            )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only: rebuilt from its keywords (pickled by a task, copied by a test).
        return (_budget_exceeded_rebuild, (self._kwargs,))

    def refusal_event(self, *, turn_id: str | None = None) -> NewEvent:
        """The `budget_refused` event with the figures, for the GMs only, whoever's cap it
        was (CONTRACTS §7: no player receives a money figure, not even of their own
        allowance; they read the plain words of `turn_failed`)."""
        visibility: Visibility = {"kind": "gm"}
        return NewEvent(
            "budget_refused",
            {
                "scope": self.scope,
                "turn_id": turn_id,
                "purpose": self.purpose[:40],
                "user_id": str(self.user_id) if self.scope == "user" and self.user_id else None,
                **self.figures,
                "window_hours": selectors.WINDOW_HOURS,
                "detail": self.gm_detail[:500],
            },
            "system",
            visibility=visibility,
        )


def _budget_exceeded_rebuild(kwargs: dict[str, Any]) -> BudgetExceeded:
    return BudgetExceeded(**kwargs)


class CapTooHigh(DomainError):
    """A GM asked for a daily cap above the operator's BILLING_MAX_DAILY_CAP_USD."""

    code = "cap_too_high"


# --- Locks ------------------------------------------------------------------------------------


def _campaign_budget_locked(
    campaign_id: uuid.UUID | str, *, create: bool = True
) -> CampaignBudget | None:
    """The campaign's budget row, locked until the transaction ends (made with the
    defaults the first time). None only without `create` for a campaign that is gone."""
    budget = CampaignBudget.objects.select_for_update().filter(campaign_id=campaign_id).first()
    if budget is not None or not create:
        return budget
    if campaign_get(campaign_id=campaign_id) is None:
        raise NotFound("no such campaign")
    try:
        with transaction.atomic():
            CampaignBudget.objects.create(campaign_id=campaign_id)
    except IntegrityError:
        pass  # another transaction made it first
    return CampaignBudget.objects.select_for_update().get(campaign_id=campaign_id)


def _user_cap_locked(user_id: uuid.UUID | str | None) -> Decimal | None:
    """The user's daily cap, with the user's budget row locked; None: no cap (no lock,
    unless the user has a budget row: it is locked by the same read that finds the cap)."""
    if user_id is None:
        return None
    # One query when the row exists (every user who has spent under a cap): it runs
    # before every model call.
    own = list(
        UserBudget.objects.select_for_update()
        .filter(user_id=user_id)
        .values_list("daily_cap_usd", flat=True)
    )
    default = selectors.user_cap_default()
    if own:
        return own[0] if own[0] is not None else default
    if default is None:
        return None
    if not get_user_model().objects.filter(id=user_id).exists():
        return default  # a deleted user: nothing to lock, the cap still holds
    try:
        with transaction.atomic():
            UserBudget.objects.create(user_id=user_id)  # blank cap: the setting's
    except IntegrityError:
        pass
    UserBudget.objects.select_for_update().filter(user_id=user_id).first()
    return default


# --- Reserve, settle, release -------------------------------------------------------------------


def budget_reserve(
    *,
    campaign_id: uuid.UUID | str,
    key: str,
    purpose: str,
    amount_usd: Decimal,
    user_id: uuid.UUID | str | None = None,
) -> Reservation:
    """Set `amount_usd` aside for one call (a bounded worst case) under `key`, or raise
    BudgetExceeded when it could pass the campaign's hard cap or the user's cap."""
    if amount_usd < 0:
        raise DomainError("a reservation is an amount >= 0")
    try:
        with transaction.atomic():
            now = timezone.now()
            budget = _campaign_budget_locked(campaign_id)
            assert budget is not None
            user_cap = _user_cap_locked(user_id)
            # Reservations of workers that died mid-call stop counting when they expire.
            Reservation.objects.filter(campaign_id=campaign_id, expires_at__lte=now).delete()
            totals = selectors.spend_totals(
                campaign_id=campaign_id, user_id=user_id if user_cap is not None else None, now=now
            )
            if budget.hard_stop:
                spent, reserved = totals.campaign_spent, totals.campaign_reserved
                if spent + reserved + amount_usd > budget.daily_cap_usd:
                    raise BudgetExceeded(
                        scope="campaign",
                        campaign_id=campaign_id,
                        purpose=purpose,
                        spent=spent,
                        reserved=reserved,
                        cap=budget.daily_cap_usd,
                        amount=amount_usd,
                    )
            if user_cap is not None:
                spent, reserved = totals.user_spent, totals.user_reserved
                if spent + reserved + amount_usd > user_cap:
                    raise BudgetExceeded(
                        scope="user",
                        campaign_id=campaign_id,
                        user_id=user_id,
                        purpose=purpose,
                        spent=spent,
                        reserved=reserved,
                        cap=user_cap,
                        amount=amount_usd,
                    )
            return Reservation.objects.create(
                key=key,
                campaign_id=campaign_id,
                user_id=user_id,
                purpose=purpose,
                amount_usd=amount_usd,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.BILLING_RESERVATION_SECONDS),
            )
    except IntegrityError:
        raise Conflict(f"a reservation {key!r} exists already") from None


def reservation_release(*, key: str) -> bool:
    """Give a reservation's money back (the call failed); False if there was none.

    No lock: dropping a reservation only frees money, and a concurrent reservation that
    still counted it merely erred on the safe side."""
    deleted, _ = Reservation.objects.filter(key=key).delete()
    return bool(deleted)


def usage_settle(
    *,
    key: str,
    campaign_id: uuid.UUID | str,
    provider: str,
    model: str,
    purpose: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    characters: int = 0,
    user_id: uuid.UUID | str | None = None,
    estimated: bool = False,
    request_id: str = "",
    turn_id: uuid.UUID | str | None = None,
) -> ModelUsage:
    """Record what a call really cost, priced from the usage it reported, in place of
    its reservation `key` (if any), in one transaction."""
    if purpose == Purpose.TTS:
        cost = speech_cost(model=model, characters=characters)
    else:
        cost = model_cost(model=model, input_tokens=input_tokens, output_tokens=output_tokens)

    def release() -> None:
        held = Reservation.objects.filter(key=key).first()
        if held is None:
            return
        if cost > held.amount_usd:
            # The reported usage passed the bounded estimate (a provider that counts
            # differently, or ignores max_tokens): recorded as reported, and said.
            log.warning(
                "call %s cost $%s, more than the $%s reserved for it",
                key,
                usd_str(cost),
                usd_str(held.amount_usd),
            )
        held.delete()

    return _usage_record(
        release=release,
        campaign_id=campaign_id,
        user_id=user_id,
        provider=provider,
        model=model,
        purpose=purpose,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        characters=characters,
        cost_usd=cost,
        estimated=estimated,
        request_id=request_id,
        turn_id=turn_id,
    )


def _usage_record(
    *,
    release: Callable[[], None],
    campaign_id: uuid.UUID | str,
    cost_usd: Decimal,
    **fields: object,
) -> ModelUsage:
    warning: int | None = None
    with transaction.atomic():
        now = timezone.now()
        budget = _campaign_budget_locked(campaign_id, create=False)
        _user_cap_locked(fields.get("user_id"))  # type: ignore[arg-type]
        release()
        usage = ModelUsage.objects.create(
            campaign_id=campaign_id, cost_usd=cost_usd, created_at=now, **fields
        )
        if budget is not None:
            warning = _warning_due(budget, now)
    if warning is not None:
        # After commit: the log's append takes its own lock, and a warning that fails
        # to append must not undo the record of money spent.
        transaction.on_commit(lambda: _budget_warning_append(campaign_id, warning))
    spend_record(usd=cost_usd, kind="voice" if fields.get("purpose") == Purpose.TTS else "model")
    return usage


# --- Warnings ----------------------------------------------------------------------------------


def _warning_due(budget: CampaignBudget, now: datetime) -> int | None:
    """The threshold (percent) to announce now, if the spend just reached a new one."""
    spent = selectors.campaign_spent(campaign_id=budget.campaign_id, now=now)
    cap = budget.daily_cap_usd
    percent = Decimal(100) if cap <= 0 else spent / cap * 100
    level = max((t for t in settings.BILLING_WARN_AT_PERCENT if percent >= t), default=0)
    previous = budget.warned_percent
    if level == previous:
        return None
    # Lower: the window rolled on or the cap was raised; the next crossing warns again.
    budget.warned_percent = level
    budget.warned_at = now
    budget.save(update_fields=["warned_percent", "warned_at", "updated_at"])
    return level if level > previous else None


def _budget_warning_append(campaign_id: uuid.UUID | str, level: int) -> None:
    try:
        status_now = selectors.budget_status(campaign_id=campaign_id)
        degradation = selectors.budget_degradation(campaign_id=campaign_id)
        detail = f"Spend in the last 24 hours reached {level}% of the daily cap."
        if status_now.hard_stop and level >= 100:
            detail += (
                " DM turns and speech that could pass the cap are refused. Raise the daily "
                "cap from the GM panel in the room or at /gm/ to let the DM go on."
            )
        elif degradation.active:
            saving = []
            if degradation.model or degradation.provider:
                saving.append(f"the cheaper model {degradation.model or degradation.provider}")
            if degradation.summary_factor < 1:
                saving.append("shorter summaries")
            if degradation.voice_off:
                saving.append("no voice")
            detail += " The campaign now runs degraded" + (
                f": {', '.join(saving)}." if saving else "."
            )
        events_append(
            campaign_id=campaign_id,
            events=[
                NewEvent(
                    "budget_warning",
                    {
                        "percent": level,
                        "spent_usd": usd_str(status_now.spent_usd),
                        "daily_cap_usd": usd_str(status_now.daily_cap_usd),
                        "window_hours": selectors.WINDOW_HOURS,
                        "hard_stop": status_now.hard_stop,
                        "degraded": degradation.active,
                        "detail": detail,
                    },
                    "system",
                    visibility={"kind": "gm"},
                )
            ],
        )
    except NotFound:
        pass  # the campaign was deleted meanwhile
    except Exception:
        log.exception("could not append the budget warning of campaign %s", campaign_id)


# --- Budgets ------------------------------------------------------------------------------------


def _cap_value(value: Decimal | str | int | float) -> Decimal:
    try:
        cap = Decimal(str(value))
    except InvalidOperation:
        raise DomainError(f"daily_cap_usd: {value!r} is not a number") from None
    if not cap.is_finite() or cap < 0 or cap > CAP_MAX_USD:
        raise DomainError(f"daily_cap_usd: between 0 and {CAP_MAX_USD}")
    if cap != cap.quantize(Decimal("0.0001")):
        raise DomainError("daily_cap_usd: at most 4 decimal places")
    return cap


def budget_set(
    *,
    campaign_id: uuid.UUID | str,
    daily_cap_usd: Decimal | str | None = None,
    hard_stop: bool | None = None,
    by_operator: bool = False,
) -> CampaignBudget:
    """Change a campaign's daily cap and/or hard stop (None: unchanged).

    The operator's key pays: a GM may not raise a cap above BILLING_MAX_DAILY_CAP_USD
    (CapTooHigh), though they may keep or lower a cap the operator set above it. Only
    an operator (staff in /admin/: `by_operator`) sets any figure up to CAP_MAX_USD."""
    cap = None if daily_cap_usd is None else _cap_value(daily_cap_usd)
    with transaction.atomic():
        budget = _campaign_budget_locked(campaign_id)
        assert budget is not None
        ceiling = selectors.max_daily_cap()
        if cap is not None and not by_operator and cap > ceiling and cap > budget.daily_cap_usd:
            raise CapTooHigh(
                f"The most a campaign may spend a day on this server is ${usd_str(ceiling)}."
            )
        if cap is not None and cap != budget.daily_cap_usd:
            budget.daily_cap_usd = cap
            budget.warned_percent = 0  # the thresholds of the new cap are announced afresh
        if hard_stop is not None:
            budget.hard_stop = bool(hard_stop)
        budget.save()
    budget_resume(campaign_id=campaign_id, scope="campaign")
    return budget


def user_budget_set(*, user_id: uuid.UUID | str, daily_cap_usd: Decimal | str | None) -> UserBudget:
    """Set a user's own daily cap across campaigns (None: the setting's default)."""
    cap = None if daily_cap_usd is None else _cap_value(daily_cap_usd)
    if not get_user_model().objects.filter(id=user_id).exists():
        raise NotFound("no such user")
    budget, _ = UserBudget.objects.update_or_create(
        user_id=user_id, defaults={"daily_cap_usd": cap}
    )
    # The DM of a campaign may have stopped on this player's allowance: it goes on there.
    for membership in campaigns_for_user(user_id=user_id):  # type: ignore[arg-type]
        budget_resume(campaign_id=membership.campaign_id, scope="user", user_id=user_id)
    return budget


# --- The DM resumes after a budget stop (CONTRACTS §7 "GM controls") ----------------------------


def campaign_has_room(*, campaign_id: uuid.UUID | str, for_usd: Decimal = Decimal(0)) -> bool:
    """Whether the campaign's budget would let a call costing up to `for_usd` through
    now: no hard stop, or that much of the cap left (spend and calls in flight counted;
    with `for_usd` 0, anything left)."""
    status_now = selectors.budget_status(campaign_id=campaign_id)
    if not status_now.hard_stop:
        return True
    return status_now.remaining_usd > 0 and status_now.remaining_usd >= for_usd


def user_has_room(*, user_id: uuid.UUID | str | None, for_usd: Decimal = Decimal(0)) -> bool:
    """Whether a player's own allowance (across campaigns) would let a call costing up to
    `for_usd` through now, or none is set."""
    cap = selectors.user_cap(user_id=user_id)
    if cap is None or user_id is None:
        return True
    left = cap - selectors.user_spent(user_id=user_id) - selectors.user_reserved(user_id=user_id)
    return left > 0 and left >= for_usd


def _refused_call(notice: dict[str, Any]) -> Decimal:
    """What the refused call could have cost (its `budget_refused` notice): the room a
    resumed turn needs. 0 when unknown."""
    try:
        amount = Decimal(str(notice.get("call_usd") or 0))
    except InvalidOperation:
        return Decimal(0)
    return amount if amount.is_finite() and amount > 0 else Decimal(0)


def budget_resume(
    *,
    campaign_id: uuid.UUID | str,
    scope: str | None = None,
    user_id: uuid.UUID | str | None = None,
    request_id: str = "",
) -> bool:
    """When the DM of the campaign stopped for budget (its latest answer is `turn_failed`
    `budget_exceeded`) and the cap that stopped it now has room for the call it refused
    (its `budget_refused` notice says how much that could cost), reopen what it left
    unanswered (`campaigns.services.turn_reopen`: `turn_reopened`, then exactly one turn
    answers). Every change of a cap or of hard stop calls this (`budget_set`,
    `user_budget_set`, and so the API, the GM site and the admin). `scope` limits it to
    stops by that cap ("campaign", or "user" with `user_id`: the player whose allowance
    changed). True when it reopened. Never fails the budget change that called it."""
    try:
        stop = budget_stop_get(campaign_id=campaign_id)
        if stop is None or (scope is not None and stop.scope != scope):
            return False
        needed = _refused_call(stop.notice)
        if stop.scope == "user":
            if user_id is not None and stop.user_id != str(user_id):
                return False
            if not user_has_room(user_id=stop.user_id, for_usd=needed):
                return False
        elif not campaign_has_room(campaign_id=campaign_id, for_usd=needed):
            return False
        return (
            turn_reopen(campaign_id=campaign_id, turn_id=stop.turn_id, request_id=request_id)
            is not None
        )
    except NotFound:
        return False  # the campaign was deleted meanwhile
    except DomainError:
        log.exception("campaign %s: the DM could not be resumed after a budget change", campaign_id)
        return False


# --- Speech ---------------------------------------------------------------------------------------


def speech_model_name(engine: str) -> str:
    """The name speech is priced by: the OpenAI speech model, or the engine (piper)."""
    engine = (engine or "").strip().lower()
    return settings.OPENAI_TTS_MODEL if engine == "openai" else engine


def speech_reserve(*, campaign_id: uuid.UUID | str, characters: int) -> bool:
    """Whether the campaign may speak `characters` more characters now; if so their cost
    is set aside until `speech_usage_record` settles it, segment by segment."""
    if characters <= 0:
        return True
    degradation = selectors.budget_degradation(campaign_id=campaign_id)
    if degradation.active and degradation.voice_off:
        return False
    cost = speech_cost(model=speech_model_name(settings.TTS_PROVIDER), characters=characters)
    if cost <= 0:
        return True  # local speech costs nothing
    try:
        budget_reserve(
            campaign_id=campaign_id,
            key=f"tts:{uuid.uuid4()}",
            purpose=Purpose.TTS,
            amount_usd=cost,
        )
    except BudgetExceeded as exc:
        log.info("speech of campaign %s refused: %s", campaign_id, exc.gm_detail)
        return False
    return True


def speech_usage_record(
    *, campaign_id: uuid.UUID | str, engine: str, characters: int, request_id: str = ""
) -> ModelUsage:
    """Record `characters` spoken by `engine`, using up the campaign's speech
    reservations, oldest first (what is left of them expires)."""
    model = speech_model_name(engine)
    cost = speech_cost(model=model, characters=characters)

    def release() -> None:
        left = cost
        now = timezone.now()
        held = Reservation.objects.filter(
            campaign_id=campaign_id, purpose=Purpose.TTS, expires_at__gt=now
        ).order_by("created_at")
        for reservation in held:
            if left <= 0:
                break
            if reservation.amount_usd <= left:
                left -= reservation.amount_usd
                reservation.delete()
            else:
                reservation.amount_usd -= left
                reservation.save(update_fields=["amount_usd"])
                left = Decimal(0)

    return _usage_record(
        release=release,
        campaign_id=campaign_id,
        user_id=None,
        provider=(engine or "").strip().lower()[:40],
        model=model[:100],
        purpose=Purpose.TTS,
        characters=characters,
        cost_usd=cost,
        request_id=request_id[:64],
    )
