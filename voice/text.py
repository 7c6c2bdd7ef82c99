"""Cutting a narration into the segments that are spoken one after another.

Each segment is a sentence (or a piece of an over-long one), taken verbatim from the
narration, so that the room can find and highlight it in the text it shows. The first
segment is spoken while the next ones are still being made.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

# A sentence ends with . ! ? or … (maybe repeated), then closing quotes or brackets, then
# a space or the end. "3.5" and "e.g.x" are no ends: the lookahead wants a space.
_SENTENCE_END = re.compile("[.!?\u2026]+[\"'\u201d\u2019\u00bb)\\]]*(?=\\s|$)")
_PARAGRAPH = re.compile(r"\n\s*\n|\r\n\s*\r\n")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "mt", "sr", "jr", "vs", "etc", "e.g", "i.e", "lt", "capt"}
)
_SOFT_BREAK = re.compile("[,;:\u2014\u2013]\\s+")
_MARKUP = re.compile(r"[*_#`~]+")
_SPEAKABLE = re.compile(r"[^\W_]")  # a letter or a digit


@dataclass(frozen=True)
class PlannedSegment:
    """One piece of speech: its text (verbatim from the narration) and who says it."""

    text: str
    speaker: str | None = None  # an entity id; None for the DM

    @property
    def characters(self) -> int:
        return len(self.text)


class SpeakerSegment(BaseModel):
    """A speaker-tagged part of a narration, as the orchestrator may send them."""

    model_config = ConfigDict(extra="ignore")

    speaker: uuid.UUID | None = None
    text: str = Field(min_length=1, max_length=20000)


def speakable(text: str) -> str:
    """What the engine is given: the text without markdown emphasis marks."""
    return " ".join(_MARKUP.sub(" ", text).split())


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the dot ending at `end` closes an abbreviation or an initial ("J.")."""
    if text[end - 1] != ".":
        return False
    word = re.search(r"([\w.]+)\.$", text[:end])
    if word is None:
        return False
    token = word.group(1)
    return token.lower() in _ABBREVIATIONS or (len(token) == 1 and token.isupper())


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence over `max_chars` cut at commas and the like, else at spaces."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = max((m.end() for m in _SOFT_BREAK.finditer(window)), default=0)
        if cut < max_chars // 3:
            space = window.rfind(" ")
            cut = space + 1 if space > 0 else max_chars
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def sentences(text: str, *, max_chars: int = 300) -> list[str]:
    """The text's sentences in order, each verbatim (stripped) and at most `max_chars`."""
    spans: list[tuple[int, int]] = []
    paragraph_starts = [0, *(m.end() for m in _PARAGRAPH.finditer(text))]
    paragraph_ends = [*(m.start() for m in _PARAGRAPH.finditer(text)), len(text)]
    for p_start, p_end in zip(paragraph_starts, paragraph_ends, strict=True):
        paragraph = text[p_start:p_end]
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            if _is_abbreviation(paragraph, match.end()):
                continue
            spans.append((p_start + start, p_start + match.end()))
            start = match.end()
        spans.append((p_start + start, p_end))

    merged: list[tuple[int, int]] = []
    for start, end in spans:
        piece = text[start:end]
        if not piece.strip():
            continue
        if not _SPEAKABLE.search(piece) and merged and "\n" not in text[merged[-1][1] : start]:
            # "..." or a lone dash: nothing to say on its own; it stays with its sentence.
            merged[-1] = (merged[-1][0], end)
            continue
        merged.append((start, end))

    result: list[str] = []
    for start, end in merged:
        result.extend(_split_long(text[start:end].strip(), max_chars))
    return [p for p in result if _SPEAKABLE.search(speakable(p))]


