"""The authoritative tools: the model proposes, these functions decide (CONTRACTS §2).

`turn_commit` runs a DM turn's tool calls and appends their events followed by the
turn's `dm_narration`, all in one `events_append` (one transaction). Each call is
validated against the state as it will be after the calls before it in the same turn.
A call that is refused never breaks the turn: a refused `apply_state_patch` is recorded
as `state_patch_requested` + `state_patch_rejected`; any other refused call is listed in
the narration's `tool_errors` (so the next prompt can tell the DM) and in the result's
`rejections`, and the rest of the turn goes on.

Hidden state: `create_entity` with `hidden: true` makes an entity the players have not
discovered (a GM-only `entity_created`); a patch touching hidden things is recorded
GM-only, a reveal publicly with the revealed entities (`campaigns.state_schema`), and so
is every patch aimed at an entity id the players cannot see, unknown ids included.

Refusals (tool_errors, state_patch_rejected, the GM's errors) say which call or
operation and why in our own words; they never quote the state (no stored value, no
library exception text, no pydantic input): `campaigns.state_schema.validation_problems`.

Also here: player and DM rolls outside a turn (`roll_make`), the GM's seed reveal
(`dice_seed_reveal`) and the GM's corrections (`gm_set_value`, `gm_revert_event`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonpatch
import jsonpointer
from django.conf import settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from rpgai import tracing
from rpgai.errors import Conflict, DomainError, NotFound, PermissionDenied

from . import selectors
from .dice import (
    FormulaError,
    dice_seed_current,
    dice_seed_mark_revealed,
    dice_seed_new,
    formula_parse,
    roll_compute,
)
from .events import (
    VISIBLE_TO_ALL,
    FoldedEvent,
    NewEvent,
    Visibility,
    copy_state,
    fold,
    fold_all,
    validate_payload,
)
from .models import Campaign, DiceSeed, Event
from .services import events_append, still_a_member
from .state_schema import (
    PatchRefused,
    entities_revealed,
    hidden_containers,
    patch_check,
    patch_is_secret,
    pointer_words,
    validation_problems,
)
from .tool_events import DC_MAX, DC_MIN, ENTITY_KINDS, EntityKind, roll_success
from .whispers import text_problem

TOOL_NAMES = ("roll", "apply_state_patch", "create_entity", "trigger_audio", "narrate_private")
ROLL_EVENT_TYPES = ("roll_requested", "roll_result")
GM_ONLY: Visibility = {"kind": "gm"}


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


@dataclass(frozen=True)
class ToolRejection:
    index: int
    name: str
    reason: str


@dataclass(frozen=True)
class TurnCommitResult:
    events: list[Event]
    rejections: list[ToolRejection]


class ToolRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Tool arguments (untrusted: strict types, unknown keys ignored) -------------------------


class _Args(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class RequestRollArgs(_Args):
    to: StrictStr = Field(max_length=40)
    formula: StrictStr = Field(max_length=200)
    reason: StrictStr = Field(default="", max_length=500)
    dc: StrictInt | None = Field(default=None, ge=DC_MIN, le=DC_MAX)


class RollArgs(_Args):
    formula: StrictStr
    reason: StrictStr = Field(default="", max_length=500)
    # A private result: only this member (and the GMs) see the roll (campaigns.whispers).
    private_to: StrictStr | None = Field(default=None, max_length=40)
    # The target, told with the result only (`roll_result.dc` and `success`).
    dc: StrictInt | None = Field(default=None, ge=DC_MIN, le=DC_MAX)


class EntityArgs(_Args):
    kind: EntityKind
    name: StrictStr = Field(min_length=1, max_length=80)
    data: dict[str, Any] = Field(default_factory=dict)
    # What the players have not discovered yet: GM-only until a patch reveals it.
    hidden: StrictBool = False


class NarratePrivateArgs(_Args):
    to: StrictStr = Field(max_length=40)
    text: StrictStr = Field(min_length=1, max_length=2000)


class AudioArgs(_Args):
    cue: StrictStr = Field(min_length=1, max_length=64)
    volume: float = Field(default=1.0, ge=0, le=1)


def _args_problem(exc: ValidationError) -> str:
    # Plain words from the error's type, never its input (campaigns.state_schema's rule:
    # a refusal lands in the public narration's tool_errors).
    return "bad arguments: " + validation_problems(exc, limit=3, sep=".")


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


# A create_entity named like a hidden entity: the words say neither that one exists nor
# which, and are the same whether it is still there or was removed in the same turn.
_HIDDEN_NAME_REFUSAL = (
    "this entity cannot be created; look at the state's entities "
    "and change one with apply_state_patch"
)


# --- The executor ----------------------------------------------------------------------------


@dataclass
class _Executor:
    """Builds a batch of tool events against a working copy of the locked state."""

    campaign_id: uuid.UUID | str
    state: dict[str, Any]
    actor_kind: str
    actor_user_id: uuid.UUID | None = None
    visibility: Visibility = field(default_factory=lambda: dict(VISIBLE_TO_ALL))  # type: ignore[assignment]
    # The DM turn these events belong to: every one of them carries it (CONTRACTS §7).
    turn_id: str | None = None
    events: list[NewEvent] = field(default_factory=list)
    # (kind, name key) of every entity hidden at some point of this batch, from its start:
    # a hidden entity the batch removed is still one whose name a public entity may not
    # take (the model read it from its GM-only prompt; a reveal is a patch).
    hidden_names: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._remember_hidden()

    def _remember_hidden(self) -> None:
        entities = self.state.get("entities") or {}
        for entity in entities.values() if isinstance(entities, dict) else ():
            if isinstance(entity, dict) and entity.get("hidden") is True:
                self.hidden_names.add((entity.get("kind", ""), _name_key(entity.get("name", ""))))

    def add(self, type_name: str, payload: dict[str, Any], *, system: bool = False) -> None:
        """Validate, fold into the working state (so later calls see it), and queue.
        A `system` event (a seed commitment) is the server's own and public to all."""
        if self.turn_id is not None and not system:
            payload = {**payload, "turn_id": self.turn_id}
        payload, _ = validate_payload(type_name, payload)
        new = NewEvent(
            type_name,
            payload,
            "system" if system else self.actor_kind,  # type: ignore[arg-type]
            None if system else self.actor_user_id,
            dict(VISIBLE_TO_ALL if system else self.visibility),  # type: ignore[arg-type]
        )
        user = str(new.actor_user_id) if new.actor_user_id else None
        fold(self.state, FoldedEvent(0, new.type, new.payload, new.actor_kind, user))
        self.events.append(new)
        self._remember_hidden()

    def seed(self) -> DiceSeed:
        """The committed secret seed; a campaign without one commits one now."""
        seed = dice_seed_current(campaign_id=self.campaign_id, state=self.state)
        if seed is None:
            seed, committed = dice_seed_new(campaign_id=self.campaign_id)
            self.add(committed.type, committed.payload, system=True)
        return seed

    def roll(
        self,
        *,
        formula: str,
        reason: str,
        requested_by: Literal["dm", "player"],
        dc: int | None = None,
        answers: str | None = None,
    ) -> str:
        """Queue `roll_requested` (never with the dc) and `roll_result` (with `dc` and
        `success`); returns the roll's id. With `answers` (the roll_id of a roll the DM
        asked a player for, whose `roll_requested` is logged already) only the result."""
        formula_parse(formula)  # refuse before a seed is touched
        seed = self.seed()
        roll_id = uuid.UUID(answers) if answers else uuid.uuid4()
        outcome = roll_compute(formula=formula, seed=seed.secret, roll_id=roll_id)
        if answers is None:
            self.add(
                "roll_requested",
                {
                    "roll_id": str(roll_id),
                    "formula": outcome.formula,
                    "reason": reason,
                    "requested_by": requested_by,
                },
            )
        self.add(
            "roll_result",
            {
                "roll_id": str(roll_id),
                "seed_id": str(seed.seed_id),
                "formula": outcome.formula,
                "total": outcome.total,
                "detail": outcome.detail,
                "dice": outcome.dice,
                "dc": dc,
                "success": roll_success(outcome.total, dc),
            },
        )
        return str(roll_id)

    # Each tool: raise ToolRefused to refuse (nothing queued), or queue its events.

    def member_id(self, value: str, field_name: str) -> str:
        """A member's user id as the state keys it, or ToolRefused."""
        try:
            user_id = str(uuid.UUID(value.strip()))
        except ValueError:
            user_id = ""
        if user_id not in (self.state.get("members") or {}):
            raise ToolRefused(f"{field_name} must be the user id of a member of the campaign")
        return user_id

    def tool_roll(self, args: dict[str, Any]) -> str:
        """The DM's roll; returns its roll id."""
        try:
            parsed = RollArgs.model_validate(args)
        except ValidationError as exc:
            raise ToolRefused(_args_problem(exc)) from None
        visibility = self.visibility
        if parsed.private_to is not None:
            private_to = self.member_id(parsed.private_to, "private_to")
            visibility = {"kind": "users", "user_ids": [private_to]}
        try:
            with self.seen_by(visibility):
                return self.roll(
                    formula=parsed.formula, reason=parsed.reason, requested_by="dm", dc=parsed.dc
                )
        except FormulaError as exc:
            raise ToolRefused(exc.detail) from None

    def tool_apply_state_patch(self, args: dict[str, Any]) -> str | None:
        """Always recorded: requested, then applied or rejected. Returns the refusal.
        A patch that touches hidden state is recorded for the GMs only (`patch_is_secret`);
        a reveal is public and carries the revealed entities whole (`revealed`)."""
        patch_id = str(uuid.uuid4())
        reason = args.get("reason", "")
        patches = args.get("patches")
        recordable = (
            isinstance(patches, list)
            and len(patches) <= 64
            and all(isinstance(op, dict) for op in patches)
        )
        requested = {
            "patch_id": patch_id,
            "reason": reason[:500] if isinstance(reason, str) else "",
            "patches": patches if recordable else [],
        }
        prelude = hidden_containers(self.state, patches)
        try:
            if not isinstance(reason, str):
                raise PatchRefused("reason must be a string")
            after = patch_check(self.state, patches, actor="dm", prelude=prelude)
        except PatchRefused as exc:
            # A refused patch changed nothing in the story: it is for the GMs (and the DM's
            # next prompt) alone, with the technical words that name the operation and
            # its pointer (CONTRACTS §7: what players receive never quotes game state).
            with self.seen_by(GM_ONLY):
                self.add("state_patch_requested", requested)
                self.add(
                    "state_patch_rejected",
                    {"patch_id": patch_id, "error": exc.detail[:2000], "plain": exc.plain[:500]},
                )
            return exc.detail
        secret = patch_is_secret(self.state, after, patches)
        revealed = [] if secret else entities_revealed(self.state, after)
        with self.seen_by(GM_ONLY if secret else self.visibility):
            self.add("state_patch_requested", requested)
            self.add(
                "state_patch_applied",
                {"patch_id": patch_id, "patches": [*prelude, *patches], "revealed": revealed},
            )
        return None

    @contextmanager
    def seen_by(self, visibility: Visibility) -> Iterator[None]:
        """Queue the events of the block with this visibility."""
        shared = self.visibility
        self.visibility = visibility
        try:
            yield
        finally:
            self.visibility = shared

    def tool_create_entity(self, args: dict[str, Any]) -> None:
        try:
            parsed = EntityArgs.model_validate(args)
        except ValidationError as exc:
            raise ToolRefused(_args_problem(exc)) from None
        name = " ".join(parsed.name.split())
        if not name:
            raise ToolRefused("an entity needs a name")
        # A second entity of the same kind and name is refused (not merged): the DM
        # learns the existing id and patches that one instead. The refusal is in the
        # public narration's tool_errors: a hidden one is neither named nor given away.
        for entity_id, entity in (self.state.get("entities") or {}).items():
            if entity.get("kind") == parsed.kind and _name_key(entity.get("name", "")) == _name_key(
                name
            ):
                if entity.get("hidden") is True:
                    # Not even "one exists": the players would learn of a hidden one.
                    raise ToolRefused(_HIDDEN_NAME_REFUSAL)
                # The id of a visible entity (the players' snapshot has it), not its
                # stored name: refusals never quote the state.
                raise ToolRefused(
                    f"a {parsed.kind} of that name already exists (id {entity_id}); "
                    "change it with apply_state_patch"
                )
        # Nor a public one named like an entity hidden earlier in this batch and removed
        # since: its public `entity_created` would carry the secret name. Same words.
        if not parsed.hidden and (parsed.kind, _name_key(name)) in self.hidden_names:
            raise ToolRefused(_HIDDEN_NAME_REFUSAL)
        try:
            json.dumps(parsed.data, allow_nan=False)
        except (TypeError, ValueError):
            raise ToolRefused("data must be a JSON object") from None
        entity = {"id": str(uuid.uuid4()), "kind": parsed.kind, "name": name, "data": parsed.data}
        if parsed.hidden:
            # Undiscovered: only the GMs see its creation; a patch reveals it later.
            entity["hidden"] = True
            with self.seen_by(GM_ONLY):
                self.add("entity_created", {"entity": entity})
            return
        self.add("entity_created", {"entity": entity})

    def tool_narrate_private(self, args: dict[str, Any]) -> None:
        """What only one player perceives: a `whisper` from the DM to that member, seen by
        them and the GMs only (campaigns.whispers). The turn's public narration stays the
        one `dm_narration`."""
        try:
            parsed = NarratePrivateArgs.model_validate(args)
        except ValidationError as exc:
            raise ToolRefused(_args_problem(exc)) from None
        to = self.member_id(parsed.to, "to")
        text = parsed.text.strip()
        if not text:
            raise ToolRefused("text must not be blank")
        problem = text_problem(text)
        if problem:
            raise ToolRefused(problem)
        with self.seen_by({"kind": "users", "user_ids": [to]}):
            self.add("whisper", {"to": to, "to_user_id": to, "text": text, "from_user_id": None})

    def tool_trigger_audio(self, args: dict[str, Any]) -> None:
        try:
            parsed = AudioArgs.model_validate(args)
        except ValidationError as exc:
            raise ToolRefused(_args_problem(exc)) from None
        cues: dict[str, str | None] = getattr(settings, "AUDIO_CUES", {})
        if parsed.cue not in cues:
            known = ", ".join(sorted(cues)) or "none"
            raise ToolRefused(f"unknown audio cue {parsed.cue!r}; the cues are: {known}")
        self.add("audio_cue", {"cue": parsed.cue, "volume": parsed.volume, "url": cues[parsed.cue]})

    def run(self, index: int, call: Any) -> ToolRejection | None:
        """Run one proposed call; a refusal is returned, never raised."""
        name = ""
        try:
            if not isinstance(call, dict):
                raise ToolRefused("a tool call is an object with a name and args")
            name = call.get("name") if isinstance(call.get("name"), str) else ""
            name = name[:64]
            if name not in TOOL_NAMES:
                raise ToolRefused(
                    f"unknown tool {repr(call.get('name'))[:80]}; "
                    f"the tools are {', '.join(TOOL_NAMES)}"
                )
            args = call.get("args", {})
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise ToolRefused("args must be an object")
            try:
                size = len(json.dumps(args, separators=(",", ":"), allow_nan=False))
            except (TypeError, ValueError):
                raise ToolRefused("args must be plain JSON") from None
            max_bytes = _setting("TOOL_ARGS_MAX_BYTES", 8192)
            if size > max_bytes:
                raise ToolRefused(f"args are {size} bytes; at most {max_bytes} are allowed")
            if name == "apply_state_patch":
                refused = self.tool_apply_state_patch(args)
                return ToolRejection(index, name, refused) if refused else None
            getattr(self, f"tool_{name}")(args)
        except ToolRefused as exc:
            return ToolRejection(index, name, exc.reason)
        return None


