"""Model and speech usage (append-only), campaign and user budgets, open reservations.

Money is `Decimal` in USD everywhere, stored with 10 decimal places: one token of a
cheap model costs a few hundred-millionths of a dollar.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

MONEY = {"max_digits": 20, "decimal_places": 10}


class Purpose(models.TextChoices):
    DM_TURN = "dm_turn", "DM turn"
    REPAIR = "repair", "Repair of an answer"
    SUMMARY = "summary", "Summary"
    EMBEDDING = "embedding", "Embedding"
    TTS = "tts", "Speech"


class ModelUsage(models.Model):
    """What one model or speech call cost. Never updated or deleted (database triggers):
    it is the record budgets and reports are computed from.

    `campaign_id` and `user_id` are plain UUIDs, not foreign keys: deleting a campaign
    or a user must not erase what was spent (a user's daily cap counts spend in a
    campaign deleted since)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign_id = models.UUIDField(null=True, blank=True)
    user_id = models.UUIDField(null=True, blank=True)
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=100)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    characters = models.PositiveIntegerField(default=0)  # speech
    cost_usd = models.DecimalField(**MONEY)
    # True when the provider reported no usage and the tokens were counted here.
    estimated = models.BooleanField(default=False)
    request_id = models.CharField(max_length=64, blank=True, default="")
    turn_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "model usage"
        verbose_name_plural = "model usage"
        indexes = [
            models.Index(fields=["campaign_id", "created_at"], name="usage_campaign_time"),
            models.Index(fields=["user_id", "created_at"], name="usage_user_time"),
            models.Index(fields=["created_at"], name="usage_time"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model} ${self.cost_usd}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("usage is append-only; record a new row instead")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("usage is append-only and is never deleted")


def default_daily_cap() -> Decimal:
    return Decimal(str(settings.BILLING_DEFAULT_DAILY_CAP_USD))


def default_hard_stop() -> bool:
    return bool(settings.BILLING_DEFAULT_HARD_STOP)


class CampaignBudget(models.Model):
    """A campaign's cap on spend over the last 24 hours; its row is the lock every
    reservation of the campaign takes (SELECT ... FOR UPDATE)."""

    campaign = models.OneToOneField(
        "campaigns.Campaign", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    daily_cap_usd = models.DecimalField(max_digits=12, decimal_places=4, default=default_daily_cap)
    # On: a call that could pass the cap is refused. Off: warn the GM and degrade.
    hard_stop = models.BooleanField(default=default_hard_stop)
    # The highest warning threshold (percent) announced in the current window.
    warned_percent = models.PositiveSmallIntegerField(default=0)
    warned_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"budget of {self.campaign_id}: ${self.daily_cap_usd}/24h"


class UserBudget(models.Model):
    """A user's own cap on spend over the last 24 hours, across every campaign; blank:
    the BILLING_USER_DAILY_CAP_USD setting (blank there too: no cap)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    daily_cap_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"budget of user {self.user_id}"


class Reservation(models.Model):
    """Money set aside for a call in flight: counted against the caps until the call is
    settled (replaced by its ModelUsage) or released, or until it expires (a worker that
    died mid-call)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(max_length=100, unique=True)
    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    user_id = models.UUIDField(null=True, blank=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    amount_usd = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["campaign", "expires_at"], name="reservation_campaign"),
            models.Index(fields=["user_id", "expires_at"], name="reservation_user"),
        ]

    def __str__(self) -> str:
        return f"reservation {self.key} ${self.amount_usd}"
