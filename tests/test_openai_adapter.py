"""The `openai` adapter over real HTTP against a local OpenAI-compatible server, in both
API styles: good answers, repairs, fallbacks, rate limits, hangs, refused credentials."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from campaigns.selectors import events_after, membership_get
from campaigns.services import campaign_create, player_action_submit
from orchestrator.services import dm_settings_set, turn_run, turns_run_pending
from tests.openai_server import GOOD_ANSWER, Answer, Fail, Hang, Pings, serving

pytestmark = pytest.mark.django_db

STYLES = ["chat", "responses"]


@pytest.fixture
def openai_server(settings):
    with serving(settings) as server:
        yield server


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture(params=STYLES)
def style(request, settings, openai_server):
    settings.OPENAI_API_STYLE = request.param
    return request.param


def act(campaign, user, text: str = "I attack the goblin"):
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    return player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


def play(campaign, user, text: str = "I attack the goblin"):
    """Act, run the turn; the turn's outcome and the events it appended."""
    action = act(campaign, user, text)
    outcome = turn_run(campaign_id=campaign.id)
    return outcome, events_after(campaign_id=campaign.id, after_seq=action.seq)


def prompt_text(request) -> str:
    return json.dumps(request.body.get("messages") or request.body.get("input"))


@pytest.mark.parametrize("mode", ["json_schema", "tool"])
def test_a_good_answer_plays_the_turn(campaign, alice, style, mode, settings, openai_server):
    settings.DM_OUTPUT_MODE = mode
    outcome, events = play(campaign, alice)
    assert [e.type for e in events] == [
        "dice_seed_committed",
        "roll_requested",
        "roll_result",
        "dm_narration",
    ][-len(events) :]
    narration = events[-1].payload
    assert narration["text"] == GOOD_ANSWER["narration"]
    assert narration["options"] == GOOD_ANSWER["options"]
    assert narration["fallback"] is False
    [request] = openai_server.requests
    assert request.path == ("/v1/chat/completions" if style == "chat" else "/v1/responses")
    assert request.headers["authorization"] == "Bearer sk-test"
    body = request.body
    assert body["model"] == "test-model" and body["stream"] is True
    if mode == "tool":
        tool = body["tools"][0]
        assert (tool.get("name") or tool["function"]["name"]) == "dm_turn"
    elif style == "chat":
        assert body["response_format"]["type"] == "json_schema"
        assert "narration" in json.dumps(body["response_format"]["json_schema"]["schema"])
    else:
        assert body["text"]["format"]["type"] == "json_schema"
    assert "roll first" in prompt_text(request)
    assert "I attack the goblin" in prompt_text(request)
    # The usage the server reported is what the turn reports (for billing).
    [usage] = outcome.usage
    assert (usage.input_tokens, usage.output_tokens) == request.usage
    assert usage.provider == "openai" and usage.model == "test-model" and not usage.estimated


def test_without_streaming_the_answer_is_the_same(campaign, alice, style, settings, openai_server):
    settings.DM_STREAM = False
    _, events = play(campaign, alice)
    assert events[-1].payload["text"] == GOOD_ANSWER["narration"]
    assert not openai_server.requests[0].body.get("stream")


def test_the_provider_and_model_are_chosen_per_campaign(
    campaign, alice, gm, settings, openai_server
):
    settings.DM_MODEL_PROVIDER = "fake"
    settings.DM_MODELS_ALLOWED = ["campaign-model"]
    dm_settings_set(campaign_id=campaign.id, provider="openai", model="campaign-model")
    _, events = play(campaign, alice)
    assert events[-1].payload["text"] == GOOD_ANSWER["narration"]
    assert openai_server.requests[0].body["model"] == "campaign-model"

    other = campaign_create(name="Other", creator=gm)
    gm_membership = membership_get(campaign_id=other.id, user_id=gm.id)
    player_action_submit(membership=gm_membership, action_id=uuid.uuid4(), text="I look around")
    assert turns_run_pending(campaign_id=other.id) == 1
    assert len(openai_server.requests) == 1  # the other campaign played with the fake model


def test_a_malformed_answer_is_repaired_once_with_the_error(campaign, alice, style, openai_server):
    openai_server.script(Answer("The goblin attacks! (no JSON here)"), Answer())
    outcome, events = play(campaign, alice)
    assert events[-1].payload["text"] == GOOD_ANSWER["narration"]
    assert events[-1].payload["fallback"] is False
    assert "roll_result" in [e.type for e in events]
    _first, repair = openai_server.requests
    assert not repair.body.get("stream")
    repair_prompt = prompt_text(repair)
    assert "no JSON object" in repair_prompt and "(no JSON here)" in repair_prompt
    assert [u.purpose for u in outcome.usage] == ["dm_turn", "repair"]


def test_a_wrong_shape_is_repaired(campaign, alice, style, openai_server):
    bad = {
        **GOOD_ANSWER,
        "tool_calls": [{"name": "grant_gold", "args": {"amount": 10**6}}],
        "options": [],
    }
    openai_server.script(Answer(bad), Answer())
    _, events = play(campaign, alice)
    assert events[-1].payload["fallback"] is False
    repair_prompt = prompt_text(openai_server.requests[1])
    assert "grant_gold" in repair_prompt and "options" in repair_prompt