# --- DM turns --------------------------------------------------------------------------------


def turn_commit(
    *,
    campaign_id: uuid.UUID | str,
    turn_id: str,
    narration: str,
    options: list[str],
    tool_calls: list[dict[str, Any]],
    through_seq: int,
    fallback: bool = False,
    request_id: str = "",
    actor_kind: str = "dm",
    narration_extra: dict[str, Any] | None = None,
) -> TurnCommitResult:
    """Execute the tool calls and append their events followed by dm_narration (payload
    turn_id, text, options, fallback, through_seq, **narration_extra), all in ONE
    events_append call (one transaction: a crash leaves no half turn). Raises
    rpgai.errors.Conflict when the state's turn.answered_through_seq >= through_seq > 0
    (this turn was already answered: retries never duplicate). Each call is validated
    against the state as it will be after the previous calls of the same turn.

    `rejections` lists every refused call (refused patches too); the narration's
    `tool_errors` lists those that left no event of their own (not the patches, whose
    `state_patch_rejected` already says why). At most TOOL_CALLS_MAX_PER_TURN calls run.
    """
    rejections: list[ToolRejection] = []
    if tool_calls is None:
        calls: list[Any] = []
    else:
        calls = list(tool_calls) if isinstance(tool_calls, list | tuple) else [tool_calls]
    cap = _setting("TOOL_CALLS_MAX_PER_TURN", 16)

    def not_yet_answered(state: dict[str, Any]) -> None:
        answered = state.get("turn", {}).get("answered_through_seq", 0)
        if through_seq > 0 and answered >= through_seq:
            raise Conflict(f"the actions through seq {through_seq} were already answered")

    def build(state: dict[str, Any]) -> list[NewEvent]:
        rejections.clear()
        executor = _Executor(
            campaign_id=campaign_id, state=state, actor_kind=actor_kind, turn_id=str(turn_id)
        )
        for index, call in enumerate(calls[:cap]):
            rejection = executor.run(index, call)
            if rejection is not None:
                rejections.append(rejection)
        if len(calls) > cap:
            rejections.append(
                ToolRejection(
                    cap, "", f"only {cap} tool calls run per turn; {len(calls) - cap} were ignored"
                )
            )
        payload: dict[str, Any] = {
            "turn_id": str(turn_id),
            "text": narration,
            "options": options,
            "fallback": fallback,
            "through_seq": through_seq,
            **(narration_extra or {}),
        }
        errors = [
            {"index": r.index, "name": r.name, "reason": r.reason}
            for r in rejections
            if r.name != "apply_state_patch"
        ]
        if errors:
            payload["tool_errors"] = [*payload.get("tool_errors", []), *errors]
        executor.add("dm_narration", payload)
        return executor.events

    with tracing.span(
        "turn.commit",
        campaign_id=campaign_id,
        turn_id=turn_id,
        tool_calls=len(calls),
        fallback=fallback,
        actor_kind=actor_kind,
    ) as span:
        events = events_append(
            campaign_id=campaign_id,
            events=build,
            request_id=request_id,
            precondition=not_yet_answered,
        )
        # After the append: `build` may have run more than once (its last run counts).
        span.set_attribute("rpgai.tool_calls_rejected", len(rejections))
        span.set_attribute("rpgai.events", len(events))
        for rejection in rejections:
            tracing.event(
                "tool.rejected",
                tool_index=rejection.index,
                tool_name=rejection.name,
                reason=rejection.reason,
            )
    return TurnCommitResult(events=events, rejections=list(rejections))


