"""How well retrieval finds lore when players ask in their own words.

The question set (memory/evalset/questions.toml) asks about lore written for the project
(memory/evalset/lore/*.md), each question worded unlike the passage that answers it.
The lore is uploaded to a campaign through `memory.documents.document_create`, the
service a GM's upload goes through (so passages are cut, and indexed, exactly as in
play); every question then runs through each search method, searched as a player
searches (documents the players may read), and is scored by where its answer ranks:

- recall@1: the share of questions whose answer comes first,
- recall@5: the share whose answer is among the first five,
- MRR: the mean of 1/rank, counting 0 when the answer is not in the first `RANKS_KEPT`.

Used by tests/test_memory_evalset.py (a fixed subset) and bench/memory_retrieval.py (the
whole set); the figures are in docs/memory.md ("Retrieval quality").
"""

from __future__ import annotations

import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .documents import HEADING_SEPARATOR, MARKDOWN, document_create
from .models import Passage
from .retrieval import passages_search, query_terms

EVALSET_DIR = Path(__file__).resolve().parent / "evalset"
LORE_DIR = EVALSET_DIR / "lore"
QUESTIONS_FILE = EVALSET_DIR / "questions.toml"
RANKS_KEPT = 10  # results asked of each method; an answer ranked below counts 0 in MRR

# A search method: (campaign id, query, how many) -> passage ids, best first.
SearchMethod = Callable[[uuid.UUID | str, str, int], list[int]]


class EvalsetInvalid(ValueError):
    """The question set or its lore does not hold together (a test failure, not a 500)."""


@dataclass(frozen=True)
class Question:
    text: str
    doc: str  # the lore file's stem: memory/evalset/lore/<doc>.md
    section: str  # the last heading of the answer's heading path
    quote: str = ""  # text the answer contains, when a section makes several passages
    subset: bool = False  # in the fixed subset the test runs

    @property
    def key(self) -> str:
        return f"{self.doc}: {self.section}" + (f" ({self.quote!r})" if self.quote else "")


@dataclass(frozen=True)
class MethodScore:
    method: str
    questions: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    ms_per_query: float
    ranks: tuple[int | None, ...]  # per question, 1-based; None: not in the first RANKS_KEPT


# --- The set --------------------------------------------------------------------------------


def lore_files() -> list[Path]:
    return sorted(LORE_DIR.glob("*.md"))


def questions_load(path: Path = QUESTIONS_FILE) -> list[Question]:
    """The questions of the set, in file order; a malformed entry raises EvalsetInvalid."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EvalsetInvalid(f"{path.name} is not valid TOML: {exc}") from None
    entries = data.get("question")
    if not isinstance(entries, list) or not entries:
        raise EvalsetInvalid(f"{path.name} has no [[question]] entries")
    known = {"q", "doc", "section", "quote", "subset"}
    questions = []
    for n, entry in enumerate(entries, start=1):
        unknown = set(entry) - known
        if unknown:
            raise EvalsetInvalid(f"question {n}: unknown keys {sorted(unknown)}")
        text, doc, section = entry.get("q"), entry.get("doc"), entry.get("section")
        quote, subset = entry.get("quote", ""), entry.get("subset", False)
        if not all(isinstance(v, str) and v.strip() for v in (text, doc, section)):
            raise EvalsetInvalid(f"question {n}: q, doc and section must be non-empty text")
        if not isinstance(quote, str) or not isinstance(subset, bool):
            raise EvalsetInvalid(f"question {n}: quote must be text and subset true or false")
        questions.append(Question(text.strip(), doc, section, quote, subset))
    return questions


# --- Loading the lore into a campaign ------------------------------------------------------


def lore_ingest(*, campaign_id: uuid.UUID | str, uploaded_by: Any = None) -> dict[str, uuid.UUID]:
    """Upload every lore file to the campaign as a GM's Markdown upload is stored;
    {file stem: document id}. A file already uploaded there is found, not stored again."""
    ids = {}
    for path in lore_files():
        created = document_create(
            campaign_id=campaign_id,
            text=path.read_text(encoding="utf-8"),
            filename=path.name,
            content_type=MARKDOWN,
            uploaded_by=uploaded_by,
        )
        ids[path.stem] = created.document.id
    return ids


def answer_candidates(question: Question, documents: dict[str, uuid.UUID]) -> list[int]:
    """The ids of the passages the question's answer key names (exactly one when the set
    is well-formed)."""
    document_id = documents.get(question.doc)
    if document_id is None:
        return []
    found = []
    for pid, heading, text in Passage.objects.filter(document_id=document_id).values_list(
        "id", "heading", "text"
    ):
        if heading.rsplit(HEADING_SEPARATOR, 1)[-1] != question.section:
            continue
        if question.quote and question.quote not in text:
            continue
        found.append(pid)
    return found


def answers_resolve(questions: Sequence[Question], documents: dict[str, uuid.UUID]) -> list[int]:
    """Each question's answer passage id; a key naming no passage, or several, raises."""
    answers = []
    for question in questions:
        found = answer_candidates(question, documents)
        if len(found) != 1:
            raise EvalsetInvalid(
                f"{question.text!r}: its answer {question.key} names {len(found)} passages, not one"
            )
        answers.append(found[0])
    return answers


