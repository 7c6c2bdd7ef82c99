"""The retrieval question set (memory/evalset): it holds together (every answer names
exactly one passage of the lore as the project cuts it, 40 questions or more), it stays
honest (questions share few words with their answers, and no rare one), and hybrid
retrieval puts the answer first for at least 80% of its fixed subset. The whole set's
figures per method are bench/memory_retrieval.py's, in docs/memory.md."""

from __future__ import annotations

from collections import Counter

import pytest

from memory import evaluation
from memory.evaluation import Question
from memory.models import Passage

pytestmark = pytest.mark.django_db

QUESTIONS_MIN = 40
# Question and answer: at most a third of the question's content words in the passage,
# a fiftieth-odd on average (the set measures 0.02), and none of the words the lore
# uses in fewer than RARE_BELOW passages: those would find the answer by themselves.
OVERLAP_MAX = 0.34
OVERLAP_MEAN_MAX = 0.08
RARE_BELOW = 3
SUBSET_RECALL_AT_1_FLOOR = 0.6
SUBSET_RECALL_AT_1_MIN = 0.8  # issue 22's goal for hybrid retrieval


@pytest.fixture
def lore(campaign, gm, django_capture_on_commit_callbacks):
    """The lore uploaded to the campaign through the GM's upload service, with what
    that upload starts after its commit (indexing) run as it would after a request."""
    with django_capture_on_commit_callbacks(execute=True):
        return evaluation.lore_ingest(campaign_id=campaign.id, uploaded_by=gm)


@pytest.fixture
def questions() -> list[Question]:
    return evaluation.questions_load()


def test_every_answer_names_exactly_one_passage(campaign, lore, questions):
    assert len(questions) >= QUESTIONS_MIN
    assert len({q.text.lower() for q in questions}) == len(questions), "a question is repeated"
    assert {q.doc for q in questions} == {p.stem for p in evaluation.lore_files()}, (
        "every lore document is asked about, and every answer names a lore document"
    )
    problems = []
    for question in questions:
        found = evaluation.answer_candidates(question, lore)
        if len(found) != 1:
            problems.append(f"{question.key}: {len(found)} passages")
    assert not problems, "answers that do not name exactly one passage: " + "; ".join(problems)
    # Distinct answers: a passage answering two questions would let one lucky hit count twice.
    answers = evaluation.answers_resolve(questions, lore)
    assert len(set(answers)) == len(answers)
    passages = Passage.objects.filter(campaign_id=campaign.id).count()
    assert len(answers) <= passages <= 80, "the lore is cut into a few dozen passages"


def test_the_fixed_subset_is_small_and_spread(questions):
    subset = [q for q in questions if q.subset]
    assert 8 <= len(subset) <= 15
    assert len({q.doc for q in subset}) >= 6, "the subset spans most lore documents"


def test_questions_are_worded_unlike_their_answers(campaign, lore, questions):
    answers = evaluation.answers_resolve(questions, lore)
    texts = {
        pid: f"{heading}\n{text}"
        for pid, heading, text in Passage.objects.filter(campaign_id=campaign.id).values_list(
            "id", "heading", "text"
        )
    }
    passages_using = Counter(form for t in texts.values() for form in evaluation.content_forms(t))
    overlaps, too_close, rare = [], [], []
    for question, answer in zip(questions, answers, strict=True):
        overlap = evaluation.word_overlap(question.text, texts[answer])
        overlaps.append(overlap)
        if overlap > OVERLAP_MAX:
            too_close.append(f"{question.text!r} ({overlap:.2f})")
        shared = evaluation.shared_forms(question.text, texts[answer])
        rare += [f"{question.text!r}: {f}" for f in shared if passages_using[f] < RARE_BELOW]
    assert not too_close, "questions that reuse their answer's words: " + "; ".join(too_close)
    assert not rare, "questions sharing a rare word with their answer: " + "; ".join(rare)
    assert sum(overlaps) / len(overlaps) <= OVERLAP_MEAN_MAX


def test_word_overlap_counts_shared_stems():
    # The measure itself: it must see through inflections, or the check above is toothless.
    assert evaluation.word_overlap("the ferryman's fares", "Fares for the ferryman") == 1.0
    assert evaluation.word_overlap("crossing rivers", "He crossed the river") == 1.0
    assert evaluation.word_overlap("How do I pay?", "He accepts no coin, only a story") == 0.0
    assert evaluation.word_overlap("pay the toll", "a toll is due") == 0.5


def test_scores_from_ranks():
    # Ranks 1, 3, 6 and a miss: r@1 1/4, r@5 2/4, MRR (1 + 1/3 + 1/6) / 4.
    score = evaluation.scores("x", [1, 3, 6, None], seconds=0.2)
    assert score.recall_at_1 == 0.25
    assert score.recall_at_5 == 0.5
    assert score.mrr == pytest.approx(1.5 / 4)
    assert score.ms_per_query == pytest.approx(50.0)


def _subset_score(campaign, lore, questions, method: str) -> tuple[float, str]:
    subset = [q for q in questions if q.subset]
    answers = evaluation.answers_resolve(subset, lore)
    score = evaluation.method_evaluate(
        method, campaign_id=campaign.id, questions=subset, answers=answers
    )
    missed = [
        f"{q.text!r} (answer {q.key}: rank {rank or 'not in the first 10'})"
        for q, rank in zip(subset, score.ranks, strict=True)
        if rank != 1
    ]
    return score.recall_at_1, f"{method} recall@1 {score.recall_at_1:.2f}; missed: " + "; ".join(
        missed
    )


def test_meaning_finds_what_full_text_cannot(campaign, lore, questions):
    # Full text puts none of the subset's answers first (its words are not the lore's);
    # hybrid must keep what meaning finds. A floor under today's 0.7, not the goal.
    fulltext, _ = _subset_score(campaign, lore, questions, "fulltext")
    hybrid, detail = _subset_score(campaign, lore, questions, "hybrid")
    assert fulltext <= 0.1
    assert hybrid >= SUBSET_RECALL_AT_1_FLOOR, detail


@pytest.mark.xfail(
    strict=True,
    reason="issue 22's goal is not met: all-MiniLM-L6-v2 puts 7 of the subset's 10 answers "
    "first (docs/memory.md, Retrieval quality); passing means the goal is reached: drop this",
)
def test_hybrid_puts_the_answer_first_for_the_subset(campaign, lore, questions):
    hybrid, detail = _subset_score(campaign, lore, questions, "hybrid")
    assert hybrid >= SUBSET_RECALL_AT_1_MIN, detail
