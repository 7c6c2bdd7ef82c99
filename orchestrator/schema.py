"""The one schema of what the DM model may answer: its tools (CONTRACTS §2) and the answer.

The same pydantic models give the JSON schema sent to the model (structured output or
the arguments of the answer tool) and the validation of what comes back. Model output is
the least trusted input in the system: `answer_parse` takes raw text and either returns
a valid `DMAnswer` or raises `AnswerInvalid` with a message fit for a repair prompt.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm.adapters import AnswerFormat

NARRATION_MAX_CHARS = 4000
OPTION_MAX_CHARS = 120
OPTIONS_MAX = 8
TOOL_CALLS_MAX = 8
ANSWER_TOOL_NAME = "dm_turn"
ANSWER_TOOL_DESCRIPTION = "Give your whole answer to the players' turn."
ANSWER_FORMAT_NAME = "dm_answer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Tools ---------------------------------------------------------------------------------


class RollArgs(_Strict):
    formula: str = Field(
        min_length=1,
        max_length=60,
        description="Dice notation such as 1d20+5, 2d20kh1, 4d6kh3, (1d8+2)*2",
    )
    reason: str = Field(min_length=1, max_length=200, description="What the roll decides")
    dc: int | None = Field(
        default=None,
        ge=1,
        le=40,
        description="The difficulty class you choose: the roll succeeds when its total >= dc",
    )
    private_to: str | None = Field(
        default=None,
        max_length=40,
        description="A player's user id for a secret roll only that player (and the GM) sees",
    )


class RequestRollArgs(_Strict):
    to: str = Field(min_length=1, max_length=40, description="The user id of the player who rolls")
    formula: str = Field(
        min_length=1, max_length=60, description="Dice notation with their modifier: 1d20+3"
    )
    reason: str = Field(min_length=1, max_length=200, description="What the roll decides")
    dc: int | None = Field(
        default=None, ge=1, le=40, description="The difficulty class; not shown before the roll"
    )


class PatchOperation(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    op: Literal["add", "remove", "replace", "test", "move", "copy"]
    path: str = Field(min_length=1, max_length=300, description="JSON pointer into the state")
    value: Any = None
    from_: str | None = Field(default=None, alias="from", max_length=300)


class ApplyStatePatchArgs(_Strict):
    reason: str = Field(min_length=1, max_length=200)
    patches: list[PatchOperation] = Field(
        min_length=1, max_length=20, description="RFC 6902 operations on the campaign state"
    )


class CreateEntityArgs(_Strict):
    kind: Literal["npc", "item", "location", "faction", "creature"]
    name: str = Field(min_length=1, max_length=80)
    data: dict[str, Any] = Field(default_factory=dict, description="Short facts: description, mood")
    hidden: bool = Field(
        default=False,
        description=(
            "true for what the players have not discovered yet: a trap, a lurking creature, "
            "a secret door. Only the GM sees it until you reveal it with apply_state_patch "
            '{"op": "replace", "path": "/entities/<id>/hidden", "value": false}'
        ),
    )


class TriggerAudioArgs(_Strict):
    cue: str = Field(min_length=1, max_length=60, description="A sound cue such as combat or rain")
    volume: float = Field(default=0.8, ge=0, le=1)


class NarratePrivateArgs(_Strict):
    to: str = Field(
        min_length=1, max_length=40, description="The user id of the one player who perceives it"
    )
    text: str = Field(
        min_length=1,
        max_length=2000,
        description="What only that player notices, told to them alone; never in the narration",
    )


class RollCall(_Strict):
    name: Literal["roll"]
    args: RollArgs


class RequestRollCall(_Strict):
    name: Literal["request_roll"]
    args: RequestRollArgs


class ApplyStatePatchCall(_Strict):
    name: Literal["apply_state_patch"]
    args: ApplyStatePatchArgs


class CreateEntityCall(_Strict):
    name: Literal["create_entity"]
    args: CreateEntityArgs


class TriggerAudioCall(_Strict):
    name: Literal["trigger_audio"]
    args: TriggerAudioArgs


class NarratePrivateCall(_Strict):
    name: Literal["narrate_private"]
    args: NarratePrivateArgs


ToolCall = Annotated[
    RollCall
    | RequestRollCall
    | ApplyStatePatchCall
    | CreateEntityCall
    | TriggerAudioCall
    | NarratePrivateCall,
    Field(discriminator="name"),
]
TOOL_NAMES = (
    "roll",
    "request_roll",
    "apply_state_patch",
    "create_entity",
    "trigger_audio",
    "narrate_private",
)
# The tools of a rolling answer (narration ""): the dice, before the narration.
ROLL_TOOLS = frozenset({"roll", "request_roll"})


# --- The answer ----------------------------------------------------------------------------


class DMAnswer(_Strict):
    """The DM model's answer to one step of a turn.

    Either the narration (with the tool calls and options that go with it), or, with an
    empty narration, only `roll` calls: the model asks to see the dice before it tells
    what they decided (a two-step turn, CONTRACTS §7)."""

    narration: str = Field(
        max_length=NARRATION_MAX_CHARS,
        description=(
            "What happens next, told to the players; never an outcome the dice have not "
            'decided yet. "" only to roll first: then tool_calls holds the rolls and you '
            "narrate once you have their results"
        ),
    )
    tool_calls: list[ToolCall] = Field(
        default_factory=list,
        max_length=TOOL_CALLS_MAX,
        description="Rolls, state changes, entities, sound cues, private words; run by the server",
    )
    options: list[Annotated[str, Field(min_length=1, max_length=OPTION_MAX_CHARS)]] = Field(
        max_length=OPTIONS_MAX,
        description='3 to 6 short things the players may do next (may be [] with narration "")',
    )

    @field_validator("narration")
    @classmethod
    def _narration_trimmed(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _narrates_or_rolls(self) -> DMAnswer:
        if not self.narration:
            if not any(call.name in ROLL_TOOLS for call in self.tool_calls):
                raise ValueError(
                    "narration must not be blank (it may be empty only when tool_calls "
                    "holds a roll, to see its result first)"
                )
        elif not self.options:
            raise ValueError("options: give 1 to 8 options with the narration")
        return self

    @property
    def asks_for_rolls(self) -> bool:
        """Rolls first, narration after their results (a two-step turn)."""
        return not self.narration

    def tool_calls_as_dicts(self) -> list[dict[str, Any]]:
        """The tool calls as `{"name", "args"}` dicts for `campaigns.tools.turn_commit`."""
        return [
            {
                "name": call.name,
                "args": call.args.model_dump(mode="json", by_alias=True, exclude_unset=True),
            }
            for call in self.tool_calls
        ]


@functools.cache
def answer_json_schema_text() -> str:
    """The JSON schema of `DMAnswer` as compact JSON (made once: it costs milliseconds).
    Without pydantic's `title`s, which tell a model nothing the names do not and cost
    every prompt a few hundred tokens."""
    return json.dumps(_untitled(DMAnswer.model_json_schema(by_alias=True)), separators=(",", ":"))


def _untitled(node: Any, *, names: bool = False) -> Any:
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:  # a map of names to schemas: a property may be called "title"
        return {key: _untitled(value) for key, value in node.items()}
    return {
        key: _untitled(value, names=key in ("properties", "$defs"))
        for key, value in node.items()
        if key != "title"
    }


def answer_json_schema() -> dict[str, Any]:
    """The JSON schema of `DMAnswer`, as sent to the model (a fresh copy each call)."""
    return json.loads(answer_json_schema_text())


# A grammar-based server turns `maxLength` into one nested rule per character: 4000 for the
# narration made llama-cpp-python's grammar 67 KB. Long limits are left to `_trim`.
_GRAMMAR_MAX_LENGTH = 200
_ANY_TYPE = ["string", "number", "integer", "boolean", "object", "array", "null"]
_ANNOTATIONS = {"title", "description", "default", "examples"}


def _portable(node: Any, *, names: bool = False) -> Any:
    if isinstance(node, list):
        return [_portable(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:  # a map of names to schemas (properties, $defs): its keys are not keywords
        return {key: _portable(value) for key, value in node.items()}
    out = {
        key: _portable(value, names=key in ("properties", "$defs", "definitions"))
        for key, value in node.items()
        if not (key == "maxLength" and isinstance(value, int) and value > _GRAMMAR_MAX_LENGTH)
        and key != "discriminator"
    }
    if not set(out) - _ANNOTATIONS:
        # `Any` gives an empty schema; llama-cpp-python's converter rejects it and silently
        # falls back to "any JSON object", which loses the whole answer's shape.
        out["type"] = list(_ANY_TYPE)
    return out


@functools.cache
def _answer_json_schema_portable_text() -> str:
    return json.dumps(_two_shapes(_portable(answer_json_schema())), separators=(",", ":"))


def _two_shapes(schema: dict[str, Any]) -> dict[str, Any]:
    """The answer as a grammar sees it: either a narration (not empty, with options) or
    only rolls (narration "", at least one roll, no options). One object with an optional
    narration let small models write an empty narration with no roll, or no options."""
    defs = schema.pop("$defs", {})
    narrate = copy.deepcopy(schema)
    narrate["properties"]["narration"]["minLength"] = 1
    narrate["properties"]["options"]["minItems"] = 1
    roll_first = copy.deepcopy(schema)
    roll_first["properties"]["narration"] = {"type": "string", "maxLength": 0}
    calls = roll_first["properties"]["tool_calls"]
    calls["minItems"] = 1
    calls["items"] = {
        "anyOf": [{"$ref": f"#/$defs/{name}"} for name in ("RollCall", "RequestRollCall")]
    }
    roll_first["properties"]["options"] = {"type": "array", "maxItems": 0}
    return {"$defs": defs, "anyOf": [narrate, roll_first]}


def answer_json_schema_portable() -> dict[str, Any]:
    """The answer's JSON schema for servers that compile it into a grammar (llama.cpp,
    llama-cpp-python's `json_object` + `schema`): every sub-schema has a type, only
    short `maxLength` limits are kept (what it no longer limits, `answer_parse` trims),
    and the two shapes of an answer are told apart (`_two_shapes`)."""
    return json.loads(_answer_json_schema_portable_text())


def answer_format() -> AnswerFormat:
    """What a turn's model call must answer, for the output modes that enforce it."""
    return AnswerFormat(
        name=ANSWER_FORMAT_NAME,
        schema=answer_json_schema(),
        portable_schema=answer_json_schema_portable(),
        tool_name=ANSWER_TOOL_NAME,
        tool_description=ANSWER_TOOL_DESCRIPTION,
    )


