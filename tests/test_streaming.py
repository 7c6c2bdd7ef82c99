"""Streaming: the narration pulled out of the model's growing JSON, sent to the room as
batched `narration.delta` messages before the `dm_narration` event that replaces them."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.streaming import DeltaBatcher, NarrationExtractor, ReasoningFilter
from rpgai.tasks import wait_idle
from tests.openai_server import GOOD_ANSWER, Answer, serving
from tests.ws import Room

# --- The extractor ----------------------------------------------------------------------------

TRICKY = 'Line one\nLine "two" \\ back/slash \t tab é ü 😀 \u2028 end'


@pytest.fixture
def openai_server(settings):
    with serving(settings) as server:
        yield server


def extract(chunks: list[str]) -> str:
    extractor = NarrationExtractor()
    return "".join(extractor.feed(chunk) for chunk in chunks)


def every_split(text: str) -> list[list[str]]:
    return [[text[:i], text[i:]] for i in range(len(text) + 1)]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_the_narration_is_decoded_whatever_the_chunking(ensure_ascii: bool):
    doc = json.dumps({"narration": TRICKY, "options": ["a"]}, ensure_ascii=ensure_ascii)
    for chunks in every_split(doc):
        assert extract(chunks) == TRICKY
    assert extract(list(doc)) == TRICKY  # one character at a time


def test_only_the_top_level_narration_counts():
    doc = json.dumps(
        {
            "tool_calls": [
                {
                    "name": "create_entity",
                    "args": {"kind": "npc", "name": "narration", "data": {"narration": "NO"}},
                }
            ],
            "options": ["narration"],
            "narration": "YES",
        }
    )
    assert extract(list(doc)) == "YES"


def test_prose_and_a_fence_before_the_json_are_skipped():
    doc = 'Sure! Here it is:\n```json\n{"narration": "Hello"}\n```'
    assert extract([doc]) == "Hello"


def test_a_narration_that_is_not_a_string_yields_nothing():
    assert extract([json.dumps({"narration": 5, "options": ["x"]})]) == ""


@pytest.mark.parametrize("value", [5, None, True, ["a", "b"], {"text": "a"}])
def test_a_narration_that_is_not_a_string_ends_the_extraction(value):
    extractor = NarrationExtractor()
    doc = json.dumps({"narration": value, "options": ["x"], "note": "more"})
    assert "".join(extractor.feed(c) for c in doc) == ""
    assert extractor.done


@pytest.mark.parametrize(
    "doc",
    [
        '{] "narration": "no"}',
        '{"hp": tru, "narration": "no"}',
        '{"narration" "no"}',
        '{"narration": "\\x escape"}',
        "{{{{",
        "```json\n{'narration': 'single quotes'}",
    ],
)
def test_text_that_is_not_json_yields_nothing(doc: str):
    for chunks in [[doc], list(doc)]:
        assert extract(chunks) == ""


def test_the_narration_grows_with_each_chunk_and_is_done_at_its_closing_quote():
    narration = "The goblin snarls and lunges at Alice. " * 15
    doc = json.dumps({"tool_calls": GOOD_ANSWER["tool_calls"], "narration": narration, "x": 1})
    closing = doc.index('"', doc.index(narration) + len(narration))
    extractor = NarrationExtractor()
    out = ""
    for at in range(0, len(doc), 4):
        out += extractor.feed(doc[at : at + 4])
        available = doc[doc.index(narration) : min(at + 4, closing)]
        # Never ahead of the text, never far behind it (deltas go out a few times a second).
        assert available.startswith(out)
        assert len(available) - len(out) < extractor.step + 4
        assert extractor.done == (at + 4 > closing)
    assert out == narration


def test_first_words_come_out_at_once():
    extractor = NarrationExtractor()
    assert extractor.feed('```json\n{"options": ["a"], "narr') == ""
    assert extractor.feed('ation": "Th') == "Th"
    assert not extractor.done


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_a_split_escape_never_shows_half_a_character(ensure_ascii: bool):
    doc = json.dumps({"options": ["a"], "narration": TRICKY}, ensure_ascii=ensure_ascii)
    assert "\\ud83d\\ude00" in doc or not ensure_ascii  # a surrogate pair, when escaped
    extractor = NarrationExtractor(step=1)
    out = ""
    for ch in doc:
        out += extractor.feed(ch)
        assert TRICKY.startswith(out)  # no raw backslash, no lone surrogate, no "\u00"
    assert out == TRICKY and extractor.done


def test_flush_gives_what_was_held_back_when_the_answer_stops_short():
    doc = json.dumps({"narration": "A long road winds north " * 8})[:-10]
    extractor = NarrationExtractor()
    out = "".join(extractor.feed(doc[at : at + 4]) for at in range(0, len(doc), 4))
    out += extractor.flush()
    assert out == json.loads(doc + '"}')["narration"]
    assert not extractor.done


@given(
    text=st.text(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    ascii_only=st.booleans(),
)
def test_any_text_round_trips_through_any_chunking(text: str, cuts: list[int], ascii_only: bool):
    doc = json.dumps({"options": ["x"], "narration": text}, ensure_ascii=ascii_only)
    points = sorted({min(c, len(doc)) for c in cuts})
    chunks = [doc[a:b] for a, b in zip([0, *points], [*points, len(doc)], strict=True)]
    assert extract(chunks) == text


def test_reasoning_tags_are_filtered_even_when_split():
    doc = (
        "<think>"
        + json.dumps({"narration": "SECRET"})
        + "</think>"
        + json.dumps({"narration": "Hi <b>there</b>"})
    )
    for chunks in every_split(doc):
        reasoning = ReasoningFilter()
        extractor = NarrationExtractor()
        assert "".join(extractor.feed(reasoning.feed(c)) for c in chunks) == "Hi <b>there</b>"


# --- The batcher ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deltas_are_batched_a_few_per_second_with_only_new_text():
    clock, sent = Clock(), []
    batcher = DeltaBatcher(send=sent.append, interval=0.25, clock=clock)
    tokens = [f"w{i} " for i in range(100)]
    for token in tokens:  # 100 tokens over one second
        batcher.add(token)
        clock.now += 0.01
    batcher.close()
    assert sent[0] == "w0 "  # the first words go at once
    assert 4 <= len(sent) <= 6
    assert "".join(sent) == "".join(tokens)


def test_a_muted_batcher_sends_nothing_more():
    clock, sent = Clock(), []
    batcher = DeltaBatcher(send=sent.append, interval=0.25, clock=clock)
    batcher.add("first ")
    batcher.add("held ")
    batcher.mute()
    clock.now += 1
    batcher.add("after")
    batcher.close()
    assert sent == ["first "]


# --- In the room ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_speech(settings):
    # Narration audio follows the turn; these tests are about the text.
    settings.TTS_PROVIDER = "none"


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


async def play_in_room(campaign, alice, text: str = "I attack the goblin") -> list[dict]:
    room = Room(campaign.id, alice)
    connected, _ = await room.open()
    assert connected
    try:
        await room.hello()
        await room.send(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": text}
        )
        seen = await room.recv_until(
            lambda m: (
                m["type"] == "event" and m["event"]["type"] in ("dm_narration", "turn_failed")
            ),
            timeout=15,
        )
        await wait_idle()
        return seen
    finally:
        await room.close()


@pytest.mark.django_db(transaction=True)
async def test_deltas_stream_to_the_room_batched_before_the_narration(
    campaign, alice, settings, openai_server
):
    settings.DM_DELTA_INTERVAL_SECONDS = 0.2
    answer = {**GOOD_ANSWER, "narration": "The goblin snarls and lunges. " * 12}
    # About 70 chunks over about 1.4 s.
    openai_server.script(Answer(answer, chunk_chars=8, delay=0.02))
    room = Room(campaign.id, alice)
    assert (await room.open())[0]
    try:
        await room.hello()
        await room.send(
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I attack"}
        )
        seen: list[tuple[float, dict]] = []
        while not seen or not (
            seen[-1][1]["type"] == "event" and seen[-1][1]["event"]["type"] == "dm_narration"
        ):
            seen.append((time.monotonic(), await room.recv(timeout=15)))
        await wait_idle()
    finally:
        await room.close()

    deltas = [(at, m) for at, m in seen if m["type"] == "narration.delta"]
    narration = seen[-1][1]["event"]["payload"]
    assert len(deltas) >= 3
    # Batched: far fewer messages than chunks. (Their spacing by the interval is checked
    # with a fake clock above: arrival times at a client jitter with the machine's load.)
    chunks = len(json.dumps(answer)) // 8
    assert len(deltas) < chunks / 4
    # Each carries only the new text; together they are the narration; same turn.
    assert "".join(m["text"] for _, m in deltas).strip() == narration["text"]
    assert {m["turn_id"] for _, m in deltas} == {narration["turn_id"]}
    # All of them came before the event that replaces them.
    last_delta = max(i for i, (_, m) in enumerate(seen) if m["type"] == "narration.delta")
    assert last_delta < len(seen) - 1


@pytest.mark.django_db(transaction=True)
async def test_the_fake_model_streams_too(campaign, alice):
    seen = await play_in_room(campaign, alice, "I light a lantern")
    deltas = [m for m in seen if m["type"] == "narration.delta"]
    narration = seen[-1]["event"]["payload"]
    assert deltas and "".join(m["text"] for m in deltas) == narration["text"]


@pytest.mark.django_db(transaction=True)
async def test_reasoning_is_never_streamed(campaign, alice, openai_server):
    content = "<think>" + json.dumps({"narration": "SECRET"}) + "</think>" + json.dumps(GOOD_ANSWER)
    openai_server.script(Answer(content, reasoning="SECRET thoughts", chunk_chars=3))
    seen = await play_in_room(campaign, alice)
    deltas = [m for m in seen if m["type"] == "narration.delta"]
    assert "".join(m["text"] for m in deltas) == GOOD_ANSWER["narration"]
    assert not any("SECRET" in json.dumps(m) for m in seen)


@pytest.mark.django_db(transaction=True)
async def test_a_repaired_turn_ends_with_the_repaired_narration(campaign, alice, openai_server):
    bad = {**GOOD_ANSWER, "narration": "A first draft.", "options": []}
    openai_server.script(Answer(bad), Answer())
    seen = await play_in_room(campaign, alice)
    narration = seen[-1]["event"]["payload"]
    assert narration["text"] == GOOD_ANSWER["narration"] and not narration["fallback"]
