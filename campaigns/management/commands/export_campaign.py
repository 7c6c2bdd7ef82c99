"""A campaign's event log as JSON Lines, for backups and for import_campaign."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import services
from rpgai.errors import DomainError

from ._common import campaign_id_arg


class Command(BaseCommand):
    help = (
        "Write a campaign's events, in seq order, as JSON Lines of event envelopes (one per "
        "line, as the API sends them) to stdout or to --output. Import the file with "
        "import_campaign. Hidden events are included: treat the file as GM-only (a FILE "
        "is created with mode 0600)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", metavar="ID", help="The campaign's UUID.")
        parser.add_argument(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (replaced only once the export is complete) instead of stdout.",
        )

    def handle(
        self, *args: Any, campaign_id: str, output: str | None = None, **options: Any
    ) -> None:
        cid = campaign_id_arg(campaign_id)
        lines = services.campaign_export(campaign_id=cid)
        try:
            count = self._write(cid, lines, output)
        finally:
            lines.close()  # release the database cursor even when writing failed
        where = f" to {output}" if output not in (None, "-") else ""
        self.stderr.write(self.style.SUCCESS(f"exported {count} events of campaign {cid}{where}"))

    def _write(self, cid: uuid.UUID, lines: Generator[str, None, None], output: str | None) -> int:
        try:
            # The generator checks that the campaign exists on its first step.
            first = next(lines, None)
        except DomainError as exc:
            raise CommandError(f"{exc.detail}: {cid}") from exc
        if first is None:
            raise CommandError(f"campaign {cid} has no events")

        if output is None or output == "-":
            self.stdout.write(first)
            count = 1
            for line in lines:
                self.stdout.write(line)
                count += 1
            return count

        target = Path(output)
        if target.is_dir():
            raise CommandError(f"{output} is a directory")
        try:
            # Write next to the target, then rename: a failed export never leaves half a file.
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}."
            )
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(first + "\n")
                count = 1
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            os.replace(tmp_name, target)
        except BaseException as exc:
            Path(tmp_name).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise CommandError(f"cannot write {output}: {exc.strerror}") from exc
            raise
        return count
