from django.db import models


class TurnLock(models.Model):
    """At most one DM turn per campaign at a time, across every process.

    Taken by a conditional UPDATE (atomic on SQLite and PostgreSQL); a lock older than
    TURN_LOCK_SECONDS is taken to belong to a dead worker and may be taken over.
    """

    campaign = models.OneToOneField(
        "campaigns.Campaign", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    holder = models.CharField(max_length=64, blank=True, default="")
    acquired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"turn lock of {self.campaign_id}"
