"""Streaming the narration to the room while the model writes its JSON answer.

Three small pieces, fed chunk by chunk as the model's text arrives:
- `ReasoningFilter` drops `<think>…</think>` text (tags may be split across chunks);
- `NarrationExtractor` pulls the value of the top-level "narration" string out of the
  growing JSON, decoding escapes as they complete;
- `DeltaBatcher` sends the new narration text to the room a few times per second
  (never one message per token), the first piece at once so the first words show fast.
The deltas are ephemeral; the `dm_narration` event is what counts. What the room has been
told of the narration still streaming is also kept in the cache for a while
(`narration_so_far`): a page reloaded mid-narration is sent the whole text so far when it
says hello (realtime.consumers), then the deltas that continue it. Each delta carries its
`offset` (the characters of the narration sent before it) so that a socket never shows a
piece twice nor skips one.

With a voice, the narration is also spoken as it streams (issue 23): `SentenceSpeaker`
cuts it into the segments its commit would speak (voice.text.StreamedSentences) and
queues each whole sentence on the voice worker at once; the room hears it as
`narration.audio` while the text still streams.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from pydantic_core import from_json

from rpgai.aio import io

if TYPE_CHECKING:
    from voice.text import StreamedSentences

_REASONING_TAGS = ("think", "thinking", "reasoning", "analysis")
_OPEN = tuple(f"<{t}>" for t in _REASONING_TAGS)
_LONGEST_TAG = max(len(t) for t in _REASONING_TAGS) + 3
# How long the text of a narration still streaming is kept past its last delta: longer
# than any turn may take (DM_TURN_DEADLINE_SECONDS), then it goes by itself.
STREAM_KEEP_SLACK_SECONDS = 120
# How many characters the narration's parser may hold back while it is spoken as it
# streams (SentenceSpeaker): the end of a sentence is not kept waiting.
SPOKEN_PARSE_STEP = 8


def _stream_key(campaign_id: uuid.UUID | str) -> str:
    # One per campaign: a campaign runs one turn at a time (orchestrator.services).
    return f"rpgai:narration-so-far:{campaign_id}"


def _stream_keep_seconds() -> int:
    return int(settings.DM_TURN_DEADLINE_SECONDS) + STREAM_KEEP_SLACK_SECONDS


def narration_so_far_get(*, campaign_id: uuid.UUID | str) -> dict[str, str] | None:
    """The narration the room has been told so far of the turn streaming now, as
    `{"turn_id", "text"}` (the public narration only: private words are never streamed);
    None when no narration is streaming. Sync: the cache (Redis when REDIS_URL is set,
    shared by every process; else this process's memory, where embedded turns run)."""
    value = cache.get(_stream_key(campaign_id))
    if (
        isinstance(value, dict)
        and isinstance(value.get("turn_id"), str)
        and isinstance(value.get("text"), str)
    ):
        return {"turn_id": value["turn_id"], "text": value["text"]}
    return None


def narration_so_far_forget(*, campaign_id: uuid.UUID | str, turn_id: str) -> None:
    """The turn has ended (narrated or failed): its streamed text is kept no longer. Not
    when another turn's text is kept there already."""
    key = _stream_key(campaign_id)
    value = cache.get(key)
    if isinstance(value, dict) and value.get("turn_id") == turn_id:
        cache.delete(key)


class ReasoningFilter:
    """Passes text through except what lies between `<think>` and `</think>` (and kin)."""

    def __init__(self) -> None:
        self._pending = ""
        self._inside: str | None = None

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        self._pending = ""
        out: list[str] = []
        i = 0
        while i < len(text):
            if self._inside is None:
                lt = text.find("<", i)
                if lt == -1:
                    out.append(text[i:])
                    break
                out.append(text[i:lt])
                rest = text[lt : lt + _LONGEST_TAG].lower()
                tag = next((t for t in _OPEN if rest.startswith(t)), None)
                if tag is not None:
                    self._inside = tag[1:-1]
                    i = lt + len(tag)
                elif any(t.startswith(rest) for t in _OPEN) and len(rest) < _LONGEST_TAG:
                    self._pending = text[lt:]  # maybe the start of a tag: wait for more
                    break
                else:
                    out.append("<")
                    i = lt + 1
            else:
                close = f"</{self._inside}>"
                at = text.lower().find(close, i)
                if at == -1:
                    # Keep a tail that may be the start of the closing tag.
                    self._pending = text[max(i, len(text) - len(close) + 1) :]
                    break
                self._inside = None
                i = at + len(close)
        return "".join(out)


class NarrationExtractor:
    """Incrementally extracts the top-level `"narration"` string from streamed JSON.

    Anything before the first `{` (a code fence, a sentence) is skipped. From there the
    growing text is parsed with pydantic-core's partial JSON parser, which keeps an
    unfinished string and drops an unfinished escape (`\\`, `\\u00`, half a surrogate
    pair), so what it gives never ends in half a character. Only the top-level key counts,
    so a "narration" inside a tool call's arguments is not mistaken for it. `feed` returns
    the newly decoded narration text (possibly empty); `done` turns true once the
    narration string is closed, or when nothing more can come of it (the value is not a
    string, or the text is not JSON).

    Cost: each parse reads the whole object so far, so parsing on every chunk would be
    quadratic in the answer's length. A chunk is parsed only when it can matter: before the
    narration's value has begun, only once `"narration"` has appeared and the chunk has a
    quote (which may begin the value); once its first text is out, only a chunk with a
    quote (which may close it) or one that brings the unparsed text to `step` characters.
    Deltas are batched a few times per second anyway, so holding back up to `step`
    characters costs no visible lag; `flush` gives what is held back.
    """

    def __init__(self, key: str = "narration", step: int = 32) -> None:
        self.key = key
        self.step = step
        self.done = False
        self._buf: list[str] = []  # the text from the first `{` on
        self._unparsed = 0  # characters fed since the last parse
        self._emitted = ""  # the narration sent so far
        self._token = f'"{key}"'
        self._tail: str | None = ""  # the end of the text so far, while looking for `"narration"`
        self._started = False  # the narration's value has begun

    def feed(self, chunk: str) -> str:
        if self.done or not chunk:
            return ""
        if not self._buf:
            brace = chunk.find("{")
            if brace == -1:
                return ""
            chunk = chunk[brace:]
        self._buf.append(chunk)
        self._unparsed += len(chunk)
        if self._tail is not None:  # has the key appeared yet?
            probe = self._tail + chunk
            self._tail = None if self._token in probe else probe[1 - len(self._token) :]
            if self._tail is not None:
                return ""
        if '"' not in chunk and not (
            self._started and (not self._emitted or self._unparsed >= self.step)
        ):
            return ""
        return self._parse(chunk)

    def flush(self) -> str:
        """The narration text held back so far (call it when the model's text ends)."""
        if self.done or not self._unparsed:
            return ""
        return self._parse("")

    def _parse(self, chunk: str) -> str:
        self._unparsed = 0
        text = "".join(self._buf)
        self._buf = [text]
        try:
            answer = from_json(text, allow_partial="trailing-strings")
        except ValueError:
            # Not a prefix of any JSON object: no more text can make it one.
            self.done = True
            return ""
        if not isinstance(answer, dict) or self.key not in answer:
            return ""
        value = answer[self.key]
        if not isinstance(value, str):
            self.done = True
            return ""
        self._started = True
        if not value.startswith(self._emitted):  # a repeated key: keep the first
            self.done = True
            return ""
        new = value[len(self._emitted) :]
        self._emitted = value
        self.done = self._closed(answer, text, chunk)
        return new

    def _closed(self, answer: dict, text: str, chunk: str) -> bool:
        """Whether the narration string has its closing quote."""
        if next(reversed(answer)) != self.key:
            return True  # another key follows it
        if '"' not in chunk:
            return False  # the closing quote is not in this chunk
        # Without trailing strings an unfinished string is left out.
        return self.key in from_json(text, allow_partial=True)


class DeltaBatcher:
    """Sends new narration text to the room, at most every `interval` seconds.

    The first text goes at once (time to first words matters most); after that, text is
    held until `interval` has passed since the last send, and `close()` sends the rest.
    """

    def __init__(
        self,
        *,
        send: Callable[[str], None],
        interval: float | None = None,
        max_chars: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.interval = settings.DM_DELTA_INTERVAL_SECONDS if interval is None else interval
        self.max_chars = max_chars
        self._clock = clock
        self._buffer: list[str] = []
        self._last_sent: float | None = None
        self.sent_chars = 0
        self.messages = 0
        self.muted = False

    def add(self, text: str) -> None:
        if not text or self.muted:
            return
        self._buffer.append(text)
        now = self._clock()
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self.muted:
            self._buffer.clear()
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        if self.max_chars is not None:
            text = text[: max(0, self.max_chars - self.sent_chars)]
        if not text:
            return
        self._last_sent = self._clock()
        self.sent_chars += len(text)
        self.messages += 1
        self._send(text)

    def mute(self) -> None:
        """Stop sending (a retry would stream a different narration over the first)."""
        self.muted = True
        self._buffer.clear()

    def close(self) -> None:
        self.flush()


class SentenceSpeaker:
    """The narration's whole sentences to the voice worker as they stream (issue 23).

    Only the narrating answer's sentences are spoken: a rolling step streams no narration,
    and once a sentence went out, a new attempt (a retried call) is not spoken over it:
    like the deltas, it is muted, and the commit speaks what the final text changed.
    """

    def __init__(self, *, campaign_id: uuid.UUID | str, turn_id: str) -> None:
        self.campaign_id = campaign_id
        self.turn_id = turn_id
        self.muted = False
        self.queued = 0
        self._cutter = self._new_cutter()

    @staticmethod
    def _new_cutter() -> StreamedSentences:
        from voice.text import StreamedSentences

        return StreamedSentences(
            max_chars=settings.VOICE_SEGMENT_MAX_CHARS,
            max_total_chars=settings.VOICE_NARRATION_MAX_CHARS,
            first_max_chars=settings.VOICE_FIRST_SEGMENT_MAX_CHARS,
        )

    def restart(self) -> None:
        if self.queued:
            self.muted = True
        else:
            self._cutter = self._new_cutter()

    def cut(self, text: str, *, whole: bool = False) -> list[tuple[int, str]]:
        """The sentences `text` completes, as (segment, text); with `whole`, the narration
        has ended: its last sentence too."""
        if self.muted:
            return []
        sentences = self._cutter.feed(text) if text else []
        return sentences + self._cutter.finish() if whole else sentences

    async def queue(self, sentences: list[tuple[int, str]]) -> None:
        from voice.services import asentence_queue

        for segment, text in sentences:
            self.queued += 1
            await asentence_queue(
                campaign_id=self.campaign_id, turn_id=self.turn_id, segment=segment, text=text
            )


class NarrationStream:
    """Model text chunks in, batched narration deltas to the room out: the `StreamSink`
    a turn's narrating model call streams into (llm.adapters). With a voice, its whole
    sentences are spoken as they come (`SentenceSpeaker`)."""

    def __init__(
        self,
        *,
        campaign_id: uuid.UUID | str,
        turn_id: str,
        on_delta: Callable[[str], None] | None = None,
        marker: str | None = None,
    ) -> None:
        from .schema import NARRATION_MAX_CHARS

        self.campaign_id = campaign_id
        self.turn_id = turn_id
        self.on_delta = on_delta
        from voice.services import speech_streaming_on

        self.speaker: SentenceSpeaker | None = None
        if speech_streaming_on():
            self.speaker = SentenceSpeaker(campaign_id=campaign_id, turn_id=turn_id)
        self.filter = ReasoningFilter()
        self.extractor = self._extractor()
        self.first_delta_at: float | None = None
        self.told = ""  # what the room has been told of this turn's narration
        # The prompt's data-block nonce: narration that repeats it is the model echoing
        # its input (secret rolls, hidden state), told to no one (`_guard`).
        self.marker = marker or None
        self._held = ""  # a tail that may be the beginning of the marker
        self.echoed = False
        self._outbox: list[str] = []
        self.batcher = DeltaBatcher(send=self._outbox.append, max_chars=NARRATION_MAX_CHARS)

    def _extractor(self) -> NarrationExtractor:
        # Spoken, a sentence's end is wanted as soon as it comes: parsed every few
        # characters rather than every 32 (a few dozen more parses of a short answer).
        return NarrationExtractor(step=SPOKEN_PARSE_STEP if self.speaker else 32)

    def restart(self) -> None:
        """A new attempt begins: parse afresh, but send nothing more to the room."""
        self.filter = ReasoningFilter()
        self.extractor = self._extractor()
        self._held, self.echoed = "", False
        if self.batcher.sent_chars:
            self.batcher.mute()
        if self.speaker is not None:
            self.speaker.restart()

    async def feed(self, chunk: str) -> None:
        if self.extractor.done or self.echoed:
            return
        new = self._guard(self.extractor.feed(self.filter.feed(chunk)))
        self.batcher.add(new)
        if self.echoed:
            # Nothing from the marker on is told or spoken; the answer is refused when
            # parsed (schema.answer_parse), and a repair streams nothing more.
            self.batcher.flush()
            self.batcher.mute()
            await self._send_out()
            return
        sentences = (
            self.speaker.cut(new, whole=self.extractor.done)
            if self.speaker is not None and not self.batcher.muted
            else []
        )
        if self.extractor.done or sentences:
            # The narration is whole, or a sentence is: no reason to hold its end, and a
            # sentence is on screen before its audio is asked for.
            self.batcher.flush()
        await self._send_out()
        if sentences:
            await self.speaker.queue(sentences)  # type: ignore[union-attr]

    def _guard(self, new: str) -> str:
        """`new` less anything from the marker on, and less a tail that may begin it (held
        until the next chunk says)."""
        if self.marker is None:
            return new
        text = self._held + new
        at = text.find(self.marker)
        if at != -1:
            self._held, self.echoed = "", True
            return text[:at]
        keep = next(
            (
                n
                for n in range(min(len(self.marker) - 1, len(text)), 0, -1)
                if self.marker.startswith(text[-n:])
            ),
            0,
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    async def close(self) -> None:
        if not self.echoed:
            # What was held back did not become the marker. An answer that stopped short:
            # its last words are not spoken as streamed (its commit says whether they are
            # the narration, and speaks them then).
            rest = self._held + ("" if self.extractor.done else self.extractor.flush())
            self._held = ""
            at = rest.find(self.marker) if self.marker else -1
            self.batcher.add(rest if at == -1 else rest[:at])
        self.batcher.close()
        await self._send_out()

    async def _send_out(self) -> None:
        from campaigns.services import abroadcast_room

        while self._outbox:
            text = self._outbox.pop(0)
            if self.first_delta_at is None:
                self.first_delta_at = time.monotonic()
            offset = len(self.told)
            self.told += text
            # Kept before it is sent: a page that says hello after this delta went out
            # finds it in what is kept (and drops it as a repeat if it arrives too).
            await io(
                cache.set,
                _stream_key(self.campaign_id),
                {"turn_id": self.turn_id, "text": self.told},
                _stream_keep_seconds(),
            )
            await abroadcast_room(
                self.campaign_id,
                {"type": "room.delta", "turn_id": self.turn_id, "text": text, "offset": offset},
            )
            if self.on_delta is not None:
                self.on_delta(text)
