"""Caps hold under concurrency: twenty turns at once against a cap that allows five get
exactly five model calls, recorded spend never passes the cap, and the fifteen refused
turns are told why (`turn_failed` `budget_exceeded`). In threads on whichever database
the suite runs on (SQLite: the IMMEDIATE transaction serializes; PostgreSQL: the budget
row's FOR UPDATE), and from several OS processes on PostgreSQL (marker `services`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from billing import selectors
from billing.models import ModelUsage, Reservation
from billing.prices import model_cost
from billing.services import (
    USER_CAP_REACHED,
    BudgetExceeded,
    budget_reserve,
    budget_set,
    usage_settle,
    user_budget_set,
)
from campaigns.models import Event
from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from orchestrator.receivers import turns_deferred
from orchestrator.services import turn_run, turns_run_pending

ROOT = Path(__file__).resolve().parent.parent
TURNS = 20
ALLOWED = 5

# Only input tokens are priced here, so a turn's reservation (its prompt tokens plus
# max_tokens, priced) is exactly what it then costs: the cap admits exactly five turns
# whatever the timing. (Elsewhere the estimate is larger than the cost; see
# test_billing_settlement.)
PRICES = """
[models."fake-dm"]
input = "100.00"
output = "0"
"""


@pytest.fixture
def prices(settings, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    settings.PRICES_FILE = str(path)
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10_000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10_000
    return path


def tables_with_a_pending_action(gm, player, count: int) -> list:
    """`count` campaigns alike, `player` in each, one action waiting for the DM."""
    campaigns = []
    with turns_deferred():
        for _ in range(count):
            campaign = campaign_create(name="The Long Table", creator=gm)
            campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
            # The operator's figure, above what a GM may set: the user's cap is the test.
            budget_set(campaign_id=campaign.id, daily_cap_usd="100", by_operator=True)
            membership = membership_get(campaign_id=campaign.id, user_id=player.id)
            player_action_submit(
                membership=membership, action_id=uuid.uuid4(), text="I open the iron door"
            )
            campaigns.append(campaign)
    return campaigns


def one_turns_cost(gm, make_user) -> Decimal:
    """What one such turn costs (played by another player, who has no cap)."""
    [sample] = tables_with_a_pending_action(gm, make_user("sampler"), 1)
    turn_run(campaign_id=sample.id)
    return ModelUsage.objects.get(campaign_id=sample.id).cost_usd


def cap_for_five(cost: Decimal) -> Decimal:
    # Prompts differ by a few tokens (ids); 5.5 turns' worth admits 5, never 6.
    return (cost * Decimal("5.5")).quantize(Decimal("0.0001"))


def outcome_of(campaign) -> Event:
    [answer] = Event.objects.filter(campaign=campaign, type__in=("dm_narration", "turn_failed"))
    return answer


def check_five_answered_fifteen_refused(campaigns, player, cap: Decimal) -> None:
    answers = [outcome_of(c) for c in campaigns]
    narrated = [a for a in answers if a.type == "dm_narration"]
    refused = [a for a in answers if a.type == "turn_failed"]
    assert len(narrated) == ALLOWED
    assert len(refused) == TURNS - ALLOWED
    for failed in refused:
        assert failed.payload["code"] == "budget_exceeded"
        assert failed.payload["detail"] == USER_CAP_REACHED  # no figures for the table
    spent = selectors.user_spent(user_id=player.id)
    assert spent <= cap
    assert ModelUsage.objects.filter(user_id=player.id).count() == ALLOWED
    assert not Reservation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_turns_never_pass_a_cap_that_allows_five(prices, gm, make_user):
    cap = cap_for_five(one_turns_cost(gm, make_user))
    alice = make_user("alice")
    user_budget_set(user_id=alice.id, daily_cap_usd=cap)
    campaigns = tables_with_a_pending_action(gm, alice, TURNS)

    start = threading.Barrier(TURNS)
    errors: list[BaseException] = []

    def play(campaign_id) -> None:
        try:
            start.wait(timeout=30)
            turns_run_pending(campaign_id=campaign_id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=play, args=(c.id,)) for c in campaigns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    check_five_answered_fifteen_refused(campaigns, alice, cap)


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_reservations_on_one_campaign_grant_exactly_five(prices, campaign):
    """The campaign's own cap, with every call held in flight until all have asked."""
    each = model_cost(model="fake-dm", input_tokens=2000, output_tokens=0)  # $0.20
    budget_set(campaign_id=campaign.id, daily_cap_usd=each * ALLOWED, hard_stop=True)
    asked = threading.Barrier(TURNS)
    granted: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def call(n: int) -> None:
        key = f"call-{n}"
        try:
            try:
                budget_reserve(campaign_id=campaign.id, key=key, purpose="dm_turn", amount_usd=each)
                granted.append(key)
            except BudgetExceeded as exc:
                assert exc.code == "budget_exceeded"
                refused.append(key)
            asked.wait(timeout=60)
            if key in granted:
                usage_settle(
                    key=key,
                    campaign_id=campaign.id,
                    provider="fake",
                    model="fake-dm",
                    purpose="dm_turn",
                    input_tokens=1500,  # less than reserved
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(TURNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(granted) == ALLOWED and len(refused) == TURNS - ALLOWED
    spent = selectors.campaign_spent(campaign_id=campaign.id)
    assert spent == ALLOWED * model_cost(model="fake-dm", input_tokens=1500, output_tokens=0)
    assert spent <= each * ALLOWED
    assert not Reservation.objects.exists()


PROCESSES = 4

PLAYERS = """
import sys, threading, time, django
from pathlib import Path
django.setup()
from django.db import connection
from orchestrator.services import turns_run_pending
ready, go, campaign_ids = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
connection.ensure_connection()
ready.touch()
while not go.exists():
    time.sleep(0.005)

def play(campaign_id):
    try:
        turns_run_pending(campaign_id=campaign_id)
    finally:
        connection.close()

threads = [threading.Thread(target=play, args=(c,)) for c in campaign_ids]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_twenty_turns_from_several_processes_never_pass_a_cap_that_allows_five(
    prices, gm, make_user, tmp_path
):
    cap = cap_for_five(one_turns_cost(gm, make_user))
    alice = make_user("alice")
    user_budget_set(user_id=alice.id, daily_cap_usd=cap)
    campaigns = tables_with_a_pending_action(gm, alice, TURNS)

    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="rpgai.settings",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        PRICES_FILE=str(prices),
        MODEL_CALLS_PER_USER_PER_MINUTE="10000",
        MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE="10000",
        TASKS_IN_PROCESS="1",
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    # 20 turns at once from 4 OS processes of 5 threads (20 processes cost a minute of
    # start-up on a small machine and add nothing: the lock is the database's).
    logs_out = [(gate / f"log-{n}").open("wb") for n in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PLAYERS,
                str(gate / f"ready-{n}"),
                str(gate / "go"),
                *[str(c.id) for c in campaigns[n::PROCESSES]],
            ],
            cwd=ROOT,
            env=env,
            stderr=logs_out[n],  # a pipe could fill up and block the process
        )
        for n in range(PROCESSES)
    ]
    # Every process set up and connected, then all of them at once.
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.05)
    (gate / "go").touch()
    codes = [p.wait(timeout=180) for p in procs]
    for out in logs_out:
        out.close()
    logs = [(gate / f"log-{n}").read_text(errors="replace")[-2000:] for n in range(PROCESSES)]
    assert codes == [0] * PROCESSES, logs
    check_five_answered_fifteen_refused(campaigns, alice, cap)
