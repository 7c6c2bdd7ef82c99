"""Re-fold every event and compare with the stored snapshots (the log is the record)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import selectors, services
from rpgai.errors import DomainError

from ._common import campaign_id_arg


class Command(BaseCommand):
    help = (
        "Re-fold each campaign's events from seq 1 and compare the result with its stored "
        "snapshot. Prints one line per campaign whose snapshot drifted (with the state keys "
        "that differ) and a summary, and replaces drifted snapshots with the fresh fold. "
        "With --check nothing is changed and the exit code is 1 when any drift is found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--campaign",
            metavar="ID",
            help="Only this campaign (its UUID). Default: every campaign.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Report only, fix nothing; exit with code 1 if any snapshot drifted.",
        )

    def handle(
        self, *args: Any, campaign: str | None = None, check: bool = False, **options: Any
    ) -> None:
        campaign_id: uuid.UUID | None = None
        if campaign is not None:
            campaign_id = campaign_id_arg(campaign)
            if selectors.campaign_get(campaign_id=campaign_id) is None:
                raise CommandError(f"no campaign with id {campaign_id}")
        try:
            checked, drifts = services.snapshots_rebuild(campaign_id=campaign_id, fix=not check)
        except DomainError as exc:
            raise CommandError(exc.detail) from exc

        for drift in drifts:
            keys = ", ".join(drift.differing_keys) or "none (version only)"
            outcome = "fixed" if drift.fixed else "not fixed (--check)"
            self.stdout.write(
                f"{drift.campaign_id}: drift in {keys}; stored version {drift.stored_version}, "
                f"events fold to version {drift.folded_version}; {outcome}"
            )
        summary = f"{checked} campaign(s) checked, {len(drifts)} with drift"
        if not drifts:
            self.stdout.write(self.style.SUCCESS(f"{summary}: every snapshot matches its events."))
        elif check:
            raise CommandError(f"{summary}; run without --check to fix them.", returncode=1)
        else:
            self.stdout.write(self.style.WARNING(f"{summary}, all fixed."))
