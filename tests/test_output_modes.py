"""Output modes negotiated (`DM_OUTPUT_MODE=auto`, the default), over real HTTP against
emulated servers that behave like real ones: a refused `json_schema` (400, 422, or
llama-cpp-python's 500 naming `response_format`) moves to `json_object` with the schema,
then without it, then the schema in the prompt alone; what worked is remembered per
server and model (in the Django cache), so a refused shape costs one request per server,
not one per turn, and is never retried as if transient. A server that ignores `tools`
still streams its answer; reasoning never reaches players."""

from __future__ import annotations

import json
import time

import pytest

from tests.openai_server import GOOD_ANSWER, LLAMA_CPP_PYTHON_JSON_SCHEMA, Answer, Fail, serving
from tests.test_openai_adapter import play
from tests.test_streaming import play_in_room

pytestmark = pytest.mark.django_db

REFUSALS = {
    "400": Fail(400, "response_format.type json_schema is not supported"),
    "422": Fail(422, "unknown variant `json_schema`"),
    "llama-cpp-python 500": LLAMA_CPP_PYTHON_JSON_SCHEMA,
}


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture(autouse=True)
def _retries_as_shipped(settings):
    # The default: a 5xx taken for a transient failure would be sent three times a turn.
    settings.DM_MAX_RETRIES = 2
    settings.DM_OUTPUT_MODE = "auto"


def two_turns(campaign, alice) -> list[dict]:
    """Two turns; each must narrate the model's own answer. Their narration payloads."""
    narrations = []
    for text in ("I attack the goblin", "I search the goblin's pockets"):
        _, events = play(campaign, alice, text)
        assert events[-1].type == "dm_narration", [(e.type, e.payload) for e in events]
        narrations.append(events[-1].payload)
    for narration in narrations:
        assert narration["text"] == GOOD_ANSWER["narration"]
        assert narration["fallback"] is False
    return narrations


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refused_json_schema_is_tried_once_per_server_not_per_turn(
    campaign, alice, settings, refusal, stream
):
    settings.DM_STREAM = stream
    with serving(settings, refuse={"json_schema": REFUSALS[refusal]}) as server:
        two_turns(campaign, alice)
        assert server.shapes() == ["json_schema", "json_object+schema", "json_object+schema"]
        # The schema rides in response_format, made for a grammar: every part has a type.
        fmt = server.requests[1].body["response_format"]
        assert fmt["type"] == "json_object"
        # Either a narration with options, or rolls first (narration "", a roll, no options).
        narrate, roll_first = fmt["schema"]["anyOf"]
        assert set(narrate["required"]) == set(roll_first["required"]) == {"narration", "options"}
        assert narrate["properties"]["narration"]["minLength"] == 1
        assert roll_first["properties"]["narration"]["maxLength"] == 0
        text = json.dumps(fmt["schema"], separators=(",", ":"))
        assert '"value":{"default":null,"type":["string",' in text
        # ... and in the prompt, as always.
        assert "matching this JSON schema" in json.dumps(server.requests[1].body["messages"])


def test_a_server_that_refuses_every_format_gets_the_schema_in_the_prompt(
    campaign, alice, settings
):
    refuse = {
        "json_schema": Fail(400, "'response_format' is not supported"),
        "json_object+schema": Fail(422, "extra field 'schema'"),
        "json_object": LLAMA_CPP_PYTHON_JSON_SCHEMA,
    }
    with serving(settings, refuse=refuse) as server:
        two_turns(campaign, alice)
        assert server.shapes() == [
            "json_schema",
            "json_object+schema",
            "json_object",
            "prompt",
            "prompt",
        ]
        assert "response_format" not in server.requests[-1].body
        assert "matching this JSON schema" in json.dumps(server.requests[-1].body["messages"])


def test_json_object_without_its_schema_where_the_schema_is_refused(campaign, alice, settings):
    refuse = {"json_schema": Fail(400), "json_object+schema": Fail(400, "unknown field schema")}
    with serving(settings, refuse=refuse) as server:
        two_turns(campaign, alice)
        assert server.shapes() == [
            "json_schema",
            "json_object+schema",
            "json_object",
            "json_object",
        ]
        assert server.requests[-1].body["response_format"] == {"type": "json_object"}


def test_the_responses_api_falls_back_to_json_object(campaign, alice, settings):
    settings.OPENAI_API_STYLE = "responses"
    with serving(settings, refuse={"json_schema": Fail(400)}) as server:
        two_turns(campaign, alice)
        assert server.shapes() == ["json_schema", "json_object", "json_object"]
        assert server.requests[-1].body["text"]["format"] == {"type": "json_object"}


def test_each_server_is_remembered_apart_and_forgotten_after_the_expiry(campaign, alice, settings):
    settings.DM_OUTPUT_MODE_CACHE_SECONDS = 1
    with (
        serving(settings, refuse={"json_schema": LLAMA_CPP_PYTHON_JSON_SCHEMA}) as llama,
        serving(settings) as openai_like,
    ):
        settings.OPENAI_BASE_URL = llama.url
        two_turns(campaign, alice)
        settings.OPENAI_BASE_URL = openai_like.url
        two_turns(campaign, alice)
        assert llama.shapes() == ["json_schema", "json_object+schema", "json_object+schema"]
        assert openai_like.shapes() == ["json_schema", "json_schema"]

        time.sleep(1.2)  # the memory expires: the server may have been upgraded
        settings.OPENAI_BASE_URL = llama.url
        _, events = play(campaign, alice, "I listen at the door")
        assert events[-1].payload["fallback"] is False
        assert llama.shapes()[3:] == ["json_schema", "json_object+schema"]