# --- Parsing untrusted output --------------------------------------------------------------


class AnswerInvalid(ValueError):
    """The model's answer cannot be used; the message says why (it goes into the repair)."""


_REASONING = re.compile(
    r"<(think|thinking|reasoning|analysis)>.*?(</\1>|\Z)", re.DOTALL | re.IGNORECASE
)
_STRAY_TAG = re.compile(r"</?(think|thinking|reasoning|analysis)>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """Remove `<think>…</think>` (and kin) blocks; an unclosed one runs to the end.

    Some servers (DeepSeek-R1 style templates) start the reply already inside the block
    and send only the closing tag: everything before a lone `</think>` is reasoning too.
    """
    lower = text.lower()
    for tag in ("</think>", "</thinking>", "</reasoning>"):
        close = lower.find(tag)
        if close != -1 and lower.find(tag.replace("/", ""), 0, close) == -1:
            text = text[close + len(tag) :]
            lower = text.lower()
    text = _REASONING.sub("", text)
    return _STRAY_TAG.sub("", text)


def _first_json_object(text: str) -> Any:
    text = strip_reasoning(text).strip()
    if not text:
        raise AnswerInvalid("the answer is empty; send one JSON object")
    # strict=False: a raw newline or tab inside a string (small local models write
    # paragraphs that way) is read as what it means, not refused as a control character.
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    tries = 0
    first_error: str | None = None
    while start != -1 and tries < 20:
        try:
            value, _ = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError as exc:
            first_error = first_error or f"{exc.msg} at character {exc.pos}"
        except RecursionError:
            raise AnswerInvalid("the answer is nested too deeply") from None
        start = text.find("{", start + 1)
        tries += 1
    if first_error:
        raise AnswerInvalid(f"the answer is not valid JSON ({first_error})")
    raise AnswerInvalid("the answer contains no JSON object")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    # End on a sentence where one ends in the last fifth of what we keep.
    stop = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("\n"))
    if stop > limit * 0.8:
        head = head[: stop + 1]
    return head.rstrip() + "…"


def _trim(data: dict[str, Any]) -> dict[str, Any]:
    """Cut what is merely too long to its limit, so that it passes instead of failing."""
    data = dict(data)
    if isinstance(data.get("narration"), str):
        data["narration"] = _cut(strip_reasoning(data["narration"]).strip(), NARRATION_MAX_CHARS)
    options = data.get("options")
    if isinstance(options, list):
        kept: list[Any] = []
        for option in options:
            # Small models write an option as {"text": ...} (or "label", "option"): read
            # its words; any other object is left for validation to refuse.
            if isinstance(option, dict):
                words = [option.get(k) for k in ("text", "label", "option", "action")]
                option = next((w for w in words if isinstance(w, str)), option)
            if isinstance(option, str):
                option = _cut(" ".join(option.split()), OPTION_MAX_CHARS)
                if not option or option in kept:
                    continue
            kept.append(option)
            if len(kept) == OPTIONS_MAX:
                break
        data["options"] = kept
    if data.get("tool_calls") is None and "tool_calls" in data:
        data["tool_calls"] = []
    if isinstance(data.get("tool_calls"), list):
        data["tool_calls"] = data["tool_calls"][:TOOL_CALLS_MAX]
    return data


def describe_validation_error(exc: ValidationError, limit: int = 8) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def answer_parse(
    text: str, *, must_narrate: bool = False, data_marker: str | None = None
) -> DMAnswer:
    """A valid answer from the model's raw text, or `AnswerInvalid` saying what is wrong.
    With `must_narrate` (a turn's last step) an answer that only rolls is invalid too.
    `data_marker` is the prompt's data-block nonce: an answer that repeats it is quoting
    the prompt's data (a small model echoing its input), which may hold what only some
    may know (secret rolls, hidden state): it is refused, never shown."""
    data = _first_json_object(text)
    try:
        answer = DMAnswer.model_validate(_trim(data))
    except ValidationError as exc:
        raise AnswerInvalid(describe_validation_error(exc)) from None
    if data_marker and any(data_marker in part for part in (answer.narration, *answer.options)):
        raise AnswerInvalid(
            "the narration repeats the data blocks of the prompt; tell the story in your own "
            "words and never copy the blocks"
        )
    if must_narrate and answer.asks_for_rolls:
        raise AnswerInvalid(
            "narration must not be empty: this is the turn's last step, so narrate now "
            "what the dice already decided, without new rolls"
        )
    return answer
