"""Text-to-speech engines behind one interface: `piper` (local), `openai`, `none`.

An engine turns one segment of text into a WAV file (bytes) and reports how long it
plays, measured from the audio itself. Engines are process-wide singletons: piper keeps
its loaded voices (see `voice.engine_piper`), the OpenAI engine its HTTP client.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from typing import Protocol

from rpgai.errors import DomainError

ENGINE_NAMES = ("piper", "openai", "none")
SPEED_MIN, SPEED_MAX = 0.5, 2.0
PITCH_MIN, PITCH_MAX = 0.7, 1.4

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streamed WAVs leave the sizes unset


class SpeechError(DomainError):
    """Synthesis failed; `retryable` when trying again later may work (a 503, a timeout)."""

    code = "speech_failed"

    def __init__(self, detail: str, *, code: str | None = None, retryable: bool = False) -> None:
        super().__init__(detail, code=code)
        self.retryable = retryable


@dataclass(frozen=True)
class Speech:
    """One synthesized segment: a WAV file, how long it plays, and the voice that spoke."""

    wav: bytes
    duration_ms: int
    voice_id: str


class Engine(Protocol):
    name: str

    def synthesize(self, text: str, *, voice: str, speed: float, pitch: float) -> Speech:
        """Speak `text`; `voice` blank means the engine's default voice."""
        ...

    def warm_up(self) -> None:
        """Load what the first synthesis would otherwise wait for."""
        ...


# --- WAV ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pcm:
    channels: int
    sample_width: int  # bytes
    frame_rate: int
    frames: bytes

    @property
    def frame_count(self) -> int:
        return len(self.frames) // (self.channels * self.sample_width)

    @property
    def duration_ms(self) -> int:
        return round(self.frame_count * 1000 / self.frame_rate)


def wav_read(data: bytes) -> Pcm:
    """The PCM audio of a WAV file, also one whose sizes a streaming server left unset."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SpeechError("the engine's answer is not a WAV file", code="speech_bad_audio")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= len(data):
            audio_format, channels, rate, _, _, bits = struct.unpack(
                "<HHIIHH", data[body : body + 16]
            )
            fmt = (audio_format, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                break
            end = len(data) if size in _UNKNOWN_SIZES else min(len(data), body + size)
            audio_format, channels, rate, bits = fmt
            if audio_format not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_EXTENSIBLE) or bits not in (
                8,
                16,
                24,
                32,
            ):
                raise SpeechError(
                    f"unsupported WAV encoding (format {audio_format}, {bits} bits)",
                    code="speech_bad_audio",
                )
            if channels < 1 or rate < 1:
                raise SpeechError("a WAV file without channels or rate", code="speech_bad_audio")
            width = bits // 8
            frames = data[body:end]
            frames = frames[: len(frames) - len(frames) % (channels * width)]
            return Pcm(channels=channels, sample_width=width, frame_rate=rate, frames=frames)
        if size in _UNKNOWN_SIZES and chunk_id != b"data":
            break
        pos = body + size + (size & 1)
    raise SpeechError("a WAV file without a fmt or data chunk", code="speech_bad_audio")


def wav_write(pcm: Pcm) -> bytes:
    """A plain WAV file with exact sizes (which every browser plays)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(pcm.channels)
        wav.setsampwidth(pcm.sample_width)
        wav.setframerate(pcm.frame_rate)
        wav.writeframes(pcm.frames)
    return out.getvalue()


def wav_duration_ms(data: bytes) -> int:
    """How long a WAV file plays: its frames over its frame rate, in milliseconds."""
    return wav_read(data).duration_ms


# --- Registry ---------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}


def engine_get(name: str) -> Engine | None:
    """The engine called `name`; None for `none` (no speech)."""
    name = (name or "none").strip().lower()
    if name == "none":
        return None
    engine = _engines.get(name)
    if engine is not None:
        return engine
    if name == "piper":
        from .engine_piper import PiperEngine

        engine = PiperEngine()
    elif name == "openai":
        from .engine_openai import OpenAIEngine

        engine = OpenAIEngine()
    else:
        raise SpeechError(
            f"unknown TTS engine {name!r}; the engines are {', '.join(ENGINE_NAMES)}",
            code="speech_unknown_engine",
        )
    return _engines.setdefault(name, engine)
