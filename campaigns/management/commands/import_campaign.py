"""A new campaign from an export_campaign file: the same events under new ids."""

from __future__ import annotations

import sys
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns import services
from rpgai.errors import DomainError


class Command(BaseCommand):
    help = (
        "Create a new campaign from a JSON Lines export (export_campaign): every event with "
        "its type, payload, actor, visibility, time and seq, under new ids. --owner becomes "
        "its GM; members who exist on this server are re-added. Prints the new campaign's "
        "id. The file is checked line by line first; a bad line creates nothing. FILE '-' "
        "reads stdin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="The export (JSON Lines), or - for stdin.")
        parser.add_argument(
            "--owner",
            required=True,
            metavar="USERNAME",
            help="The user who becomes GM of the imported campaign.",
        )

    def handle(self, *args: Any, file: str, owner: str, **options: Any) -> None:
        User = get_user_model()
        try:
            owner_user = User.objects.get(**{User.USERNAME_FIELD: owner})
        except User.DoesNotExist:
            raise CommandError(f"no user named {owner!r}") from None

        handle: IO[str]
        if file == "-":
            handle = sys.stdin
        else:
            try:
                handle = open(file, encoding="utf-8")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            campaign = services.campaign_import(lines=handle, owner=owner_user)
        except DomainError as exc:
            raise CommandError(f"{file}: {exc.detail}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        finally:
            if handle is not sys.stdin:
                handle.close()

        self.stderr.write(f"imported {campaign.name!r} with {owner} as GM; its id:")
        self.stdout.write(str(campaign.id))
