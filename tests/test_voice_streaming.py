"""Speech while the DM narrates (issue 23, CONTRACTS §7 "Speech while the DM narrates").

The narration is cut into sentences as the model streams it; each whole sentence is
spoken on the voice worker at once and the room gets `narration.audio` {turn_id, segment,
text, url, duration_ms} before the `dm_narration` event. When the narration commits, its
`dm_audio_ready` events point at the same audio (not made or billed twice); what the
final text changed is spoken again, and what a repaired, fallen-back or failed turn
spoke and did not keep is deleted. A degraded budget speaks nothing while streaming.

The model is tests.openai_server's stand-in, slowed to a hosted model's pace: its first
token comes at 1.2 s and its answer ends at 4 s.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from hypothesis import given
from hypothesis import strategies as st

from billing.models import ModelUsage
from billing.services import budget_set
from campaigns.models import Event
from rpgai.tasks import wait_idle
from tests.openai_server import GOOD_ANSWER, Answer, Fail
from tests.reads import api_as
from tests.ws import Room
from voice.models import SpeechSegment
from voice.text import StreamedSentences, narration_segments, spoken_key

pytest.importorskip("piper")

FIRST_TOKEN_SECONDS = 1.2
ANSWER_SECONDS = 4.0
CHUNK_CHARS = 8

NARRATION = (
    "The cellar door groans open. Cold air rolls up the stairs. "
    "Somewhere below, water drips onto stone in a slow, patient rhythm. "
    "A lantern flickers to life in the dark, held by a hand you cannot see."
)


def slow_answer(narration: str, **changes: Any) -> Answer:
    """The DM's answer streamed over ANSWER_SECONDS, its first token at FIRST_TOKEN_SECONDS
    (with `slow_start` on the server)."""
    content = {**GOOD_ANSWER, "tool_calls": [], "narration": narration, **changes}
    frames = len(json.dumps(content)) // CHUNK_CHARS + 2
    delay = (ANSWER_SECONDS - FIRST_TOKEN_SECONDS) / frames
    return Answer(content, chunk_chars=CHUNK_CHARS, delay=delay)


def slow_start(server: Any, *, stall_after: int | None = None) -> None:
    """The stand-in waits before its first streamed frame, as a hosted model thinks; with
    `stall_after`, it goes silent after that many frames (a stream that hangs)."""
    base = server.httpd.RequestHandlerClass
    first_wait = FIRST_TOKEN_SECONDS

    class SlowStart(base):  # type: ignore[misc, valid-type]
        def _sse(self, events: Any, delay: float, record: Any) -> None:
            if self.owner.stopping.wait(max(0.0, first_wait - delay)):
                return
            if stall_after is not None:
                super()._sse(events[:stall_after], delay, record)
                self.owner.stopping.wait(30)
                return
            super()._sse(events, delay, record)

    server.httpd.RequestHandlerClass = SlowStart


@pytest.fixture(scope="module")
def _piper_loaded():
    """The voice loaded once, as a voice worker does when it starts (it takes seconds)."""
    from voice.engines import engine_get

    engine_get("piper").warm_up()


@pytest.fixture
def speaking(settings, tmp_path, openai_server, _piper_loaded):
    settings.TTS_PROVIDER = "piper"
    settings.VOICE_STREAM = True
    settings.VOICE_PRELOAD = False  # loaded already
    settings.MEDIA_ROOT = str(tmp_path)
    settings.DM_TIMEOUT_SECONDS = 10.0
    slow_start(openai_server)
    return openai_server


def play(campaign: Any, user: Any, *, audio_of_narration: bool = True) -> list[dict]:
    """Act in the room as `user`; every message up to the narration (or failure), then
    until the narration's audio is all announced, then until the room is quiet."""
    return async_to_sync(_play)(campaign, user, audio_of_narration)


async def _play(campaign: Any, user: Any, audio_of_narration: bool) -> list[dict]:
    room = Room(campaign.id, user)
    assert (await room.open())[0]
    try:
        await room.hello()
        await room.send(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I descend"}
        )
        seen = await room.recv_until(
            lambda m: (
                m["type"] == "event" and m["event"]["type"] in ("dm_narration", "turn_failed")
            ),
            timeout=30,
        )
        ended = seen[-1]["event"]
        if ended["type"] == "dm_narration" and audio_of_narration:
            segments: set[int] = set()
            total = None
            while total is None or len(segments) < total:
                message = await room.recv(timeout=30)
                seen.append(message)
                if message["type"] == "event" and message["event"]["type"] == "dm_audio_ready":
                    segments.add(message["event"]["payload"]["segment"])
                    total = message["event"]["payload"]["segments"]
        await wait_idle(timeout=30)
        while not await room.comm.receive_nothing(timeout=0.5):
            seen.append(await room.recv())
        return seen
    finally:
        await room.close()


def audio_of(seen: list[dict]) -> list[dict]:
    return [m for m in seen if m["type"] == "narration.audio"]