# --- Rolls outside a turn --------------------------------------------------------------------


def roll_make(
    *,
    campaign_id: uuid.UUID | str,
    formula: str,
    reason: str,
    requested_by: Literal["dm", "player"],
    actor_kind: str,
    actor_user_id: uuid.UUID | None,
    request_id: str = "",
    visibility: dict[str, Any] | None = None,
    dc: int | None = None,
    private: bool = False,
    roll_id: uuid.UUID | str | None = None,
) -> list[Event]:
    """Roll with the server's dice: `roll_requested` + `roll_result` (FormulaError, a
    DomainError with code `invalid_formula`, for a formula that is refused). A player's
    or GM's roll (`actor_user_id` set) needs them still a member under the log's lock
    (PermissionDenied otherwise, nothing appended).

    `dc` (1..40) is the target, told in `roll_result` only (with `success`); `private`
    makes the roll visible to its roller and the GMs only.

    With `roll_id`, the player answers a check the DM asked them to roll (tool
    `request_roll`, CONTRACTS §7): the request's formula, reason, DC and turn are used
    (the given formula and dc are not), and only its `roll_result` is appended. NotFound
    for no such open request, PermissionDenied when it was asked of someone else,
    Conflict once it is rolled."""
    if roll_id is not None:
        return _roll_answer(
            campaign_id=campaign_id,
            roll_id=roll_id,
            actor_kind=actor_kind,
            actor_user_id=actor_user_id,
            request_id=request_id,
        )
    formula_parse(formula)  # fail fast, before taking the campaign's lock
    if not isinstance(reason, str) or len(reason) > 500:
        raise DomainError("reason must be text of at most 500 characters", code="invalid_reason")
    if requested_by not in ("dm", "player"):
        raise DomainError("requested_by is dm or player")
    if dc is not None and (
        not isinstance(dc, int) or isinstance(dc, bool) or not DC_MIN <= dc <= DC_MAX
    ):
        raise DomainError(f"the DC is a whole number from {DC_MIN} to {DC_MAX}", code="invalid_dc")
    if private:
        if actor_user_id is None:
            raise DomainError("a private roll needs the member who rolls it")
        visibility = {"kind": "users", "user_ids": [str(actor_user_id)]}

    def build(state: dict[str, Any]) -> list[NewEvent]:
        executor = _Executor(
            campaign_id=campaign_id,
            state=state,
            actor_kind=actor_kind,
            actor_user_id=actor_user_id,
            visibility=dict(visibility or VISIBLE_TO_ALL),  # type: ignore[arg-type]
        )
        executor.roll(formula=formula, reason=reason, requested_by=requested_by, dc=dc)
        return executor.events

    # A player's or GM's roll: still a member, checked under the log's lock (a member
    # removed a moment ago on another process, whose socket is still open, cannot roll).
    member_check = (
        still_a_member(campaign_id=campaign_id, user_id=actor_user_id)
        if actor_kind in ("player", "gm") and actor_user_id is not None
        else None
    )
    events = events_append(
        campaign_id=campaign_id, events=build, request_id=request_id, precondition=member_check
    )
    return [e for e in events if e.type in ROLL_EVENT_TYPES]


