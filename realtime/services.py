"""Presence: who is in a campaign room right now, across every server process, and where
each member left it (`MemberLastSeen`: the campaign's latest seq and the time when their
last socket there closed, read by the recap, memory.recap); and the end of a login,
which closes the sockets it opened (CONTRACTS §7 "Origins and sessions").

A room socket joins, besides its campaign's group, one group for its login: the session's
(`session_group`, a hash of the session key: the key itself is a credential and must not
sit in Redis) when it came in with the cookie, or its user's token group
(`user_tokens_group`) when it came in with `?token=`. Logging out sends that group a
message and every such socket, on any process, closes with 4401.

Token sockets: simplejwt ties no access token to its refresh token, so an API logout
cannot name the sockets of that one login. It closes every token socket of the user
whose access token was issued at or before the logout, and refuses such tokens at
connect for as long as they could live (`token_revoked`, one cache read per connect,
never per message). The user's other devices reconnect after their next refresh (the
room treats 4401 as "get a fresh token"); the logged-out one cannot.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings

from campaigns.models import Membership
from campaigns.selectors import snapshot_get
from rpgai.tasks import call_async

from .models import MemberLastSeen, RoomPresence

log = logging.getLogger(__name__)

AUTH_ENDED = "auth.ended"  # a group message: the login this socket used is over
TOKENS_REVOKED = "auth.tokens_revoked"  # a group message: tokens issued through `iat`


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
    """This socket left the room. When it was its user's last one there (no other fresh
    presence row of theirs in the campaign, on any process), remember where they left:
    the campaign's latest seq and the time (`MemberLastSeen`, read by the recap)."""
    row = (
        RoomPresence.objects.filter(channel_name=channel_name)
        .values("campaign_id", "user_id")
        .first()
    )
    RoomPresence.objects.filter(channel_name=channel_name).delete()
    if row is None:
        return
    now = timezone.now()
    # A row a dead process left behind (stale past the TTL) is no socket: it does not
    # keep the user "still here". Each leave deletes its own row before it looks, so of
    # two last sockets closing at once at least one sees none left and records.
    fresh_after = now - timedelta(seconds=settings.PRESENCE_TTL_SECONDS)
    still_here = RoomPresence.objects.filter(
        campaign_id=row["campaign_id"], user_id=row["user_id"], last_seen__gte=fresh_after
    ).exists()
    if still_here:
        return
    snapshot = snapshot_get(campaign_id=row["campaign_id"])
    if snapshot is None:
        return
    MemberLastSeen.objects.update_or_create(
        campaign_id=row["campaign_id"],
        user_id=row["user_id"],
        defaults={"seq": snapshot.version, "at": now},
    )


def member_last_seen_get(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str
) -> MemberLastSeen | None:
    """Where the member left the campaign's room last (None: their socket never closed
    there since this was recorded)."""
    return MemberLastSeen.objects.filter(campaign_id=campaign_id, user_id=user_id).first()


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


# --- The end of a login ----------------------------------------------------------------------


def session_group(session_key: str) -> str:
    """The channel-layer group of the sockets opened with this session cookie."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_tokens_group(user_id: uuid.UUID | str) -> str:
    """The channel-layer group of a user's sockets opened with `?token=`."""
    return f"tokens.{user_id}"


def _revoked_key(user_id: uuid.UUID | str) -> str:
    return f"ws:tokens-revoked:{user_id}"


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        call_async(layer.group_send, group, message)
    except Exception:
        # The logout itself stands; a socket that missed it still dies with its token
        # (tokens) or at its next reconnect (the session is gone).
        log.exception("closing the sockets of a login failed")


def session_sockets_close(*, session_key: str | None) -> None:
    """A session ended (logout): its room sockets close with 4401 on every process."""
    if session_key:
        _group_send(session_group(session_key), {"type": AUTH_ENDED})


def token_sockets_revoke(*, user_id: uuid.UUID | str) -> None:
    """An API logout: the user's token sockets opened with an access token issued until
    now close with 4401, and such tokens open no socket any more (until they expire)."""
    issued_through = int(time.time())  # `iat` is in whole seconds
    lifetime = int(api_settings.ACCESS_TOKEN_LIFETIME.total_seconds())
    cache.set(_revoked_key(user_id), issued_through, timeout=lifetime + 60)
    _group_send(
        user_tokens_group(user_id), {"type": TOKENS_REVOKED, "issued_through": issued_through}
    )


def token_revoked(*, user_id: uuid.UUID | str, issued_at: int) -> bool:
    """Whether an access token of this user issued at `issued_at` was logged out."""
    through = cache.get(_revoked_key(user_id))
    return through is not None and issued_at <= through
