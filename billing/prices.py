"""Prices per model, from a TOML file the operator may edit (settings.PRICES_FILE).

The file is read again whenever it changes (by modification time), so a new price
applies to the next call without a restart. A model missing from the file gets the
BILLING_DEFAULT_PRICE_* settings, and a warning is logged once per process and model.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from rpgai.errors import DomainError

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
# Stored costs have 10 decimal places; rounding up never lets a cost slip under a cap.
COST_QUANTUM = Decimal("0.0000000001")
PRICE_FIELDS = ("input", "output", "characters")


class PricesFileError(DomainError):
    """The prices file cannot be read or has a bad entry (the detail says which). Nothing
    is charged, so nothing is spent: a model call refused with this code makes no call."""

    code = "prices_file_invalid"


@dataclass(frozen=True)
class Price:
    """USD per million input tokens, output tokens and characters of speech."""

    input: Decimal
    output: Decimal
    characters: Decimal
    known: bool = True


_lock = threading.Lock()
_cache: dict[str, tuple[int, dict[str, Price]]] = {}
_warned: set[str] = set()


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PricesFileError(f"{where}: a price is a number or a decimal string")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PricesFileError(f"{where}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise PricesFileError(f"{where}: a price is a finite number >= 0, not {value!r}")
    return price


def default_price() -> Price:
    return Price(
        input=_decimal(settings.BILLING_DEFAULT_PRICE_INPUT, "BILLING_DEFAULT_PRICE_INPUT"),
        output=_decimal(settings.BILLING_DEFAULT_PRICE_OUTPUT, "BILLING_DEFAULT_PRICE_OUTPUT"),
        characters=_decimal(
            settings.BILLING_DEFAULT_PRICE_CHARACTERS, "BILLING_DEFAULT_PRICE_CHARACTERS"
        ),
        known=False,
    )


def prices_parse(text: str, *, source: str = "prices file") -> dict[str, Price]:
    """The prices in a TOML text: `[models."<name>"]` tables with `input`, `output` and
    `characters` (each optional, default 0)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PricesFileError(f"{source}: not valid TOML ({exc})") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise PricesFileError(f'{source}: "models" must be a table of [models."<name>"]')
    prices: dict[str, Price] = {}
    for name, entry in models.items():
        where = f'{source}: [models."{name}"]'
        if not isinstance(entry, dict):
            raise PricesFileError(f"{where} must be a table")
        unknown = set(entry) - set(PRICE_FIELDS)
        if unknown:
            raise PricesFileError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                f"use {', '.join(PRICE_FIELDS)}"
            )
        prices[name] = Price(
            **{f: _decimal(entry.get(f, "0"), f"{where} {f}") for f in PRICE_FIELDS}
        )
    return prices


def prices_load() -> dict[str, Price]:
    """The current prices file, parsed (cached until the file changes)."""
    path = str(settings.PRICES_FILE)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise PricesFileError(f"PRICES_FILE {path}: cannot be read ({exc.strerror})") from None
    with _lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PricesFileError(f"PRICES_FILE {path}: cannot be read ({exc})") from None
    prices = prices_parse(text, source=f"PRICES_FILE {path}")
    with _lock:
        _cache[path] = (mtime, prices)
    return prices


def price_of(model: str) -> Price:
    """The price of a model: its exact name, else the longest listed name it starts
    with (a dated version), else the default price (and a warning, once)."""
    prices = prices_load()
    price = prices.get(model) or prices.get(model.lower())
    if price is None:
        starts = [name for name in prices if name and model.lower().startswith(name.lower())]
        if starts:
            price = prices[max(starts, key=len)]
    if price is not None:
        return price
    with _lock:
        first = model not in _warned
        _warned.add(model)
    if first:
        log.warning(
            "no price for model %r in %s: charging the default price "
            "(BILLING_DEFAULT_PRICE_*); add it to the prices file",
            model,
            settings.PRICES_FILE,
        )
    return default_price()


def _cost(amount: int, per_million: Decimal) -> Decimal:
    return (Decimal(amount) * per_million / MILLION).quantize(COST_QUANTUM, rounding=ROUND_CEILING)


def model_cost(*, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price = price_of(model)
    return _cost(input_tokens, price.input) + _cost(output_tokens, price.output)


def speech_cost(*, model: str, characters: int) -> Decimal:
    return _cost(characters, price_of(model).characters)