# --- Checks the DM asks a player to roll (tool `request_roll`) -------------------------------


def _roll_answer(
    *,
    campaign_id: uuid.UUID | str,
    roll_id: uuid.UUID | str,
    actor_kind: str,
    actor_user_id: uuid.UUID | None,
    request_id: str = "",
) -> list[Event]:
    """The roll a player was asked for, made now by the server's dice: by that player
    (`actor_user_id`), or by the server for them (`actor_kind` "system", no user)."""
    try:
        roll_id = str(uuid.UUID(str(roll_id)))
    except ValueError:
        raise NotFound("there is no such roll to make") from None
    request = selectors.roll_request_get(campaign_id=campaign_id, roll_id=roll_id)
    if request is None:
        raise NotFound("there is no such roll to make")
    if actor_user_id is not None and str(actor_user_id) != request.for_user_id:
        raise PermissionDenied("the DM asked another player for this roll")

    def build(state: dict[str, Any]) -> list[NewEvent]:
        # Under the log's lock: one answer per request, whoever comes first.
        if selectors.roll_result_exists(campaign_id=campaign_id, roll_id=roll_id):
            raise Conflict("this roll has been made already")
        executor = _Executor(
            campaign_id=campaign_id,
            state=state,
            actor_kind=actor_kind,
            actor_user_id=actor_user_id,
            turn_id=request.turn_id,
        )
        executor.roll(
            formula=request.formula,
            reason=request.reason,
            requested_by="dm",
            dc=request.dc,
            answers=roll_id,
        )
        return executor.events

    member_check = (
        still_a_member(campaign_id=campaign_id, user_id=actor_user_id)
        if actor_user_id is not None
        else None
    )
    events = events_append(
        campaign_id=campaign_id, events=build, request_id=request_id, precondition=member_check
    )
    return [e for e in events if e.type in ROLL_EVENT_TYPES]


