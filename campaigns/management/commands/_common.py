"""Helpers shared by the campaign commands."""

from __future__ import annotations

import uuid

from django.core.management.base import CommandError


def campaign_id_arg(value: str) -> uuid.UUID:
    """A campaign id from the command line, or a CommandError that says what is wrong."""
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        raise CommandError(f"{value!r} is not a campaign id (a UUID)") from None