def test_a_server_error_that_names_nothing_is_still_retried_in_the_same_shape(
    campaign, alice, settings
):
    with serving(settings) as server:
        server.script(Fail(500, "CUDA out of memory"), Answer())
        two_turns(campaign, alice)
        assert server.shapes() == ["json_schema", "json_schema", "json_schema"]


# --- Explicit modes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "shape"),
    [
        ("json_schema", "json_schema"),
        ("json_object", "json_object+schema"),
        ("tool", "tool"),
        ("prompt", "prompt"),
    ],
)
def test_an_explicit_mode_sends_its_shape(campaign, alice, settings, mode, shape):
    settings.DM_OUTPUT_MODE = mode
    with serving(settings) as server:
        two_turns(campaign, alice)
        assert server.shapes() == [shape, shape]


def test_an_explicit_json_schema_refused_fails_the_turn_after_one_request(
    campaign, alice, settings
):
    settings.DM_OUTPUT_MODE = "json_schema"
    with serving(settings, refuse={"json_schema": LLAMA_CPP_PYTHON_JSON_SCHEMA}) as server:
        _, events = play(campaign, alice)
        assert [e.type for e in events] == ["turn_failed"]
        assert events[0].payload["code"] == "model_error"
        assert "answer format" in events[0].payload["detail"]
        assert "validation" not in events[0].payload["detail"]  # the server's words stay out
        assert server.shapes() == ["json_schema"]  # not retried as if transient


def test_an_explicit_json_object_drops_the_schema_field_where_refused(campaign, alice, settings):
    settings.DM_OUTPUT_MODE = "json_object"
    with serving(settings, refuse={"json_object+schema": Fail(400)}) as server:
        two_turns(campaign, alice)
        assert server.shapes() == ["json_object+schema", "json_object", "json_object"]


def test_an_unknown_mode_fails_the_turn_in_plain_words(campaign, alice, settings):
    settings.DM_OUTPUT_MODE = "grammar"
    with serving(settings) as server:
        _, events = play(campaign, alice)
        assert [e.type for e in events] == ["turn_failed"]
        assert "DM_OUTPUT_MODE must be one of auto" in events[0].payload["detail"]
        assert server.requests == []


# --- Streaming: a server that ignores tools, reasoning ------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_server_ignoring_tools_still_streams_its_answer(campaign, alice, settings):
    settings.DM_OUTPUT_MODE = "tool"
    settings.DM_DELTA_INTERVAL_SECONDS = 0
    with serving(settings, ignore_tools=True) as server:
        server.script(Answer(chunk_chars=4, delay=0.005))
        seen = await play_in_room(campaign, alice)
        assert server.shapes() == ["tool"]
    narration = seen[-1]["event"]["payload"]
    assert narration["text"] == GOOD_ANSWER["narration"] and narration["fallback"] is False
    deltas = [m["text"] for m in seen if m["type"] == "narration.delta"]
    # As it came, not in one piece at the end.
    assert len(deltas) >= 3 and "".join(deltas) == GOOD_ANSWER["narration"]


SECRET_ANSWER = Answer(
    "<think>SECRET: the innkeeper is the villain</think>" + json.dumps(GOOD_ANSWER),
    reasoning="SECRET reasoning tokens",
    reasoning_fields=("reasoning_content", "reasoning"),
    chunk_chars=5,
)


@pytest.mark.django_db(transaction=True)
async def test_reasoning_fields_never_reach_the_room_in_any_settled_shape(
    campaign, alice, settings
):
    settings.DM_DELTA_INTERVAL_SECONDS = 0
    with serving(settings, refuse={"json_schema": LLAMA_CPP_PYTHON_JSON_SCHEMA}) as server:
        server.default = SECRET_ANSWER
        seen = await play_in_room(campaign, alice)
        seen += await play_in_room(campaign, alice, "I ask the innkeeper about the road")
        assert server.shapes() == ["json_schema", "json_object+schema", "json_object+schema"]
    deltas = [m["text"] for m in seen if m["type"] == "narration.delta"]
    assert "".join(deltas) == GOOD_ANSWER["narration"] * 2
    assert not any("SECRET" in json.dumps(m) for m in seen)


def test_reasoning_fields_never_reach_the_narration_without_streaming(campaign, alice, settings):
    settings.DM_STREAM = False
    with serving(settings, refuse={"json_schema": Fail(400)}) as server:
        server.default = SECRET_ANSWER
        _, events = play(campaign, alice)
    assert events[-1].payload["text"] == GOOD_ANSWER["narration"]
    assert not any("SECRET" in json.dumps(e.payload) for e in events)


def test_a_refusal_is_remembered_even_when_the_next_shape_fails_too(campaign, alice, settings):
    # llama-cpp-python refuses json_schema, then the json_object+schema call runs past the
    # turn's deadline on a slow machine: the next turn must not ask in json_schema again.
    settings.DM_MAX_RETRIES = 0
    with serving(settings, refuse={"json_schema": LLAMA_CPP_PYTHON_JSON_SCHEMA}) as server:
        server.script(Fail(503, "the server is busy"))
        _, events = play(campaign, alice, "I attack the goblin")
        assert [e.type for e in events] == ["turn_failed"]
        _, events = play(campaign, alice, "I search the goblin's pockets")
        assert events[-1].type == "dm_narration"
        assert server.shapes() == ["json_schema", "json_object+schema", "json_object+schema"]