def turn_rolls_request(
    *,
    campaign_id: uuid.UUID | str,
    turn_id: str,
    requests: list[dict[str, Any]],
    request_id: str = "",
) -> list[dict[str, Any]]:
    """Ask players to roll their own checks (the DM's `request_roll` calls: `to`,
    `formula`, `reason`, `dc`): each a public `roll_requested` {requested_by "dm",
    for_user_id} and, with a DC, a GM-only `roll_dc_held` (the table learns the DC with
    the result). One append. Returns per request, in order: `roll_id` (None when
    refused), `for_user_id`, `formula`, `reason`, and `error` (the refusal in plain
    words, or None)."""
    given = list(requests) if isinstance(requests, list | tuple) else [requests]
    out: list[dict[str, Any]] = []

    def build(state: dict[str, Any]) -> list[NewEvent]:
        out.clear()
        executor = _Executor(
            campaign_id=campaign_id, state=state, actor_kind="dm", turn_id=str(turn_id)
        )
        for args in given:
            entry: dict[str, Any] = {
                "roll_id": None,
                "for_user_id": None,
                "formula": "",
                "reason": "",
                "error": None,
            }
            try:
                parsed = RequestRollArgs.model_validate(args)
                entry.update(formula=parsed.formula, reason=parsed.reason)
                to = executor.member_id(parsed.to, "to")
                if (state.get("members") or {}).get(to, {}).get("role") != "player":
                    raise ToolRefused("to must be the user id of a player at the table")
                formula_parse(parsed.formula)
            except ValidationError as exc:
                entry["error"] = _args_problem(exc)
            except (ToolRefused, FormulaError) as exc:
                entry["error"] = exc.detail if isinstance(exc, FormulaError) else str(exc)
            if entry["error"] is None:
                roll_id = str(uuid.uuid4())
                executor.add(
                    "roll_requested",
                    {
                        "roll_id": roll_id,
                        "formula": parsed.formula,
                        "reason": parsed.reason,
                        "requested_by": "dm",
                        "for_user_id": to,
                    },
                )
                if parsed.dc is not None:
                    with executor.seen_by(dict(GM_ONLY)):  # type: ignore[arg-type]
                        executor.add("roll_dc_held", {"roll_id": roll_id, "dc": parsed.dc})
                entry.update(roll_id=roll_id, for_user_id=to)
            out.append(entry)
        return executor.events

    with tracing.span("turn.roll_requests", campaign_id=campaign_id, turn_id=turn_id):
        events_append(campaign_id=campaign_id, events=build, request_id=request_id)
    return list(out)


