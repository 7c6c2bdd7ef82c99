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