def ready_of(seen: list[dict]) -> list[dict]:
    return [
        m["event"]["payload"]
        for m in seen
        if m["type"] == "event" and m["event"]["type"] == "dm_audio_ready"
    ]


def narration_index(seen: list[dict]) -> int:
    return next(
        i
        for i, m in enumerate(seen)
        if m["type"] == "event" and m["event"]["type"] in ("dm_narration", "turn_failed")
    )


def tts_characters(campaign: Any) -> list[int]:
    return sorted(
        u.characters for u in ModelUsage.objects.filter(campaign_id=campaign.id, purpose="tts")
    )


def audio_status(user: Any, url: str) -> int:
    return api_as(user).get(url).status_code


# --- Cutting sentences as they stream ------------------------------------------------------------


def cut_streamed(text: str, cuts: list[int]) -> list[str]:
    cutter = StreamedSentences()
    got: list[tuple[int, str]] = []
    start = 0
    for end in [*sorted(set(cuts)), len(text)]:
        got += cutter.feed(text[start:end])
        start = end
    got += cutter.finish()
    assert [i for i, _ in got] == list(range(len(got)))
    return [t for _, t in got]


@pytest.mark.parametrize(
    "text",
    [
        NARRATION,
        'Mr. Grimm bows. "Welcome," he says. "Sit!" The fire pops…',
        "One line.\n\nA new paragraph — with a dash! And 3.5 gold coins.",
        "A first sentence that runs on and on, " * 6 + "until it ends. Then a short one.",
    ],
)
def test_the_streamed_sentences_are_the_commits_segments_however_the_text_arrives(text: str):
    planned = [p.text for p in narration_segments({"text": text})]
    assert cut_streamed(text, []) == planned
    assert cut_streamed(text, list(range(len(text)))) == planned  # a character at a time
    assert cut_streamed(text, list(range(0, len(text), 7))) == planned


def test_a_sentence_goes_as_soon_as_a_space_follows_its_end():
    cutter = StreamedSentences()
    assert cutter.feed("The door creaks") == []
    assert cutter.feed(".") == []  # a quote may still close it
    assert cutter.feed(" ") == [(0, "The door creaks.")]
    assert cutter.feed('"Halt!') == [] and cutter.feed('" ') == [(1, '"Halt!"')]
    assert cutter.feed("Mr. ") == []  # an abbreviation ends no sentence
    assert cutter.feed("Grimm bows") == [] and cutter.finish() == [(2, "Mr. Grimm bows")]


@given(
    words=st.lists(
        st.sampled_from(["The", "door", "creaks.", "Mr.", "Smith", "waits!", "Why?", "—", "3.5"]),
        min_size=1,
        max_size=30,
    ),
    cuts=st.lists(st.integers(0, 200), max_size=12),
)
def test_a_sentence_is_sent_only_once_it_is_whole(words: list[str], cuts: list[int]):
    text = " ".join(words)
    planned = [spoken_key(p.text) for p in narration_segments({"text": text})]
    # Each streamed sentence sounds as the commit's segment at its place: nothing is cut
    # too early. (A lone dash after a sentence joins it in the commit's plan, unspoken.)
    streamed = cut_streamed(text, [c for c in cuts if c < len(text)])
    assert [spoken_key(t) for t in streamed] == planned