def roll_request_settle(
    *, campaign_id: uuid.UUID | str, roll_id: str, request_id: str = ""
) -> dict[str, Any] | None:
    """The result of a roll the DM asked a player for: theirs once they rolled; else the
    server rolls it for them now (their time is up). None for no such request."""
    answered = selectors.roll_answer(campaign_id=campaign_id, roll_id=roll_id)
    if answered is not None:
        return answered
    try:
        _roll_answer(
            campaign_id=campaign_id,
            roll_id=roll_id,
            actor_kind="system",
            actor_user_id=None,
            request_id=request_id,
        )
    except Conflict:
        pass  # they rolled a moment ago
    except NotFound:
        return None
    return selectors.roll_answer(campaign_id=campaign_id, roll_id=roll_id)


# --- A turn's rolls before its narration (two-step turns) ------------------------------------


def turn_rolls_commit(
    *,
    campaign_id: uuid.UUID | str,
    turn_id: str,
    rolls: list[dict[str, Any]],
    request_id: str = "",
) -> list[dict[str, Any]]:
    """Execute only the `roll` calls of a DM answer that asks to see its dice before it
    narrates (CONTRACTS §7 "Two-step turns"): each roll's `roll_requested` +
    `roll_result`, actor `dm`, carrying `turn_id`, in ONE `events_append`. `rolls` are the
    calls' args as the model gave them (`formula`, `reason`, `dc`, `private_to`),
    validated exactly as the `roll` tool in `turn_commit` (same executor).

    Returns one dict per roll, in the order given: `roll_id`, `seq` (of its
    `roll_result`), `formula`, `reason`, `total`, `detail`, `dc`, `success`,
    `private_to` (a member's user id or None), and `error`: None, or for a refused roll
    the reason in plain words (no event for it; the others still roll). The same shape as
    `selectors.turn_rolls_logged`, which reads them back for a redelivered turn."""
    given = list(rolls) if isinstance(rolls, list | tuple) else [rolls]
    cap = _setting("TOOL_CALLS_MAX_PER_TURN", 16)
    # index -> roll_id, or the refusal; rebuilt if the builder runs again.
    outcomes: dict[int, tuple[str | None, str | None]] = {}

    def build(state: dict[str, Any]) -> list[NewEvent]:
        outcomes.clear()
        executor = _Executor(
            campaign_id=campaign_id, state=state, actor_kind="dm", turn_id=str(turn_id)
        )
        for index, args in enumerate(given):
            if index >= cap:
                outcomes[index] = (None, f"only {cap} rolls run per turn; this one was ignored")
                continue
            rejection = executor.run(index, {"name": "roll", "args": args})
            if rejection is not None:
                outcomes[index] = (None, rejection.reason)
            else:
                outcomes[index] = (str(executor.events[-1].payload["roll_id"]), None)
        return executor.events

    with tracing.span("turn.rolls", campaign_id=campaign_id, turn_id=turn_id, rolls=len(given)):
        events = events_append(campaign_id=campaign_id, events=build, request_id=request_id)
    rolled = {r["roll_id"]: r for r in selectors.roll_summaries(events)}
    result = []
    for index, args in enumerate(given):
        roll_id, error = outcomes[index]
        if roll_id is not None:
            result.append(rolled[roll_id])
            continue
        args = args if isinstance(args, dict) else {}
        formula, reason = args.get("formula"), args.get("reason")
        result.append(
            {
                **selectors.ROLL_SUMMARY_EMPTY,
                "formula": formula[:200] if isinstance(formula, str) else "",
                "reason": reason[:500] if isinstance(reason, str) else "",
                "error": error,
            }
        )
    return result


