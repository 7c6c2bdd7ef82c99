"""The one model call (`llm.services.model_call`): the budget holds under concurrent calls,
and the money set aside for a call comes back whatever ends it (issue 17).

Every caller (each step of a turn, summaries, NPC memory) goes through model_call:
throttle, reserve the worst case, call, then settle or release. Here it is called as
they call it, with a test adapter standing in for the model (what the adapters do over
HTTP is tests/test_openai_adapter.py's): one that holds its call until told, streams
when given a sink, or fails in the middle. The database work runs on the DB_THREADS
threads of rpgai.aio, on whichever database the suite runs on: SQLite (the IMMEDIATE
transaction serializes reservations) or PostgreSQL (the budget row's FOR UPDATE).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async

from billing.models import ModelUsage, Reservation
from billing.prices import model_cost
from billing.selectors import campaign_spent
from billing.services import BudgetExceeded, budget_set
from campaigns.models import Event
from campaigns.selectors import events_after, membership_get
from campaigns.services import player_action_submit
from llm.adapters import ModelError, ModelReply, ModelRequest, StreamSink, Usage
from llm.services import Caller, model_call
from llm.tokens import count_message_tokens
from orchestrator.models import TurnLock
from orchestrator.receivers import turns_deferred
from orchestrator.services import aturns_run_pending
from tests.openai_server import Answer, Hang, serving

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "test-dm"
CALLS = 20  # 10 summaries and 10 turn steps, all at once
ALLOWED = 5
MAX_TOKENS = 200
# Only input tokens are priced: a call's worst case (its prompt's tokens plus
# max_tokens, priced) is then exactly what it costs, so a cap of five worst cases admits
# five calls whatever the order in which calls are settled.
PRICES = f"""
[models."{MODEL}"]
input = "100.00"
output = "0"
"""
MESSAGES = [
    {"role": "system", "content": "You keep the campaign's long-term memory."},
    {"role": "user", "content": "Alice opened the iron door; the stair beyond went down."},
]


@pytest.fixture
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    # The per-minute allowance is not what these tests are about.
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10_000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10_000
    return path


class TestModel:
    """A model adapter for these tests: each call waits until `go_on` is set (or
    `hold` seconds pass), then answers, or raises `error` if given. Counts the calls in
    flight and their peak; `entered` is set once a call is inside."""

    __test__ = False  # not a test class
    provider = "test"
    model = MODEL

    def __init__(self, *, hold: float = 10.0, error: BaseException | None = None) -> None:
        self.hold = hold
        self.error = error
        self.entered = asyncio.Event()
        self.go_on = asyncio.Event()
        self.in_flight = 0
        self.peak = 0

    async def _call(self, request: ModelRequest, sink: StreamSink | None) -> ModelReply:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.entered.set()
        try:
            text = "Alice opened the iron door."
            if sink is not None:
                await sink.feed(text[:10])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.go_on.wait(), self.hold)
            if self.error is not None:
                raise self.error
            if sink is not None:
                await sink.feed(text[10:])
            usage = Usage(
                provider=self.provider,
                model=self.model,
                purpose=request.purpose,
                input_tokens=count_message_tokens(request.messages),
                output_tokens=7,
            )
            return ModelReply(text=text, usage=usage, finish_reason="stop")
        finally:
            self.in_flight -= 1

    async def complete(self, request: ModelRequest) -> ModelReply:
        return await self._call(request, None)

    async def stream(self, request: ModelRequest, sink: StreamSink) -> ModelReply:
        return await self._call(request, sink)


class Sink:
    def __init__(self) -> None:
        self.text = ""

    async def feed(self, chunk: str) -> None:
        self.text += chunk

    def restart(self) -> None:
        self.text = ""


def request(purpose: str = "dm_turn") -> ModelRequest:
    return ModelRequest(messages=list(MESSAGES), max_tokens=MAX_TOKENS, purpose=purpose)


def caller(campaign: Any) -> Caller:
    return Caller(campaign_id=campaign.id, call_id=str(uuid.uuid4()))


def worst_case() -> Decimal:
    """What model_call sets aside for one of these calls."""
    return model_cost(
        model=MODEL, input_tokens=count_message_tokens(MESSAGES), output_tokens=MAX_TOKENS
    )


def reservations(campaign: Any) -> list[Reservation]:
    return list(Reservation.objects.filter(campaign_id=campaign.id))


def usage(campaign: Any) -> list[ModelUsage]:
    return list(ModelUsage.objects.filter(campaign_id=campaign.id))


def lock_holder(campaign: Any) -> str:
    lock = TurnLock.objects.filter(campaign_id=campaign.id).first()
    return lock.holder if lock is not None else ""


# --- The budget under concurrent calls -------------------------------------------------------


async def test_twenty_concurrent_calls_against_a_cap_for_five_make_exactly_five(prices, campaign):
    each = worst_case()
    cap = each * ALLOWED
    assert cap == cap.quantize(Decimal("0.0001")), "the cap must be stored exactly"
    await sync_to_async(budget_set)(
        campaign_id=campaign.id, daily_cap_usd=cap, hard_stop=True, by_operator=True
    )
    model = TestModel()
    refused: list[BudgetExceeded] = []

    async def call(n: int) -> ModelReply:
        purpose = "summary" if n % 2 else "dm_turn"
        try:
            return await model_call(
                model,
                request(purpose),
                caller(campaign),
                # Turn steps stream to the room, summaries do not.
                sink=Sink() if purpose == "dm_turn" else None,
            )
        except BudgetExceeded as exc:
            refused.append(exc)
            if len(refused) == CALLS - ALLOWED:
                # Every refusal was decided while the granted calls were in flight,
                # holding their reservations; now they may finish.
                model.go_on.set()
            raise

    results = await asyncio.gather(*(call(n) for n in range(CALLS)), return_exceptions=True)

    answered = [r for r in results if isinstance(r, ModelReply)]
    others = [r for r in results if not isinstance(r, ModelReply | BudgetExceeded)]
    assert others == [], others
    assert len(answered) == ALLOWED
    assert len(refused) == CALLS - ALLOWED
    assert {exc.code for exc in refused} == {"budget_exceeded"}
    assert model.peak == ALLOWED  # the five were in flight together
    spent = await sync_to_async(campaign_spent)(campaign_id=campaign.id)
    assert spent == each * ALLOWED <= cap
    rows = await sync_to_async(usage)(campaign)
    assert len(rows) == ALLOWED
    assert {r.purpose for r in rows} <= {"summary", "dm_turn"}
    assert await sync_to_async(reservations)(campaign) == []


# --- Whatever ends a call, its reservation comes back ---------------------------------------


async def call_in_flight(model: TestModel, campaign: Any) -> asyncio.Task[ModelReply]:
    """A model_call inside the adapter, its worst case reserved."""
    task = asyncio.ensure_future(model_call(model, request(), caller(campaign)))
    await asyncio.wait_for(model.entered.wait(), 10)
    [held] = await sync_to_async(reservations)(campaign)
    assert held.amount_usd == worst_case()
    return task


async def test_an_unexpected_exception_in_the_adapter_releases_the_reservation(prices, campaign):
    model = TestModel(error=RuntimeError("a bug in the adapter"))
    task = await call_in_flight(model, campaign)
    model.go_on.set()
    with pytest.raises(RuntimeError, match="a bug in the adapter"):
        await task
    assert await sync_to_async(reservations)(campaign) == []
    assert await sync_to_async(usage)(campaign) == []


async def test_a_cancelled_call_releases_the_reservation(prices, campaign):
    model = TestModel(hold=30)
    task = await call_in_flight(model, campaign)
    task.cancel()  # a worker shutting down, a turn past its deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await sync_to_async(reservations)(campaign) == []
    assert await sync_to_async(usage)(campaign) == []


async def test_a_model_error_releases_the_reservation_and_settles_nothing(prices, campaign):
    model = TestModel(error=ModelError("the model server answered 503", code="model_error"))
    task = await call_in_flight(model, campaign)
    model.go_on.set()
    with pytest.raises(ModelError) as raised:
        await task
    assert raised.value.code == "model_error"
    assert await sync_to_async(reservations)(campaign) == []
    assert await sync_to_async(usage)(campaign) == []
    assert await sync_to_async(campaign_spent)(campaign_id=campaign.id) == 0


async def test_a_turn_cancelled_while_it_waits_on_the_model_gives_back_its_money_and_lock(
    campaign, alice, settings
):
    """What a worker shutting down does to the turns it still runs (scheduler.TurnRunner):
    the turn's call is cancelled, its reservation released, its lock let go, nothing is
    appended, and the action is answered by the next turn, once."""
    with serving(settings) as server:
        server.default = Hang(60)

        def act() -> Event:
            with turns_deferred():  # this test runs the turn itself
                return player_action_submit(
                    membership=membership_get(campaign_id=campaign.id, user_id=alice.id),
                    action_id=uuid.uuid4(),
                    text="I ask the oracle.",
                )

        action = await sync_to_async(act)()
        turn = asyncio.ensure_future(aturns_run_pending(campaign_id=campaign.id))
        for _ in range(500):  # up to 10 s
            if server.requests:
                break
            await asyncio.sleep(0.02)
        assert server.requests, "the turn never called the model"
        assert len(await sync_to_async(reservations)(campaign)) == 1
        assert await sync_to_async(lock_holder)(campaign)

        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert await sync_to_async(reservations)(campaign) == []
        assert await sync_to_async(lock_holder)(campaign) == ""
        assert await sync_to_async(usage)(campaign) == []
        assert (
            await sync_to_async(events_after)(campaign_id=campaign.id, after_seq=action.seq) == []
        )

        server.default = Answer()  # the model is back: the next turn answers the action
        assert await aturns_run_pending(campaign_id=campaign.id) == 1
    after = await sync_to_async(events_after)(campaign_id=campaign.id, after_seq=action.seq)
    [ending] = [e for e in after if e.type in ("dm_narration", "turn_failed")]
    assert ending.type == "dm_narration" and ending.payload["fallback"] is False
    assert ending.payload["through_seq"] == action.seq
    assert await sync_to_async(reservations)(campaign) == []
