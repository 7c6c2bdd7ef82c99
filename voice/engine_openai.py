"""The `openai` engine: the SDK's speech endpoint (`POST /v1/audio/speech`).

OPENAI_TTS_BASE_URL (default OPENAI_BASE_URL), OPENAI_TTS_MODEL and OPENAI_TTS_VOICE
point it at OpenAI or any compatible speech server. The audio is asked for as WAV and
re-written with exact sizes (streaming servers leave them unset). The engine has no
pitch; a profile's pitch is ignored here.
"""

from __future__ import annotations

import threading

import openai
from django.conf import settings

from .engines import Speech, SpeechError, wav_read, wav_write

_clients: dict[tuple[str | None, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(base_url: str | None, api_key: str) -> openai.OpenAI:
    """One client (one connection pool) per server and key."""
    with _clients_lock:
        client = _clients.get((base_url, api_key))
        if client is None:
            # Retries are the task's (it resumes at the first segment not yet announced).
            client = openai.OpenAI(api_key=api_key or "no-key", base_url=base_url, max_retries=0)
            _clients[(base_url, api_key)] = client
        return client


class OpenAIEngine:
    name = "openai"

    def warm_up(self) -> None:
        pass

    def synthesize(self, text: str, *, voice: str, speed: float, pitch: float) -> Speech:
        model = settings.OPENAI_TTS_MODEL
        voice = voice or settings.OPENAI_TTS_VOICE
        client = _client(settings.OPENAI_TTS_BASE_URL, settings.OPENAI_TTS_API_KEY)
        try:
            response = client.audio.speech.create(
                model=model,
                voice=voice,
                input=text,
                response_format="wav",
                speed=speed,
                timeout=settings.OPENAI_TTS_TIMEOUT_SECONDS,
            )
            data = response.read()
        except openai.APIStatusError as exc:
            raise SpeechError(
                f"the speech server answered HTTP {exc.status_code}",
                code="speech_http_error",
                retryable=exc.status_code == 429 or exc.status_code >= 500,
            ) from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise SpeechError(
                f"the speech server could not be reached ({type(exc).__name__})",
                code="speech_unreachable",
                retryable=True,
            ) from exc
        pcm = wav_read(data)
        if pcm.frame_count == 0:
            raise SpeechError("the speech server sent no audio", code="speech_empty")
        return Speech(
            wav=wav_write(pcm), duration_ms=pcm.duration_ms, voice_id=f"openai:{model}:{voice}"
        )
