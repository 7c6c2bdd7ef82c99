"""Recompute every roll of a campaign's revealed dice seeds and compare with the log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import selectors
from campaigns.dice import dice_verify

from ._common import campaign_id_arg


class Command(BaseCommand):
    help = (
        "Recompute every roll made under each revealed dice seed of CAMPAIGN from the log "
        "alone (the seed in dice_seed_revealed, its SHA-256 in dice_seed_committed) and "
        "compare totals, details and dice. Prints one line per seed and per mismatch; the "
        "exit code is 1 when any roll or seed does not match."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", metavar="CAMPAIGN", help="The campaign's id (a UUID).")
        parser.add_argument(
            "--verbose-rolls", action="store_true", help="Also print every roll that matches."
        )

    def handle(
        self, *args: Any, campaign: str, verbose_rolls: bool = False, **options: Any
    ) -> None:
        campaign_id = campaign_id_arg(campaign)
        if selectors.campaign_get(campaign_id=campaign_id) is None:
            raise CommandError(f"no campaign with id {campaign_id}")
        report = dice_verify(campaign_id=campaign_id)
        for seed in report.seeds:
            if not seed.revealed:
                self.stdout.write(
                    f"seed {seed.seed_id}: secret, {len(seed.rolls)} roll(s) not checkable yet"
                )
                continue
            checked = sum(1 for r in seed.rolls if r.ok is not None)
            bad = [r for r in seed.rolls if r.ok is False]
            hash_note = "hash matches" if seed.hash_ok else "HASH DOES NOT MATCH THE COMMITMENT"
            self.stdout.write(
                f"seed {seed.seed_id}: revealed at #{seed.revealed_seq}, {hash_note}, "
                f"{checked} roll(s) recomputed, {len(bad)} mismatch(es)"
            )
            for roll in seed.rolls:
                if roll.ok is False:
                    self.stdout.write(
                        self.style.ERROR(
                            f"  MISMATCH #{roll.seq} {roll.formula} (roll {roll.roll_id}): "
                            f"{roll.problem}"
                        )
                    )
                elif roll.ok and verbose_rolls:
                    self.stdout.write(f"  ok #{roll.seq} {roll.formula}: {roll.computed_detail}")
        summary = (
            f"{report.checked} roll(s) checked in {report.seconds:.3f}s, "
            f"{report.mismatches} mismatch(es)"
        )
        if report.mismatches:
            raise CommandError(f"{summary}: the log does not match its dice.", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"{summary}: every revealed roll matches."))