# --- GM-only services ------------------------------------------------------------------------


def _require_gm(campaign_id: uuid.UUID | str, user: Any) -> None:
    if not Campaign.objects.filter(id=campaign_id).exists():
        raise NotFound("no such campaign")
    user_id = getattr(user, "id", None)
    membership = (
        selectors.membership_get(campaign_id=campaign_id, user_id=user_id) if user_id else None
    )
    if membership is None or not membership.is_gm:
        raise PermissionDenied("only a GM of this campaign may do that")


def dice_seed_reveal(
    *, campaign_id: uuid.UUID | str, by_user: Any, request_id: str = ""
) -> list[Event]:
    """Publish the current secret seed (`dice_seed_revealed`) and commit a new one
    (`dice_seed_committed`), in one transaction. Every roll made under the revealed
    seed can then be recomputed by anyone holding the log."""
    _require_gm(campaign_id, by_user)

    def build(state: dict[str, Any]) -> list[NewEvent]:
        current = dice_seed_current(campaign_id=campaign_id, state=state)
        if current is None:
            raise Conflict("this campaign has no secret dice seed to reveal")
        dice_seed_mark_revealed(current)
        _, committed = dice_seed_new(campaign_id=campaign_id)
        return [
            NewEvent(
                "dice_seed_revealed",
                {"seed_id": str(current.seed_id), "seed": current.secret},
                "gm",
                by_user.id,
            ),
            committed,
        ]

    return events_append(campaign_id=campaign_id, events=build, request_id=request_id)


