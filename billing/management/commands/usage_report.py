"""Spend and tokens per day, campaign, model and purpose (CONTRACTS §6: usage_report)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import selectors
from billing.models import ModelUsage
from billing.selectors import usd_str
from campaigns.management.commands._common import campaign_id_arg
from campaigns.selectors import campaign_get

DAYS_MAX = 3660
COLUMNS = ("day", "campaign", "purpose", "provider", "model", "calls", "input", "output", "chars")


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if not 1 <= days <= DAYS_MAX:
        raise argparse.ArgumentTypeError(f"between 1 and {DAYS_MAX} days")
    return days


class Command(BaseCommand):
    help = (
        "Print model and speech usage over the last N days (UTC, today included): one line "
        "per day, campaign, purpose, provider and model with calls, tokens, characters and "
        "cost in USD, then the total; with --campaign, that campaign only and its budget."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", metavar="ID", help="Only this campaign (its UUID).")
        parser.add_argument(
            "--days", type=_days, default=30, metavar="N", help="The last N days (default 30)."
        )

    def handle(
        self, *args: Any, campaign: str | None = None, days: int = 30, **options: Any
    ) -> None:
        campaign_id = campaign_id_arg(campaign) if campaign else None
        found = campaign_get(campaign_id=campaign_id) if campaign_id else None
        if (
            campaign_id is not None
            and found is None
            and not ModelUsage.objects.filter(campaign_id=campaign_id).exists()
        ):
            raise CommandError(f"no campaign with id {campaign_id} (and no usage recorded for it)")

        since = selectors.days_start(days)
        scope = (
            f"campaign {found.name!r} ({campaign_id})"
            if found
            else (f"deleted campaign {campaign_id}" if campaign_id else "all campaigns")
        )
        self.stdout.write(f"Usage of {scope}, last {days} day(s), since {since:%Y-%m-%d} UTC")

        rows = selectors.usage_by_day(campaign_id=campaign_id, days=days)
        names: dict[Any, str] = {}
        table = [(*COLUMNS, "cost_usd")]
        for row in rows:
            cid = row["campaign_id"]
            if cid not in names:
                named = campaign_get(campaign_id=cid) if cid else None
                names[cid] = named.name[:24] if named else (str(cid)[:8] if cid else "-")
            table.append(
                (
                    row["day"].isoformat(),
                    names[cid],
                    row["purpose"],
                    row["provider"],
                    row["model"],
                    str(row["calls"]),
                    str(row["input_tokens"]),
                    str(row["output_tokens"]),
                    str(row["characters"]),
                    usd_str(row["cost_usd"]),
                )
            )
        totals = selectors.usage_totals(campaign_id=campaign_id, days=days)
        table.append(
            (
                "total",
                "",
                "",
                "",
                "",
                str(totals["calls"]),
                str(totals["input_tokens"]),
                str(totals["output_tokens"]),
                str(totals["characters"]),
                usd_str(totals["cost_usd"]),
            )
        )
        if not rows:
            self.stdout.write("No usage recorded.")
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        numeric = set(range(5, len(widths)))
        for line in table if rows else table[-1:]:
            cells = [
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                for i, cell in enumerate(line)
            ]
            self.stdout.write("  ".join(cells).rstrip())

        if found is not None:
            status = selectors.budget_status(campaign_id=found.id)
            self.stdout.write(
                f"Last 24 hours: ${usd_str(status.spent_usd)} spent of the "
                f"${usd_str(status.daily_cap_usd)} daily cap ({status.percent}%), "
                f"${usd_str(status.reserved_usd)} held for calls in flight; hard stop "
                f"{'on' if status.hard_stop else 'off'}"
                + ("; running degraded" if status.degraded else "")
            )
