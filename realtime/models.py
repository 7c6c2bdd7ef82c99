from django.conf import settings
from django.db import models


class RoomPresence(models.Model):
    """One open WebSocket connection in a campaign room (any server process)."""

    channel_name = models.CharField(max_length=200, primary_key=True)
    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    display_name = models.CharField(max_length=60)
    role = models.CharField(max_length=8)
    connected_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["campaign", "last_seen"], name="presence_campaign_seen")]

    def __str__(self) -> str:
        return f"{self.display_name} in {self.campaign_id}"


class MemberLastSeen(models.Model):
    """Where a member left a campaign's room: the campaign's latest seq and the time when
    their last socket to it closed (realtime.services.presence_leave). The recap
    (memory.recap) starts after this seq. One row per member and campaign, overwritten."""

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="last_seen_once_per_member")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} left {self.campaign_id} at seq {self.seq}"