def gm_patch_events(
    *,
    patches: list[dict[str, Any]],
    reason: str,
    by_user: Any,
    before: dict[str, Any],
    after: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> list[NewEvent]:
    """A GM patch's two events: GM-only when it touches hidden state, a reveal public
    with the revealed entities (as the DM's patches, `_Executor.tool_apply_state_patch`)."""
    patch_id = str(uuid.uuid4())
    extra = extra or {}
    secret = patch_is_secret(before, after, patches)
    visibility: Visibility = dict(GM_ONLY if secret else VISIBLE_TO_ALL)  # type: ignore[assignment]
    revealed = [] if secret else entities_revealed(before, after)
    return [
        NewEvent(
            "state_patch_requested",
            {"patch_id": patch_id, "reason": reason[:500], "patches": patches, **extra},
            "gm",
            by_user.id,
            dict(visibility),  # type: ignore[arg-type]
        ),
        NewEvent(
            "state_patch_applied",
            {"patch_id": patch_id, "patches": patches, **extra, "revealed": revealed},
            "gm",
            by_user.id,
            dict(visibility),  # type: ignore[arg-type]
        ),
    ]


_MISSING = object()


def _resolve(document: Any, path: str) -> Any:
    try:
        return jsonpointer.resolve_pointer(document, path, _MISSING)
    except jsonpointer.JsonPointerException:
        return _MISSING


def gm_set_value(
    *,
    campaign_id: uuid.UUID | str,
    by_user: Any,
    path: str,
    value: Any,
    reason: str = "",
    request_id: str = "",
) -> list[Event]:
    """A GM sets one value of the state, appended as a `gm` state patch (requested +
    applied). Same checks as the DM's patches with the GM's wider allow-list; a refused
    value raises PatchRefused (400) and appends nothing."""
    _require_gm(campaign_id, by_user)
    if not isinstance(path, str) or not path.startswith("/"):
        raise PatchRefused("path is a JSON pointer such as /characters/<id>/hp")
    if not isinstance(reason, str):
        raise PatchRefused("reason must be text")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise PatchRefused("value must be plain JSON (no NaN or infinity)") from None

    def build(state: dict[str, Any]) -> list[NewEvent]:
        op = "add" if _resolve(state, path) is _MISSING else "replace"
        patches = [{"op": op, "path": path, "value": value}]
        prelude = hidden_containers(state, patches)
        try:
            after = patch_check(state, patches, actor="gm", prelude=prelude)
        except PatchRefused as exc:
            # The GM reads this answer ("Not set: ..."): plain words, no pointer or id.
            raise PatchRefused(exc.plain, plain=exc.plain) from None
        return gm_patch_events(
            patches=[*prelude, *patches],
            # The reason is read by the table (a public patch): no pointer, no id.
            reason=reason or f"The GM set {pointer_words(path)}",
            by_user=by_user,
            before=state,
            after=after,
        )

    return events_append(campaign_id=campaign_id, events=build, request_id=request_id)


def _compare_path(after: dict[str, Any], path: str) -> str:
    """Where to check that nothing changed since: a list's changes are checked as a whole."""
    parent = path.rsplit("/", 1)[0]
    return parent if parent and isinstance(_resolve(after, parent), list) else path


def gm_revert_event(
    *, campaign_id: uuid.UUID | str, by_user: Any, seq: int, reason: str = "", request_id: str = ""
) -> list[Event]:
    """Undo what event `seq` did to the state with a compensating GM patch (the log stays
    immutable). The patch is the difference between the state right after that event
    and right before it; refused (Conflict, with the reason) when the event changed
    nothing, changed what no GM patch may touch (members, the turn, ...), was already
    reverted, or when a later event changed the same values since."""
    _require_gm(campaign_id, by_user)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise DomainError("seq is a positive integer")
    target = Event.objects.filter(campaign_id=campaign_id, seq=seq).first()
    if target is None:
        raise NotFound(f"no event #{seq} in this campaign")
    label = f"event #{seq} ({target.type})"
    earlier = Event.objects.filter(campaign_id=campaign_id, seq__lt=seq).order_by("seq")
    before = fold_all([selectors.folded(e) for e in earlier.iterator(chunk_size=2000)])
    after = copy_state(before)
    fold(after, selectors.folded(target))
    inverse = jsonpatch.make_patch(after, before).patch
    if not inverse:
        raise Conflict(f"{label} changed nothing in the state; there is nothing to revert")
    already = Event.objects.filter(
        campaign_id=campaign_id, type="state_patch_applied", payload__reverts_seq=seq
    ).first()
    if already is not None:
        raise Conflict(f"{label} was already reverted by event #{already.seq}")

    def build(state: dict[str, Any]) -> list[NewEvent]:
        for operation in inverse:
            for pointer in (operation["path"], operation.get("from")):
                if pointer is None:
                    continue
                where = _compare_path(after, pointer)
                if _resolve(state, where) != _resolve(after, where):
                    raise Conflict(
                        f"{label} cannot be reverted: {pointer_words(where)} changed since; "
                        "set it directly"
                    )
        try:
            patched = patch_check(state, inverse, actor="gm")
        except PatchRefused as exc:
            raise Conflict(f"{label} cannot be reverted: {exc.plain}") from None
        return gm_patch_events(
            patches=inverse,
            reason=reason or f"The GM undid event #{seq}",
            by_user=by_user,
            before=state,
            after=patched,
            extra={"reverts_seq": seq},
        )

    return events_append(campaign_id=campaign_id, events=build, request_id=request_id)


__all__ = [
    "ENTITY_KINDS",
    "TOOL_NAMES",
    "ToolRejection",
    "TurnCommitResult",
    "dice_seed_reveal",
    "gm_revert_event",
    "gm_set_value",
    "roll_make",
    "roll_request_settle",
    "turn_commit",
    "turn_rolls_commit",
    "turn_rolls_request",
]
