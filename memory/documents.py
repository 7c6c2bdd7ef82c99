"""Lore and rules the GM uploads: checked (type, size, encoding), cut into passages along
headings and paragraphs, and stored for retrieval (memory.retrieval): full text at once,
by meaning once the background task has embedded the passages (memory.vectors)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework import status

from campaigns.selectors import campaign_get
from llm.tokens import count_tokens
from rpgai.errors import DomainError, NotFound
from rpgai.tasks import enqueue

from .conf import setting
from .models import Document, Passage

MARKDOWN = "text/markdown"
PLAIN = "text/plain"
EXTENSIONS = {".md": MARKDOWN, ".markdown": MARKDOWN, ".txt": PLAIN, ".text": PLAIN}
# What browsers and clients send for such files; anything else is refused.
CONTENT_TYPES = {
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/plain": PLAIN,
    "application/octet-stream": None,  # no opinion: the extension decides
    "": None,
}
TITLE_MAX_CHARS = 200
HEADING_SEPARATOR = " / "

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class DocumentTooLarge(DomainError):
    code = "too_large"
    http_status = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


class DocumentInvalid(DomainError):
    code = "invalid_document"


class TooManyPassages(DocumentInvalid):
    code = "too_many_passages"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this document makes more than {limit:,} passages, the most one document may "
            "have: split it into smaller documents or use fewer headings"
        )


@dataclass(frozen=True)
class PassageDraft:
    heading: str
    text: str


# --- Checking what was uploaded -------------------------------------------------------------


def document_kind(*, filename: str = "", content_type: str = "") -> str:
    """text/markdown or text/plain, from the file's extension and declared type."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in CONTENT_TYPES:
        raise DocumentInvalid(
            f"unsupported file type {declared!r}: upload plain text (.txt) or Markdown (.md)",
            code="unsupported_type",
        )
    suffix = PurePath(filename).suffix.lower() if filename else ""
    if suffix and suffix not in EXTENSIONS:
        raise DocumentInvalid(
            f"unsupported file extension {suffix!r}: upload plain text (.txt) or Markdown (.md)",
            code="unsupported_type",
        )
    if suffix:
        return EXTENSIONS[suffix]
    return CONTENT_TYPES[declared] or PLAIN


