"""Streaming the narration to the room while the model writes its JSON answer.

Three small pieces, fed chunk by chunk as the model's text arrives:
- `ReasoningFilter` drops `<think>…</think>` text (tags may be split across chunks);
- `NarrationExtractor` pulls the value of the top-level "narration" string out of the
  growing JSON, decoding escapes as they complete;
- `DeltaBatcher` sends the new narration text to the room a few times per second
  (never one message per token), the first piece at once so the first words show fast.
The deltas are ephemeral; the `dm_narration` event is what counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from django.conf import settings

_REASONING_TAGS = ("think", "thinking", "reasoning", "analysis")
_OPEN = tuple(f"<{t}>" for t in _REASONING_TAGS)
_LONGEST_TAG = max(len(t) for t in _REASONING_TAGS) + 3


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


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class NarrationExtractor:
    """Incrementally extracts the top-level `"narration"` string from streamed JSON.

    Anything before the first `{` (a code fence, a sentence) is skipped. Only a key at
    depth 1 counts, so a "narration" inside a tool call's arguments is not mistaken for
    it. `feed` returns the newly decoded narration text (possibly empty).
    """

    def __init__(self, key: str = "narration") -> None:
        self.key = key
        self.done = False
        self._depth = 0
        self._started = False
        self._in_string = False
        self._escape = ""  # a pending escape: "\\", "\\u", "\\u12", ...
        self._high_surrogate: int | None = None
        self._string_buf: list[str] = []
        self._string_is_value = False
        self._last_key: str | None = None
        self._expect_value = False  # just saw ':' after a depth-1 key
        self._capturing = False

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for ch in chunk:
            if self.done:
                break
            if self._in_string:
                decoded = self._string_char(ch)
                if decoded is None:
                    continue
                if decoded is _END:
                    self._end_string()
                    continue
                if self._capturing:
                    out.append(decoded)
                elif not self._string_is_value and self._depth == 1:
                    self._string_buf.append(decoded)
                continue
            if not self._started:
                if ch == "{":
                    self._started = True
                    self._depth = 1
                continue
            if ch == '"':
                self._in_string = True
                self._string_buf = []
                self._string_is_value = self._expect_value or self._depth != 1
                self._capturing = (
                    self._expect_value and self._depth == 1 and self._last_key == self.key
                )
                self._expect_value = False
            elif ch == ":":
                self._expect_value = self._depth == 1
            elif ch in "{[":
                self._depth += 1
                self._expect_value = False
            elif ch in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self.done = True
            elif ch == ",":
                self._expect_value = False
                self._last_key = None if self._depth == 1 else self._last_key
        return "".join(out)

    def _end_string(self) -> None:
        self._in_string = False
        if self._capturing:
            self._capturing = False
            self.done = True
        elif not self._string_is_value and self._depth == 1:
            self._last_key = "".join(self._string_buf)

    def _string_char(self, ch: str) -> str | object | None:
        """The decoded character, `_END` at the closing quote, None while an escape is partial."""
        if self._escape:
            self._escape += ch
            if self._escape.startswith("\\u"):
                if len(self._escape) < 6:
                    return None
                try:
                    code = int(self._escape[2:], 16)
                except ValueError:
                    code = 0xFFFD
                self._escape = ""
                return self._code_point(code)
            self._escape = ""
            return self._flush_surrogate() + _ESCAPES.get(ch, ch)
        if ch == "\\":
            self._escape = "\\"
            return None
        if ch == '"':
            self._high_surrogate = None  # a lone high surrogate at the end is dropped
            return _END
        return self._flush_surrogate() + ch

    def _code_point(self, code: int) -> str | None:
        if 0xD800 <= code <= 0xDBFF:
            prefix = self._flush_surrogate()
            self._high_surrogate = code
            return prefix or None
        if 0xDC00 <= code <= 0xDFFF and self._high_surrogate is not None:
            high, self._high_surrogate = self._high_surrogate, None
            return chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))
        return self._flush_surrogate() + (chr(code) if not 0xD800 <= code <= 0xDFFF else "\ufffd")

    def _flush_surrogate(self) -> str:
        if self._high_surrogate is None:
            return ""
        self._high_surrogate = None
        return "\ufffd"


_END = object()


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


class NarrationStream:
    """Model text chunks in, batched narration deltas to the room out."""

    def __init__(
        self,
        *,
        campaign_id: uuid.UUID | str,
        turn_id: str,
        on_delta: Callable[[str], None] | None = None,
    ) -> None:
        from campaigns.services import broadcast_room

        from .schema import NARRATION_MAX_CHARS

        self.filter = ReasoningFilter()
        self.extractor = NarrationExtractor()
        self.first_delta_at: float | None = None

        def send(text: str) -> None:
            if self.first_delta_at is None:
                self.first_delta_at = time.monotonic()
            broadcast_room(campaign_id, {"type": "room.delta", "turn_id": turn_id, "text": text})
            if on_delta is not None:
                on_delta(text)

        self.batcher = DeltaBatcher(send=send, max_chars=NARRATION_MAX_CHARS)

    def restart(self) -> None:
        """A new attempt begins: parse afresh, but send nothing more to the room."""
        self.filter = ReasoningFilter()
        self.extractor = NarrationExtractor()
        if self.batcher.sent_chars:
            self.batcher.mute()

    def feed(self, chunk: str) -> None:
        if self.extractor.done:
            return
        self.batcher.add(self.extractor.feed(self.filter.feed(chunk)))
        if self.extractor.done:
            self.batcher.flush()  # the narration is whole: no reason to hold its end

    def close(self) -> None:
        self.batcher.close()
