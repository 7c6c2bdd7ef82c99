from django.apps import AppConfig


class LlmConfig(AppConfig):
    """Model calls: the adapters, token counting, and the one paid call (services.py)."""

    name = "llm"
    verbose_name = "Model calls"
