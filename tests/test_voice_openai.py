"""The `openai` speech engine over real HTTP, against a local OpenAI-compatible speech
server (POST /v1/audio/speech answering with WAV), never by patching the SDK."""

from __future__ import annotations

import io
import json
import math
import struct
import threading
import uuid
import wave
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import events_append
from voice.engines import SpeechError, engine_get
from voice.models import SpeechSegment
from voice.tasks import synthesize_narration

# Real commits: speech starts after the narration commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

SPEECH_RATE = 24_000


def tone_wav(seconds: float, *, rate: int = SPEECH_RATE, streamed: bool = False) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV; `streamed` leaves the sizes unset (0xFFFFFFFF),
    as servers that stream their WAV do."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    data = bytearray(out.getvalue())
    if streamed:
        data[4:8] = b"\xff\xff\xff\xff"
        data[40:44] = b"\xff\xff\xff\xff"  # the data chunk's size
    return bytes(data)


class SpeechServer:
    """POST /v1/audio/speech: a tone as long as 60 ms per character of `input`, or the
    scripted answers (status, body) first, one per request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._script: deque[tuple[int, bytes]] = deque()
        self.streamed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/audio/speech":
                    self._answer(404, b'{"error": {"message": "no such path"}}', "application/json")
                    return
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if server._script:
                    status, payload = server._script.popleft()
                    ctype = "audio/wav" if status == 200 else "application/json"
                    self._answer(status, payload, ctype)
                    return
                seconds = 0.06 * len(body.get("input", ""))
                self._answer(200, tone_wav(seconds, streamed=server.streamed), "audio/wav")

            def _answer(self, status: int, payload: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def script(self, *answers: tuple[int, bytes]) -> None:
        self._script.extend(answers)

    def __enter__(self) -> SpeechServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def speech_server(settings, tmp_path):
    with SpeechServer() as server:
        settings.TTS_PROVIDER = "openai"
        settings.OPENAI_TTS_BASE_URL = server.url
        settings.OPENAI_TTS_API_KEY = "test-key"
        settings.OPENAI_TTS_MODEL = "tts-test"
        settings.OPENAI_TTS_VOICE = "onyx"
        settings.MEDIA_ROOT = str(tmp_path)
        yield server


def narrate(campaign, text: str) -> Event:
    [event] = events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "dm_narration",
                {"turn_id": str(uuid.uuid4()), "text": text, "options": ["Go on"]},
                "dm",
            )
        ],
    )
    return event


def audio_events(campaign) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="dm_audio_ready").order_by("seq"))


def test_engine_speaks_through_the_speech_endpoint(speech_server):
    speech = engine_get("openai").synthesize("Hello there.", voice="", speed=1.25, pitch=0.8)

    [sent] = speech_server.requests
    assert sent == {
        "model": "tts-test",
        "voice": "onyx",
        "input": "Hello there.",
        "response_format": "wav",
        "speed": 1.25,
    }
    assert speech_server.headers[0]["authorization"] == "Bearer test-key"
    with wave.open(io.BytesIO(speech.wav)) as wav:
        assert wav.getframerate() == SPEECH_RATE
        assert speech.duration_ms == round(wav.getnframes() * 1000 / wav.getframerate())
    assert speech.duration_ms == 720  # 12 characters at 60 ms
    assert speech.voice_id == "openai:tts-test:onyx"


def test_a_streamed_wav_without_sizes_is_measured_and_rewritten(speech_server):
    speech_server.streamed = True
    speech = engine_get("openai").synthesize("Ten chars.", voice="nova", speed=1.0, pitch=1.0)

    assert speech.duration_ms == 600
    with wave.open(io.BytesIO(speech.wav)) as wav:  # exact sizes again
        assert wav.getnframes() == 600 * SPEECH_RATE // 1000
    assert speech.voice_id == "openai:tts-test:nova"


def test_narration_is_spoken_with_the_openai_engine(speech_server, campaign):
    narration = narrate(campaign, "The gate groans. Torches flare along the wall!")

    events = audio_events(campaign)
    assert [e.payload["text"] for e in events] == [
        "The gate groans.",
        "Torches flare along the wall!",
    ]
    assert [e.payload["segment"] for e in events] == [0, 1]
    assert all(e.payload["segments"] == 2 for e in events)
    assert all(e.payload["narration_seq"] == narration.seq for e in events)
    assert all(e.payload["voice_id"] == "openai:tts-test:onyx" for e in events)
    assert [e.payload["duration_ms"] for e in events] == [960, 1740]
    assert [r["input"] for r in speech_server.requests] == [e.payload["text"] for e in events]


def test_refused_speech_appends_nothing_and_is_not_retried(speech_server, campaign):
    speech_server.script((400, b'{"error": {"message": "unknown voice"}}'))
    narrate(campaign, "One sentence only.")

    assert audio_events(campaign) == []
    assert len(speech_server.requests) == 1
    assert SpeechSegment.objects.filter(campaign=campaign).count() == 0


def test_an_answer_that_is_not_wav_is_refused_clearly(speech_server):
    speech_server.script((200, b"ID3 this is an mp3, not a wav"))
    with pytest.raises(SpeechError) as failure:
        engine_get("openai").synthesize("Hello.", voice="", speed=1.0, pitch=1.0)
    assert failure.value.code == "speech_bad_audio"
    assert not failure.value.retryable


def test_a_busy_server_is_retried_by_the_task_and_each_segment_appended_once(
    speech_server, campaign, settings
):
    settings.TTS_PROVIDER = "none"  # append the narration without speaking it yet
    narration = narrate(campaign, "First words. Second words. Third words.")
    settings.TTS_PROVIDER = "openai"
    # The second segment meets a busy server once: the task fails, Celery retries it.
    speech_server.script((200, tone_wav(0.5)), (503, b'{"error": {"message": "busy"}}'))

    synthesize_narration.apply(
        kwargs={"campaign_id": str(campaign.id), "narration_seq": narration.seq}
    ).get()

    events = audio_events(campaign)
    assert [e.payload["segment"] for e in events] == [0, 1, 2]
    # 1 (ok) + 1 (503) + the retry: segment 0 was not made again, 1 and 2 were.
    assert [r["input"] for r in speech_server.requests] == [
        "First words.",
        "Second words.",
        "Second words.",
        "Third words.",
    ]
    assert SpeechSegment.objects.filter(campaign=campaign).count() == 3
