"""Campaigns, their members, the append-only event log and its folded snapshot."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models

INVITE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread


def new_invite_code() -> str:
    return "".join(secrets.choice(INVITE_ALPHABET) for _ in range(10))


class Campaign(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    edition = models.CharField(max_length=40, default="5e")
    invite_code = models.CharField(max_length=16, unique=True, default=new_invite_code)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # A fork (campaigns.forks) points back at the campaign and seq it was forked from.
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    forked_at_seq = models.PositiveIntegerField(null=True, blank=True)

    class TurnMode(models.TextChoices):
        FREE = "free", "Free (coalesced turns)"
        ROUNDS = "rounds", "Rounds (the DM waits for every player present)"

    # Round-based turns (orchestrator.rounds): the DM answers once every player present
    # has acted, or `round_seconds` after the round's first action.
    turn_mode = models.CharField(max_length=8, choices=TurnMode.choices, default=TurnMode.FREE)
    round_seconds = models.PositiveIntegerField(default=120)
    # An archived campaign is read-only (campaigns.services.campaign_update): no actions,
    # rolls, directions, whispers or DM turns, and it leaves the campaign list unless asked
    # for. A status of this row, not of the story: a fork or an import starts unarchived.
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        GM = "gm", "Game master"
        PLAYER = "player", "Player"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.PLAYER)
    display_name = models.CharField(max_length=60)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="membership_unique_user")
        ]
        ordering = ["joined_at"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.get_role_display()})"

    @property
    def is_gm(self) -> bool:
        return self.role == self.Role.GM


class CampaignBan(models.Model):
    """A member the GM kicked: `join` refuses them (403 `banned`) whatever the invite
    code, until a GM lifts the ban. The name they had is kept for the GM's list, as their
    membership is gone."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="bans")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="campaign_bans"
    )
    display_name = models.CharField(max_length=60, blank=True, default="")
    banned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    banned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="campaign_ban_unique_user")
        ]
        ordering = ["banned_at"]

    def __str__(self) -> str:
        return f"{self.display_name or 'a user'} (banned)"


class Event(models.Model):
    """One entry of a campaign's log. Never updated or deleted (database triggers)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    actor_kind = models.CharField(max_length=8)
    # A plain UUID, not a foreign key: deleting a user must not rewrite history.
    actor_user_id = models.UUIDField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    visibility = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True, default="")
    # Makes a repeated client action (same action_id) a no-op instead of a second event.
    dedupe_key = models.CharField(max_length=80, null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["campaign", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "seq"], name="event_unique_seq"),
            models.UniqueConstraint(
                fields=["campaign", "dedupe_key"],
                condition=models.Q(dedupe_key__isnull=False),
                name="event_unique_dedupe_key",
            ),
        ]
        indexes = [models.Index(fields=["campaign", "type"], name="event_campaign_type")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("events are append-only; append a new event instead")
        super().save(*args, **kwargs)


class Snapshot(models.Model):
    """The fold of a campaign's events; `version` is the seq of the last event folded."""

    campaign = models.OneToOneField(
        Campaign, primary_key=True, on_delete=models.CASCADE, related_name="snapshot"
    )
    version = models.PositiveIntegerField(default=0)
    state = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"snapshot of {self.campaign_id} at {self.version}"


class DiceSeed(models.Model):
    """A campaign's secret dice seed. Only its SHA-256 (`seed_hash`) is published, in
    `dice_seed_committed`, until the GM reveals it; the secret never leaves the server
    before that (it is not in any API, page or admin)."""

    seed_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="dice_seeds")
    secret = models.CharField(max_length=64)  # hex of 32 random bytes
    seed_hash = models.CharField(max_length=64)  # hex SHA-256 of the secret's bytes
    created_at = models.DateTimeField(auto_now_add=True)
    revealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"dice seed {self.seed_id} ({'revealed' if self.revealed_at else 'secret'})"

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"<DiceSeed {self.seed_id} campaign={self.campaign_id}>"
