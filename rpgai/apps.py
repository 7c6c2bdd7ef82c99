from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The project package as an app, for operations: metrics listen to the other apps'
    signals from the start, the /metrics access settings are checked at startup, and
    tracing is set up when an OTLP endpoint is configured (web and workers alike)."""

    name = "rpgai"
    label = "rpgai_ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from . import metrics, tracing
        from .ops_urls import metrics_settings_check

        metrics_settings_check()
        metrics.receivers_connect()
        tracing.configure()