def narration_segments(
    payload: dict[str, Any],
    *,
    max_chars: int = 300,
    max_total_chars: int = 6000,
    first_max_chars: int = 120,
) -> list[PlannedSegment]:
    """The segments to speak for a `dm_narration` payload, in order.

    With speaker-tagged `segments` in the payload each one is spoken in its speaker's
    voice (and cut into sentences too); without them, or when they do not parse, the
    narration's `text` is the DM's. A long first sentence is cut at `first_max_chars`
    (at a comma if it can be), since the first audio waits for the whole first segment.
    Speech stops at `max_total_chars`.
    """
    parts: list[tuple[str, str | None]] = []
    raw = payload.get("segments")
    if raw:
        try:
            tagged = [SpeakerSegment.model_validate(item) for item in raw]
            parts = [(s.text, str(s.speaker) if s.speaker else None) for s in tagged]
        except (ValidationError, TypeError) as exc:
            log.warning("narration segments do not parse (%s); speaking its text", exc)
    if not parts:
        parts = [(str(payload.get("text") or ""), None)]

    planned: list[PlannedSegment] = []
    total = 0
    for text, speaker in parts:
        pieces = sentences(text, max_chars=max_chars)
        if not planned and pieces and len(pieces[0]) > first_max_chars:
            head = _split_long(pieces[0], first_max_chars)[0]
            rest = pieces[0][len(head) :].strip()
            pieces[:1] = [head, *_split_long(rest, max_chars)]
        for sentence in pieces:
            total += len(sentence)
            if total > max_total_chars:
                log.info("narration voiced up to %d characters, not past", max_total_chars)
                return planned
            planned.append(PlannedSegment(text=sentence, speaker=speaker))
    return planned


# --- Cutting a narration as it streams (issue 23) ----------------------------------------------

# A sentence may end in the text that came: worth cutting again.
_MAY_END = re.compile("[.!?\u2026\n]")
_ENDS_SENTENCE = re.compile("[.!?\u2026]+[\"'\u201d\u2019\u00bb)\\]]*$")
_NOT_SAID = re.compile(r"[\W_]+")


def spoken_key(text: str) -> str:
    """What is heard of a segment: its words, without marks, punctuation or case. A
    sentence spoken as it streamed is the committed narration's segment when their keys
    agree ("He stops." and "He stops. ..." sound the same)."""
    return _NOT_SAID.sub(" ", speakable(text)).strip().lower()


class StreamedSentences:
    """The narration's segments cut as its text streams in, each as soon as it is whole.

    The text so far is planned with `narration_segments`, the very plan its commit will
    make, so that a streamed sentence is the committed narration's segment unless the
    final text changed it. A segment is whole once another one follows it, or once a
    space follows its end (. ! ? or …, then any closing quote or bracket; not an
    abbreviation's dot): a closing quote comes before the space. `finish` gives the last
    one. Planning again only when a sentence may have ended keeps it linear in practice:
    about once per sentence.
    """

    def __init__(
        self,
        *,
        max_chars: int = 300,
        max_total_chars: int = 6000,
        first_max_chars: int = 120,
    ) -> None:
        self.max_chars = max_chars
        self.max_total_chars = max_total_chars
        self.first_max_chars = first_max_chars
        self.text = ""
        self.emitted: list[str] = []
        self._checked = 0  # the text up to here held no sentence end since the last cut

    def _plan(self) -> list[PlannedSegment]:
        return narration_segments(
            {"text": self.text},
            max_chars=self.max_chars,
            max_total_chars=self.max_total_chars,
            first_max_chars=self.first_max_chars,
        )

    def _new(self, planned: list[PlannedSegment]) -> list[tuple[int, str]]:
        start = len(self.emitted)
        fresh = [(start + i, p.text) for i, p in enumerate(planned[start:])]
        self.emitted += [text for _, text in fresh]
        return fresh

    def feed(self, text: str) -> list[tuple[int, str]]:
        """Add streamed narration text; the segments now whole, as (index, text)."""
        if not text:
            return []
        self.text += text
        unseen = self.text[self._checked :]
        tail = len(self.text) - self._checked
        limit = self.max_chars if self.emitted else self.first_max_chars
        if not _MAY_END.search(unseen) and tail <= limit:
            return []
        planned = self._plan()
        whole = planned if planned and self._ended(planned[-1].text) else planned[:-1]
        if len(whole) <= len(self.emitted):
            # Nothing new is whole: the end may be in the last segment still growing;
            # look again from its start.
            return []
        if len(whole) < len(planned):
            self._checked = max(0, len(self.text) - len(planned[-1].text))
        else:
            self._checked = len(self.text)
        return self._new(whole)

    def _ended(self, last: str) -> bool:
        """Whether the last segment so far is a whole sentence: a space follows its end."""
        if not self.text[-1:].isspace() or not _ENDS_SENTENCE.search(last):
            return False
        return not _is_abbreviation(last, len(last))

    def finish(self) -> list[tuple[int, str]]:
        """The narration is whole: its last segments too."""
        return self._new(self._plan()) if self.text else []