# --- How unlike its answer a question is -----------------------------------------------------

_SUFFIXES = ("ation", "ing", "edly", "ed", "ly", "er", "ie", "e", "y")


def word_forms(word: str) -> frozenset[str]:
    """Crude stems of a word: its first five letters with a plural s off, and again
    with one common suffix off too. Cruder than the search engines' Porter stemmers on
    purpose: two words sharing either form count as the same word ("harbour" and
    "harbourmaster", "money" and "moneylenders"), so the overlap measured errs high."""
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    stripped = word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stripped = word[: -len(suffix)]
            break
    return frozenset({word[:5], stripped[:5]})


def content_words(text: str) -> list[frozenset[str]]:
    """The forms of each word a full-text query of `text` would search for."""
    return [word_forms(term) for term in query_terms(text) if not term.isdigit()]


def content_forms(text: str) -> set[str]:
    return {form for forms in content_words(text) for form in forms}


def shared_forms(question: str, passage: str) -> set[str]:
    """The word forms the question and the passage have in common."""
    return content_forms(question) & content_forms(passage)


def word_overlap(question: str, passage: str) -> float:
    """The share of the question's content words that its answer passage also uses
    (0: none; 1: all)."""
    asked = content_words(question)
    if not asked:
        return 0.0
    used = content_forms(passage)
    return sum(1 for forms in asked if forms & used) / len(asked)


# --- Search methods -------------------------------------------------------------------------


def _search_with(method: str) -> SearchMethod:
    def search(campaign_id: uuid.UUID | str, query: str, limit: int) -> list[int]:
        hits = passages_search(campaign_id=campaign_id, query=query, limit=limit, method=method)
        return [hit.passage_id for hit in hits]

    return search


# The methods compared, by the names the docs and the bench print. All three go through
# memory.retrieval.passages_search as a player's rag_search does (include_gm_only off).
METHODS: dict[str, SearchMethod] = {
    name: _search_with(name) for name in ("fulltext", "vector", "hybrid")
}


# --- Scoring --------------------------------------------------------------------------------


def rank_of(answer: int, results: Sequence[int]) -> int | None:
    try:
        return list(results).index(answer) + 1
    except ValueError:
        return None


def scores(method: str, ranks: Sequence[int | None], seconds: float) -> MethodScore:
    n = len(ranks)
    if not n:
        raise EvalsetInvalid("no questions to score")
    return MethodScore(
        method=method,
        questions=n,
        recall_at_1=sum(1 for r in ranks if r == 1) / n,
        recall_at_5=sum(1 for r in ranks if r is not None and r <= 5) / n,
        mrr=sum(1 / r for r in ranks if r is not None) / n,
        ms_per_query=seconds * 1000 / n,
        ranks=tuple(ranks),
    )


def method_evaluate(
    method: str,
    *,
    campaign_id: uuid.UUID | str,
    questions: Iterable[Question],
    answers: Sequence[int],
    search: SearchMethod | None = None,
) -> MethodScore:
    """Run every question through `method` (METHODS[method] unless `search` is given)
    and score where each answer ranks."""
    search = search or METHODS[method]
    texts = [q.text for q in questions]
    ranks: list[int | None] = []
    elapsed = 0.0
    for text, answer in zip(texts, answers, strict=True):
        started = time.perf_counter()
        results = search(campaign_id, text, RANKS_KEPT)
        elapsed += time.perf_counter() - started
        ranks.append(rank_of(answer, results))
    return scores(method, ranks, elapsed)