def document_text_decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); binary data is refused with a clear error."""
    if b"\x00" in data:
        raise DocumentInvalid(
            "this file is binary, not text: upload plain text (.txt) or Markdown (.md)",
            code="unsupported_type",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentInvalid(
            f"the file is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8",
            code="invalid_encoding",
        ) from None


def size_check(size: int) -> None:
    limit = setting("MEMORY_DOCUMENT_MAX_BYTES")
    if size > limit:
        raise DocumentTooLarge(
            f"a document is limited to {limit} bytes; this one has {size}: split it in parts"
        )


# --- Cutting text into passages -------------------------------------------------------------


def passages_split(
    text: str, *, max_chars: int | None = None, max_passages: int | None = None
) -> list[PassageDraft]:
    """Passages of at most `max_chars`, never across a heading: paragraphs of one section
    are joined while they fit, a paragraph too long is cut between sentences (or words).
    Each passage carries its heading path ("Combat / Grappling"). More than `max_passages`
    raises TooManyPassages as soon as the count passes it (the rest is not split).

    Short sections are not merged with their neighbours: a passage is named by its one
    heading path when it is quoted to players and the DM, and a glossary of one-line
    entries is best retrieved entry by entry. A heading with no text makes no passage."""
    max_chars = max_chars or setting("MEMORY_PASSAGE_MAX_CHARS")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    headings: list[tuple[int, str]] = []
    passages: list[PassageDraft] = []
    section: list[str] = []  # paragraphs of the current section
    paragraph: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        if paragraph:
            joined = "\n".join(paragraph).strip()
            if joined:
                section.append(joined)
            paragraph.clear()

    def end_section() -> None:
        end_paragraph()
        heading = HEADING_SEPARATOR.join(title for _, title in headings)
        for piece in _pack(section, max_chars):
            passages.append(PassageDraft(heading=heading[:500], text=piece))
        section.clear()
        if max_passages is not None and len(passages) > max_passages:
            raise TooManyPassages(max_passages)

    def set_heading(level: int, title: str) -> None:
        end_section()
        while headings and headings[-1][0] >= level:
            headings.pop()
        if title:
            headings.append((level, title[:120]))

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
            paragraph.append(line)
        elif in_fence:
            paragraph.append(line)
        elif match := _ATX.match(line):
            set_heading(len(match.group(1)), match.group(2).strip())
        elif line.strip() and not paragraph and i + 1 < len(lines) and _SETEXT.match(lines[i + 1]):
            set_heading(1 if lines[i + 1].strip().startswith("=") else 2, line.strip())
            i += 1
        elif not line.strip():
            end_paragraph()
        else:
            paragraph.append(line.rstrip())
        i += 1
    end_section()
    return passages


def _join_greedy(pieces: Iterable[str], separator: str, max_chars: int) -> list[str]:
    """Join pieces (each at most `max_chars`) with `separator` into as few runs of at
    most `max_chars` as their order allows."""
    runs: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(separator) + len(piece) > max_chars:
            runs.append(current)
            current = piece
        else:
            current = f"{current}{separator}{piece}" if current else piece
    if current:
        runs.append(current)
    return runs


def _pack(paragraphs: list[str], max_chars: int) -> list[str]:
    """Paragraphs into passages: whole paragraphs where they fit, cut at sentences where not."""
    parts = (part for paragraph in paragraphs for part in _cut(paragraph, max_chars))
    return _join_greedy(parts, "\n\n", max_chars)


def _cut(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces = (
        piece
        for sentence in _SENTENCE_END.split(paragraph)
        for piece in _words(sentence, max_chars)
    )
    return _join_greedy(pieces, " ", max_chars)


def _words(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    # A "word" longer than a passage is cut hard.
    pieces = (
        word[start : start + max_chars]
        for word in sentence.split()
        for start in range(0, len(word), max_chars)
    )
    return _join_greedy(pieces, " ", max_chars)


def _title_from(text: str, filename: str) -> str:
    if filename:
        stem = PurePath(filename).stem.strip()
        if stem:
            return stem[:TITLE_MAX_CHARS]
    for line in text.split("\n"):
        if match := _ATX.match(line):
            return match.group(2).strip()[:TITLE_MAX_CHARS] or "Untitled"
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return "Untitled"


# --- The service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentCreated:
    document: Document
    passages: int
    created: bool  # False: the same text was already uploaded to this campaign


def document_create(
    *,
    campaign_id: uuid.UUID | str,
    text: str,
    title: str = "",
    filename: str = "",
    content_type: str = "",
    visibility: str = Document.Visibility.ALL,
    uploaded_by: Any = None,
) -> DocumentCreated:
    """Store a document and its passages; the same text again is not stored twice."""
    if campaign_get(campaign_id=campaign_id) is None:
        raise NotFound("no such campaign")
    kind = document_kind(filename=filename, content_type=content_type)
    if visibility not in Document.Visibility.values:
        raise DocumentInvalid("visibility must be all or gm", code="invalid_visibility")
    data = text.encode("utf-8")
    size_check(len(data))
    if "\x00" in text:
        raise DocumentInvalid("text must not contain NUL characters", code="unsupported_type")
    title = " ".join((title or "").split())[:TITLE_MAX_CHARS] or _title_from(text, filename)
    # Counted while splitting: a refused document costs no token counts and no rows.
    max_passages = setting("MEMORY_DOCUMENT_MAX_PASSAGES")
    drafts = [d for d in passages_split(text, max_passages=max_passages) if d.text.strip()]
    if not drafts:
        raise DocumentInvalid("the document has no text", code="empty_document")
    digest = hashlib.sha256(data).hexdigest()

    existing = Document.objects.filter(campaign_id=campaign_id, sha256=digest).first()
    if existing is not None:
        return DocumentCreated(existing, existing.passages.count(), created=False)
    limit = setting("MEMORY_DOCUMENTS_MAX_PER_CAMPAIGN")
    if Document.objects.filter(campaign_id=campaign_id).count() >= limit:
        raise DocumentInvalid(
            f"a campaign holds at most {limit} documents", code="too_many_documents"
        )
    try:
        with transaction.atomic():
            document = Document.objects.create(
                campaign_id=campaign_id,
                title=title,
                filename=PurePath(filename).name[:255] if filename else "",
                content_type=kind,
                visibility=visibility,
                text=text,
                size_bytes=len(data),
                sha256=digest,
                uploaded_by=uploaded_by,
            )
            Passage.objects.bulk_create(
                Passage(
                    document=document,
                    campaign_id=campaign_id,
                    ordinal=n,
                    heading=draft.heading,
                    text=draft.text,
                    tokens=count_tokens(draft.text),
                )
                for n, draft in enumerate(drafts, start=1)
            )
    except IntegrityError:
        # The same upload raced us in; theirs stands.
        existing = Document.objects.filter(campaign_id=campaign_id, sha256=digest).first()
        if existing is None:
            raise
        return DocumentCreated(existing, existing.passages.count(), created=False)
    _index_later(document.id)
    return DocumentCreated(document, len(drafts), created=True)


def _index_later(document_id: uuid.UUID) -> None:
    """Queue the embedding of the document's passages, once they are committed (a task
    started before would find none); searches use full text until then."""
    from .embeddings import embeddings_enabled
    from .tasks import embed_passages

    if embeddings_enabled():
        transaction.on_commit(lambda: enqueue(embed_passages, document_id=str(document_id)))


def document_source(title: str, heading: str) -> str:
    """How a passage is named to players and to the DM: "Title / Section"."""
    return f"{title}{HEADING_SEPARATOR}{heading}" if heading else title