# --- In the room ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_first_sentence_is_heard_before_the_narration_is_committed(
    campaign, alice, bob, speaking
):
    speaking.script(slow_answer(NARRATION))
    seen = play(campaign, alice)

    narration = seen[narration_index(seen)]["event"]["payload"]
    first_sentence = narration_segments(narration)[0].text
    streamed = audio_of(seen)
    # A member hears the first sentence before the narration event reaches them.
    assert streamed and seen.index(streamed[0]) < narration_index(seen)
    assert streamed[0]["segment"] == 0 and streamed[0]["text"] == first_sentence
    assert streamed[0]["turn_id"] == narration["turn_id"] and streamed[0]["duration_ms"] > 0
    assert streamed[0]["url"].startswith(f"/api/campaigns/{campaign.id}/audio/")
    # Heard by every member, served to members only.
    assert audio_status(bob, streamed[0]["url"]) == 200

    # Committed once: the narration's audio is the audio already made, none made twice.
    ready = ready_of(seen)
    planned = narration_segments(narration)
    assert [r["text"] for r in ready] == [p.text for p in planned]
    by_text = {m["text"]: m["url"] for m in streamed}
    assert all(r["url"] == by_text[r["text"]] for r in ready if r["text"] in by_text)
    assert {r["turn_id"] for r in ready} == {narration["turn_id"]}
    assert tts_characters(campaign) == sorted(len(p.text) for p in planned)
    assert SpeechSegment.objects.filter(campaign_id=campaign.id).count() == len(planned)
    assert not SpeechSegment.objects.filter(narration_seq__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_an_outsider_never_gets_the_streamed_audio(campaign, alice, speaking, make_user):
    speaking.script(slow_answer(NARRATION))
    seen = play(campaign, alice, audio_of_narration=False)
    [first, *_] = audio_of(seen)
    assert audio_status(make_user("mallory"), first["url"]) == 403


@pytest.mark.django_db(transaction=True)
def test_a_repaired_answer_keeps_what_it_did_not_change_and_drops_the_rest(
    campaign, alice, speaking
):
    kept = "The cellar door groans open."
    dropped = "A rat the size of a dog watches you from the bottom step, unblinking."
    # The streamed answer has no options (invalid): it is repaired, not streamed again.
    speaking.script(
        slow_answer(f"{kept} {dropped} It hisses.", options=[]),
        Answer({**GOOD_ANSWER, "tool_calls": [], "narration": f"{kept} Nothing moves below."}),
    )
    seen = play(campaign, alice)

    narration = seen[narration_index(seen)]["event"]["payload"]
    assert not narration["fallback"] and narration["text"].startswith(kept)
    streamed = audio_of(seen)
    assert streamed[0]["text"] == kept  # speech began before the answer was repaired
    ready = ready_of(seen)
    assert [r["text"] for r in ready] == [kept, "Nothing moves below."]
    # The kept sentence is the audio already heard; the dropped ones never appear.
    assert ready[0]["url"] == streamed[0]["url"]
    dropped_urls = {m["url"] for m in streamed[1:]}
    assert not dropped_urls & {r["url"] for r in ready}
    assert all(audio_status(alice, url) == 404 for url in dropped_urls)
    # Each sentence spoken is billed once: the kept one is not spoken again. (Lengths
    # stand for the sentences: 28, 70, 10 and 20 characters.)
    billed = Counter(tts_characters(campaign))
    assert billed[len(kept)] == 1 and billed[len("Nothing moves below.")] == 1
    assert billed[len(dropped)] <= 1 and billed[len("It hisses.")] <= 1
    assert sum(billed.values()) <= 4
    assert SpeechSegment.objects.filter(campaign_id=campaign.id).count() == len(ready)


@pytest.mark.django_db(transaction=True)
def test_a_fallback_discards_everything_spoken_for_the_turn(campaign, alice, speaking):
    bad = {"options": []}
    speaking.script(slow_answer(NARRATION, **bad), Answer({**GOOD_ANSWER, **bad}))
    seen = play(campaign, alice)

    narration = seen[narration_index(seen)]["event"]["payload"]
    assert narration["fallback"]
    streamed = audio_of(seen)
    assert streamed
    ready = ready_of(seen)
    assert [r["text"] for r in ready] == [p.text for p in narration_segments(narration)]
    assert not {m["url"] for m in streamed} & {r["url"] for r in ready}
    assert all(audio_status(alice, m["url"]) == 404 for m in streamed)
    assert not SpeechSegment.objects.filter(narration_seq__isnull=True).exists()
    # Billed: each sentence the stream spoke (those queued after the fallback was known
    # are not spoken at all), and each sentence of the fallback, once.
    billed = Counter(tts_characters(campaign))
    fallback = Counter(len(r["text"]) for r in ready)
    could_stream = Counter(len(p.text) for p in narration_segments({"text": NARRATION}))
    assert fallback <= billed <= fallback + could_stream
    assert Counter(len(m["text"]) for m in streamed) <= billed - fallback


@pytest.mark.django_db(transaction=True)
def test_a_failed_turn_discards_what_was_spoken_for_it(campaign, alice, speaking, settings):
    # The model goes silent after its first two sentences, then fails when asked again.
    settings.DM_TIMEOUT_SECONDS = 5.0
    slow_start(speaking, stall_after=2 + len(NARRATION.split(". ")[0]) * 2 // CHUNK_CHARS + 8)
    speaking.script(slow_answer(NARRATION), *[Fail(400)] * 4)
    seen = play(campaign, alice)

    assert seen[narration_index(seen)]["event"]["type"] == "turn_failed"
    streamed = audio_of(seen)
    assert streamed and streamed[0]["segment"] == 0
    assert all(audio_status(alice, m["url"]) == 404 for m in streamed)
    assert not SpeechSegment.objects.filter(campaign_id=campaign.id).exists()


@pytest.mark.django_db(transaction=True)
def test_a_degraded_budget_speaks_nothing_while_streaming(campaign, alice, speaking):
    # Past its cap without hard stop: the campaign runs degraded, and speech goes first.
    budget_set(campaign_id=campaign.id, daily_cap_usd="0", hard_stop=False)
    speaking.script(slow_answer(NARRATION))
    seen = play(campaign, alice, audio_of_narration=False)

    assert seen[narration_index(seen)]["event"]["type"] == "dm_narration"
    assert audio_of(seen) == [] and ready_of(seen) == []
    assert not SpeechSegment.objects.filter(campaign_id=campaign.id).exists()
    assert not Event.objects.filter(campaign_id=campaign.id, type="dm_audio_ready").exists()