def test_malformed_twice_gives_a_safe_fallback(campaign, alice, style, openai_server):
    openai_server.script(Answer("not json"), Answer('{"narration": ""}'))
    outcome, events = play(campaign, alice)
    assert [e.type for e in events] == ["dm_narration"]  # no tool ran
    narration = events[-1].payload
    assert narration["fallback"] is True
    assert narration["text"] and 1 <= len(narration["options"]) <= 8
    assert len(openai_server.requests) == 2
    assert outcome.fallback is True


def test_too_many_options_and_a_megabyte_of_narration_are_trimmed(
    campaign, alice, style, openai_server
):
    huge = {
        **GOOD_ANSWER,
        "narration": "The rain falls. " * 65_000,
        "options": [f"Do {i}" for i in range(50)],
    }
    openai_server.script(Answer(huge, chunk_chars=4096))
    _, events = play(campaign, alice)
    narration = events[-1].payload
    assert narration["fallback"] is False
    assert len(narration["options"]) == 8
    assert 1000 < len(narration["text"]) <= 4000
    assert len(openai_server.requests) == 1


def test_reasoning_never_reaches_the_players(campaign, alice, style, openai_server):
    content = "<think>SECRET plan: the innkeeper is the villain</think>" + json.dumps(GOOD_ANSWER)
    openai_server.script(Answer(content, reasoning="SECRET reasoning tokens"))
    _, events = play(campaign, alice)
    assert events[-1].payload["text"] == GOOD_ANSWER["narration"]
    assert not any("SECRET" in json.dumps(e.payload) for e in events)


def test_a_429_is_retried_then_the_turn_succeeds(campaign, alice, style, openai_server):
    openai_server.script(Fail(429, headers={"Retry-After": "0"}), Answer())
    _, events = play(campaign, alice)
    assert events[-1].type == "dm_narration" and events[-1].payload["fallback"] is False
    assert len(openai_server.requests) == 2


def test_a_server_error_is_retried(campaign, alice, settings, openai_server):
    openai_server.script(Fail(503), Fail(500), Answer())
    _, events = play(campaign, alice)
    assert events[-1].type == "dm_narration"
    assert len(openai_server.requests) == 3


def test_rate_limited_every_time_fails_the_turn_as_rate_limited(
    campaign, alice, settings, openai_server
):
    settings.DM_MAX_RETRIES = 2
    openai_server.default = Fail(429, headers={"Retry-After": "0"})
    outcome, events = play(campaign, alice)
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "rate_limited"
    assert events[0].payload["turn_id"] == outcome.turn_id
    assert len(openai_server.requests) == 3


def test_a_hang_times_out_and_fails_the_turn_without_retrying(
    campaign, alice, style, settings, openai_server
):
    settings.DM_TIMEOUT_SECONDS = 0.5
    openai_server.script(Hang(10))
    started = time.monotonic()
    _, events = play(campaign, alice)
    assert time.monotonic() - started < 3
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_timeout"
    assert len(openai_server.requests) == 1


def test_a_stream_that_trickles_past_the_turn_deadline_fails_the_turn(
    campaign, alice, settings, openai_server
):
    settings.DM_TURN_DEADLINE_SECONDS = 0.6
    openai_server.script(Answer(chunk_chars=2, delay=0.05))
    _, events = play(campaign, alice)
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_timeout"


def test_a_server_that_pings_without_answering_is_cut_at_the_turn_deadline(
    campaign, alice, settings, openai_server
):
    # The read timeout never trips: the server is never silent for DM_TIMEOUT_SECONDS.
    settings.DM_TIMEOUT_SECONDS = 5
    settings.DM_TURN_DEADLINE_SECONDS = 0.8
    openai_server.script(Pings(seconds=20, every=0.1))
    started = time.monotonic()
    _, events = play(campaign, alice)
    assert time.monotonic() - started < 4  # the deadline, not the turn's backstop
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_timeout"
    assert len(openai_server.requests) == 1


def test_a_401_fails_the_turn_at_once(campaign, alice, style, openai_server):
    openai_server.script(Fail(401, "Incorrect API key provided"))
    _, events = play(campaign, alice)
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_error"
    assert "401" in events[0].payload["detail"]
    assert len(openai_server.requests) == 1
    # The actions count as answered: the next one gets its own turn.
    openai_server.script(Answer())
    _, events = play(campaign, alice, "I try again")
    assert events[-1].type == "dm_narration"


def test_without_reported_usage_the_tokens_are_counted(campaign, alice, style, openai_server):
    openai_server.script(Answer(usage=False))
    outcome, _ = play(campaign, alice)
    [usage] = outcome.usage
    assert usage.estimated and usage.input_tokens > 100 and usage.output_tokens > 10


def test_an_unreachable_server_fails_the_turn(campaign, alice, settings, openai_server):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: connection refused
    settings.DM_MAX_RETRIES = 1
    _, events = play(campaign, alice)
    assert [e.type for e in events] == ["turn_failed"]
    assert events[0].payload["code"] == "model_error"
