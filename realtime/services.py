"""Presence: who is in a campaign room right now, across every server process."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from campaigns.models import Membership

from .models import RoomPresence


def presence_enter(*, channel_name: str, membership: Membership) -> None:
    RoomPresence.objects.update_or_create(
        channel_name=channel_name,
        defaults={
            "campaign_id": membership.campaign_id,
            "user_id": membership.user_id,
            "display_name": membership.display_name,
            "role": membership.role,
            "last_seen": timezone.now(),
        },
    )


def presence_touch(*, channel_name: str) -> None:
    RoomPresence.objects.filter(channel_name=channel_name).update(last_seen=timezone.now())


def presence_leave(*, channel_name: str) -> None:
    RoomPresence.objects.filter(channel_name=channel_name).delete()


def presence_list(*, campaign_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """The members online now: one entry per user, whatever their number of tabs."""
    fresh_after = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL_SECONDS)
    rows = (
        RoomPresence.objects.filter(campaign_id=campaign_id, last_seen__gte=fresh_after)
        .order_by("display_name")
        .values("user_id", "display_name", "role")
    )
    users: dict[str, dict[str, Any]] = {}
    for row in rows:
        users.setdefault(
            str(row["user_id"]),
            {
                "user_id": str(row["user_id"]),
                "display_name": row["display_name"],
                "role": row["role"],
            },
        )
    return list(users.values())
