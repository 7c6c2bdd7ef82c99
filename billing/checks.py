"""System checks: a prices file or billing setting that cannot work is reported when the
server starts (`manage.py check`), not at the first model call."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from .prices import PricesFileError, default_price, prices_load


@register()
def billing_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    try:
        prices_load()
        default_price()
    except PricesFileError as exc:
        errors.append(Error(exc.detail, id="billing.E001"))
    amounts: dict[str, Decimal] = {}
    for name in (
        "BILLING_DEFAULT_DAILY_CAP_USD",
        "BILLING_USER_DAILY_CAP_USD",
        "BILLING_MAX_DAILY_CAP_USD",
    ):
        value = str(getattr(settings, name) or "").strip()
        if name == "BILLING_USER_DAILY_CAP_USD" and not value:
            continue
        try:
            amounts[name] = Decimal(value)
            ok = amounts[name].is_finite() and amounts[name] >= 0
        except InvalidOperation:
            ok = False
        if not ok:
            amounts.pop(name, None)
            errors.append(Error(f"{name}: {value!r} is not an amount >= 0", id="billing.E002"))
    default = amounts.get("BILLING_DEFAULT_DAILY_CAP_USD")
    ceiling = amounts.get("BILLING_MAX_DAILY_CAP_USD")
    if default is not None and ceiling is not None and default > ceiling:
        # Refused at start rather than clamped: the operator meant one of the two figures,
        # and only they know which.
        errors.append(
            Error(
                f"BILLING_DEFAULT_DAILY_CAP_USD ({default}) is above BILLING_MAX_DAILY_CAP_USD "
                f"({ceiling}): a new campaign would start above what a GM may set",
                hint="Lower the default or raise the maximum.",
                id="billing.E005",
            )
        )
    thresholds = settings.BILLING_WARN_AT_PERCENT
    if not all(isinstance(t, int) and 0 < t <= 1000 for t in thresholds):
        errors.append(
            Error("BILLING_WARN_AT_PERCENT: whole percentages such as 80,100", id="billing.E003")
        )
    if not 0 < float(settings.BILLING_DEGRADE_SUMMARY_FACTOR) <= 1:
        errors.append(
            Error("BILLING_DEGRADE_SUMMARY_FACTOR: a factor in (0, 1]", id="billing.E004")
        )
    return errors
