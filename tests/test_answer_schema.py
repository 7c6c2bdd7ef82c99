"""The one schema of the DM's answer: what is sent to the model and what comes back.

Model output is the least trusted input: not JSON, the wrong shape, unknown tools, wrong
argument types, too many options, too much text, reasoning that must not reach players.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.schema import (
    NARRATION_MAX_CHARS,
    OPTIONS_MAX,
    AnswerInvalid,
    answer_json_schema,
    answer_parse,
    strip_reasoning,
)

GOOD = {
    "narration": "The goblin snarls.",
    "tool_calls": [
        {"name": "roll", "args": {"formula": "1d20+5", "reason": "attack"}},
        {
            "name": "apply_state_patch",
            "args": {
                "reason": "loot",
                "patches": [{"op": "add", "path": "/flags/door_open", "value": True}],
            },
        },
        {
            "name": "create_entity",
            "args": {"kind": "npc", "name": "Maren", "data": {"mood": "wary"}},
        },
        {"name": "trigger_audio", "args": {"cue": "rain", "volume": 0.4}},
    ],
    "options": ["Fight", "Flee", "Parley"],
}


def with_(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


def test_a_good_answer_parses_into_tool_calls_for_the_executor():
    answer = answer_parse(json.dumps(GOOD))
    assert answer.narration == "The goblin snarls."
    assert answer.options == ["Fight", "Flee", "Parley"]
    assert answer.tool_calls_as_dicts() == GOOD["tool_calls"]


def test_the_json_schema_sent_to_the_model_is_the_validation_schema():
    schema = answer_json_schema()
    assert set(schema["required"]) == {"narration", "options"}
    props = schema["properties"]
    # "" is a valid narration when the answer only rolls (a two-step turn, CONTRACTS §7).
    assert "minLength" not in props["narration"]
    assert props["options"]["maxItems"] == OPTIONS_MAX
    text = json.dumps(schema)
    for tool in ("roll", "apply_state_patch", "create_entity", "trigger_audio"):
        assert f'"{tool}"' in text
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", "empty"),
        ("The goblin attacks!", "no JSON object"),
        ('{"narration": "cut off', "not valid JSON"),
        ("[1, 2, 3]", "no JSON object"),
        (with_(narration="", tool_calls=[]), "narration"),
        (with_(narration="   ", tool_calls=GOOD["tool_calls"][1:]), "narration"),
        (with_(options=[]), "options"),
        (with_(options=[]), "options"),
        (json.dumps({"narration": "x"}), "options"),
        (with_(tool_calls=[{"name": "delete_campaign", "args": {}}]), "delete_campaign"),
        (with_(tool_calls=[{"name": "roll", "args": {"formula": 20, "reason": "x"}}]), "formula"),
        (with_(tool_calls=[{"name": "roll", "args": {"reason": "x"}}]), "formula"),
        (
            with_(tool_calls=[{"name": "trigger_audio", "args": {"cue": "rain", "volume": 7}}]),
            "volume",
        ),
        (
            with_(tool_calls=[{"name": "create_entity", "args": {"kind": "god", "name": "Zeus"}}]),
            "kind",
        ),
        (with_(tool_calls="roll"), "tool_calls"),
        (with_(extra_field=1), "extra_field"),
        ('{"narration": ' + "[" * 100_000, "nested too deeply"),
    ],
)
def test_unusable_answers_are_rejected_with_a_reason_for_the_repair(raw: str, expected: str):
    with pytest.raises(AnswerInvalid) as caught:
        answer_parse(raw)
    assert expected.lower() in str(caught.value).lower()


def test_fifty_options_are_trimmed_to_eight_and_blank_or_repeated_ones_dropped():
    options = ["", "Run", "Run"] + [f"Option {i}" for i in range(50)]
    answer = answer_parse(with_(options=options))
    assert answer.options == ["Run"] + [f"Option {i}" for i in range(7)]


def test_a_megabyte_of_narration_is_cut_to_a_sane_length():
    answer = answer_parse(with_(narration="The rain falls. " * 70_000))
    assert len(answer.narration) <= NARRATION_MAX_CHARS
    assert answer.narration.endswith("…")


def test_long_options_are_cut_and_extra_tool_calls_dropped():
    calls = [{"name": "roll", "args": {"formula": "1d6", "reason": str(i)}} for i in range(30)]
    answer = answer_parse(with_(options=["x" * 500], tool_calls=calls))
    assert len(answer.options[0]) <= 120
    assert len(answer.tool_calls) == 8


def test_null_tool_calls_mean_none():
    assert answer_parse(with_(tool_calls=None)).tool_calls == []


def test_json_wrapped_in_a_fence_or_prose_is_found():
    fenced = "Here is my answer:\n```json\n" + json.dumps(GOOD) + "\n```\nEnjoy!"
    assert answer_parse(fenced).narration == "The goblin snarls."


def test_an_option_written_as_an_object_is_read_by_its_words():
    # gemma-3-270m: "options": [{"text": "Open the chest"}, {"label": "Leave"}].
    raw = json.dumps({**GOOD, "options": [{"text": "Open the chest"}, {"label": "Leave"}, "Wait"]})
    assert answer_parse(raw).options == ["Open the chest", "Leave", "Wait"]
    with pytest.raises(ValueError, match="options"):
        answer_parse(json.dumps({**GOOD, "options": [{"mood": "grim"}]}))


def test_a_raw_newline_inside_the_narration_is_read_as_one():
    # gemma-3-270m through llama-cpp-python writes its paragraphs with real line breaks.
    raw = json.dumps(GOOD).replace("The goblin snarls.", "The goblin snarls.\\n\\tIt lunges.")
    raw = raw.replace("\\n", "\n").replace("\\t", "\t")
    assert answer_parse(raw).narration.startswith("The goblin snarls.\n")


@pytest.mark.parametrize(
    "raw",
    [
        "<think>The players are weak; " + '{"narration": "SECRET"}' + "</think>" + json.dumps(GOOD),
        "I must not reveal SECRET plans.</think>\n" + json.dumps(GOOD),
        "<thinking>SECRET</thinking>" + json.dumps(GOOD),
        json.dumps({**GOOD, "narration": "<think>SECRET</think>The goblin snarls."}),
    ],
)
def test_reasoning_never_reaches_the_narration(raw: str):
    answer = answer_parse(raw)
    assert "SECRET" not in answer.narration
    assert answer.narration == "The goblin snarls."


def test_an_unclosed_think_block_is_all_reasoning():
    assert strip_reasoning("<think>still thinking " + json.dumps(GOOD)) == ""
    with pytest.raises(AnswerInvalid):
        answer_parse("<think>still thinking " + json.dumps(GOOD))


def test_an_empty_narration_asks_for_the_rolls_first_but_never_on_the_last_step():
    """CONTRACTS §7: an answer with a `roll` and narration "" asks to see the results; on
    the last step of a turn the narration must be there."""
    rolls_only = json.dumps({"narration": "", "tool_calls": GOOD["tool_calls"][:1], "options": []})
    answer = answer_parse(rolls_only)
    assert answer.asks_for_rolls and answer.narration == ""
    assert not answer_parse(json.dumps(GOOD)).asks_for_rolls
    with pytest.raises(AnswerInvalid) as caught:
        answer_parse(rolls_only, must_narrate=True)
    assert "last step" in str(caught.value)
