"""Prices come from a TOML file the operator can change (PRICES_FILE): exact decimals,
a dated model priced as its family, an unknown model at the configured default price
with a logged warning, and a broken file reported clearly, never charged around."""

from __future__ import annotations

import logging
import os
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from billing.models import ModelUsage
from billing.prices import PricesFileError, model_cost, price_of, speech_cost
from campaigns.selectors import events_after
from campaigns.services import player_action_submit
from orchestrator.services import turn_run


@pytest.fixture
def prices_file(settings, tmp_path):
    path = tmp_path / "prices.toml"

    def write(text: str) -> None:
        path.write_text(text)
        # A new modification time, also within the file system's time resolution.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    settings.PRICES_FILE = str(path)
    return write


def test_the_shipped_prices_file_is_valid_and_exact():
    assert price_of("gpt-4o-mini").input == Decimal("0.15")
    # 1,000 input tokens at $0.15/M plus 500 output tokens at $0.60/M.
    assert model_cost(model="gpt-4o-mini", input_tokens=1000, output_tokens=500) == Decimal(
        "0.00045"
    )
    assert model_cost(model="fake-dm", input_tokens=1, output_tokens=0) == Decimal("0.00000015")
    assert speech_cost(model="piper", characters=10_000) == 0
    assert speech_cost(model="tts-1", characters=1_000_000) == Decimal("15")


def test_a_dated_model_is_priced_as_its_family():
    assert price_of("gpt-4o-mini-2024-07-18") == price_of("gpt-4o-mini")
    assert price_of("gpt-4o-2024-08-06") == price_of("gpt-4o")


def test_an_unknown_model_gets_the_default_price_and_a_warning(settings, caplog):
    settings.BILLING_DEFAULT_PRICE_INPUT = "7.00"
    settings.BILLING_DEFAULT_PRICE_OUTPUT = "21.00"
    name = f"mystery-model-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.WARNING, logger="billing.prices"):
        price = price_of(name)
        price_of(name)
    assert (price.input, price.output, price.known) == (Decimal("7.00"), Decimal("21.00"), False)
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1  # once per model and process
    assert "default price" in warnings[0].getMessage()
    assert model_cost(model=name, input_tokens=1_000_000, output_tokens=1_000_000) == 28


def test_the_operator_changes_the_file_and_the_next_call_uses_it(prices_file):
    prices_file('[models."house-model"]\ninput = "1.00"\noutput = "2.00"\n')
    assert model_cost(model="house-model", input_tokens=1000, output_tokens=1000) == Decimal(
        "0.003"
    )
    prices_file('[models."house-model"]\ninput = 3\noutput = "4.5"\n')
    assert model_cost(model="house-model", input_tokens=1000, output_tokens=1000) == Decimal(
        "0.0075"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is [not toml", "not valid TOML"),
        ('[models."m"]\ninput = "-1"\n', ">= 0"),
        ('[models."m"]\ninput = "cheap"\n', "is not a number"),
        ('[models."m"]\ninput = true\n', "a number or a decimal string"),
        ('[models."m"]\nprompt = "1"\n', "unknown field(s) prompt"),
        ('models = "everything free"\n', "must be a table"),
    ],
)
def test_a_broken_prices_file_is_reported_clearly(prices_file, text, message):
    prices_file(text)
    with pytest.raises(PricesFileError) as error:
        price_of("m")
    assert message in error.value.detail and "PRICES_FILE" in error.value.detail
    with pytest.raises(SystemCheckError, match=r"billing\.E001"):
        call_command("check")


def test_a_missing_prices_file_is_reported(settings, tmp_path):
    settings.PRICES_FILE = str(tmp_path / "nowhere.toml")
    with pytest.raises(PricesFileError, match="cannot be read"):
        price_of("gpt-4o-mini")


@pytest.mark.django_db
def test_with_a_broken_prices_file_no_model_call_is_made(prices_file, campaign, make_user, join):
    prices_file("this is [not toml")
    alice = make_user("alice")
    membership = join(alice, "Alice")
    action = player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I wait")
    outcome = turn_run(campaign_id=campaign.id)
    [failed] = events_after(campaign_id=campaign.id, after_seq=action.seq)
    assert failed.type == "turn_failed" and failed.payload["code"] == "prices_file_invalid"
    assert outcome.usage == [] and not ModelUsage.objects.exists()
