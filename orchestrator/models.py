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


class DMSettings(models.Model):
    """Which model plays the DM of one campaign; blank fields fall back to the settings
    (DM_MODEL_PROVIDER, DM_MODEL). Set by the GM in the admin."""

    class Provider(models.TextChoices):
        DEFAULT = "", "Default (DM_MODEL_PROVIDER)"
        FAKE = "fake", "Fake (deterministic, no key)"
        OPENAI = "openai", "OpenAI-compatible (OPENAI_BASE_URL)"

    campaign = models.OneToOneField(
        "campaigns.Campaign", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    provider = models.CharField(max_length=20, blank=True, default="", choices=Provider.choices)
    model = models.CharField(
        max_length=100, blank=True, default="", help_text="Blank: the DM_MODEL setting."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "DM settings"
        verbose_name_plural = "DM settings"

    def __str__(self) -> str:
        return f"DM settings of {self.campaign_id}"
