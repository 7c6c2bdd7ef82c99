"""Server dice that players can verify.

A campaign commits to a secret seed by publishing its SHA-256 (`dice_seed_committed`).
Every die of a roll comes from a stream keyed by HMAC-SHA256(seed, roll_id), so once
the GM reveals the seed (`dice_seed_revealed`) anyone holding the log can recompute
every roll made under it, die by die. The algorithm, exactly (also shown on the page):

    key      = HMAC-SHA256(key=seed bytes, msg=roll_id as its lowercase UUID text)
    block[i] = HMAC-SHA256(key=key, msg=i as 8 bytes big-endian), i = 0, 1, 2, ...
    stream   = block[0] || block[1] || ...
    draw(n)  = next 8 bytes of the stream as a big-endian integer x; if
               x >= 2**64 - 2**64 % n, draw again (no modulo bias); else x % n
    a die of s sides = draw(s) + 1; a percentile die (d%) = 10 * draw(10)

Dice are drawn in the order the d20 library rolls them: left to right, rerolls and
explosions as they happen. Formulas are parsed by d20's own grammar, with limits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import d20
from d20 import diceast
from django.conf import settings
from django.utils import timezone

from rpgai.errors import DomainError

from .events import NewEvent
from .models import DiceSeed, Event
from .selectors import SYSTEM_VIEWER, Viewer, event_visible

STREAM_WORD_BYTES = 8
_WORD_SPACE = 1 << (8 * STREAM_WORD_BYTES)


class FormulaError(DomainError):
    code = "invalid_formula"


def _limit(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


# --- The deterministic dice stream -----------------------------------------------------------


class HmacDiceStream:
    """Uniform integers from HMAC-SHA256(seed, roll_id) in counter mode (see module doc)."""

    def __init__(self, seed: bytes, roll_id: uuid.UUID | str) -> None:
        roll_text = str(uuid.UUID(str(roll_id)))
        self._key = hmac.new(seed, roll_text.encode("ascii"), hashlib.sha256).digest()
        self._counter = 0
        self._buffer = b""

    def _word(self) -> int:
        if len(self._buffer) < STREAM_WORD_BYTES:
            block = hmac.new(self._key, self._counter.to_bytes(8, "big"), hashlib.sha256).digest()
            self._counter += 1
            self._buffer += block
        word, self._buffer = self._buffer[:STREAM_WORD_BYTES], self._buffer[STREAM_WORD_BYTES:]
        return int.from_bytes(word, "big")

    def randrange(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        if n < 1:
            raise FormulaError("a die needs at least one side")
        limit = _WORD_SPACE - _WORD_SPACE % n
        while True:
            x = self._word()
            if x < limit:
                return x % n


# --- d20, rolling from our stream ------------------------------------------------------------
# d20's Die draws from the module-level `random`; these subclasses draw from the roll's own
# stream (carried by its RollContext) instead, so concurrent rolls never share state.


class _SeededContext(d20.RollContext):
    def __init__(self, stream: HmacDiceStream, max_rolls: int) -> None:
        super().__init__(max_rolls=max_rolls)
        self.stream = stream


class _SeededDie(d20.Die):
    __slots__ = ()

    @classmethod
    def new(cls, size: Any, context: Any = None) -> _SeededDie:
        inst = cls(size, [], context=context)
        inst._add_roll()
        return inst

    def _add_roll(self) -> None:
        if self.size != "%" and self.size < 1:
            raise d20.RollValueError("Cannot roll a 0-sided die.")
        self._context.count_roll()
        stream: HmacDiceStream = self._context.stream
        value = 10 * stream.randrange(10) if self.size == "%" else stream.randrange(self.size) + 1
        self.values.append(d20.Literal(value))


class _SeededDice(d20.Dice):
    __slots__ = ()

    @classmethod
    def new(cls, num: int, size: Any, context: Any = None) -> _SeededDice:
        return cls(
            num, size, [_SeededDie.new(size, context=context) for _ in range(num)], context=context
        )

    def roll_another(self) -> None:
        self.values.append(_SeededDie.new(self.size, context=self._context))


class _SeededRoller(d20.Roller):
    def _eval_dice(self, node: diceast.Dice) -> _SeededDice:
        return _SeededDice.new(node.num, node.size, context=self.context)


class _DetailStringifier(d20.SimpleStringifier):
    """d20's plain text, with dropped values struck through as `~~1~~`."""

    def __init__(self) -> None:
        super().__init__()
        self._nodes = {**self._nodes, _SeededDice: self._str_dice, _SeededDie: self._str_die}

    def _stringify(self, node: Any) -> str:
        inside = super()._stringify(node)
        return inside if node.kept else f"~~{inside}~~"


# --- Parsing with limits ---------------------------------------------------------------------


def _max_paren_depth(formula: str) -> int:
    depth = deepest = 0
    for char in formula:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _check_tree(node: Any, depth: int = 0) -> int:
    """Refuse trees past the limits; return the number of dice the formula names."""
    if depth > 4 * _limit("DICE_MAX_NESTING", 10) + 8:
        raise FormulaError("the formula is nested too deeply")
    count = 0
    if isinstance(node, diceast.Dice):
        sides_limit = _limit("DICE_MAX_SIDES", 1000)
        if node.size != "%" and not 1 <= node.size <= sides_limit:
            raise FormulaError(f"a die has 1 to {sides_limit} sides, not {node.size}")
        count += node.num
    elif isinstance(node, diceast.Literal):
        literal_limit = _limit("DICE_MAX_LITERAL", 100_000)
        if abs(node.value) > literal_limit:
            raise FormulaError(f"numbers in a formula are at most {literal_limit}")
    for child in node.children:
        count += _check_tree(child, depth + 1)
    return count


def formula_parse(formula: Any) -> diceast.Expression:
    """d20's syntax tree of a formula, or FormulaError saying why it is refused.

    Cheap checks run before the parser: the length and the parenthesis depth cap the
    work, then the tree is checked for the number of dice, their sides and literals.
    """
    if not isinstance(formula, str):
        raise FormulaError("the formula must be a string such as 1d20+5")
    formula = formula.strip()
    max_chars = _limit("DICE_MAX_FORMULA_CHARS", 100)
    if not formula:
        raise FormulaError("the formula is empty; try 1d20+5")
    if len(formula) > max_chars:
        raise FormulaError(f"the formula is longer than {max_chars} characters")
    max_nesting = _limit("DICE_MAX_NESTING", 10)
    if _max_paren_depth(formula) > max_nesting:
        raise FormulaError(f"the formula nests parentheses more than {max_nesting} deep")
    try:
        tree = _SeededRoller().parse(formula)
    except d20.RollSyntaxError as exc:
        got = str(exc.got) if exc.got is not None else "the end"
        raise FormulaError(
            f"cannot read the formula at column {exc.col} (near {got!r}); "
            "use dice notation such as 1d20+5, 2d20kh1, 4d6kh3 or (1d8+2)*2"
        ) from None
    except (d20.RollError, ValueError, RecursionError) as exc:
        raise FormulaError(f"cannot read the formula: {exc}") from None
    max_dice = _limit("DICE_MAX_DICE", 100)
    dice = _check_tree(tree)
    if dice > max_dice:
        raise FormulaError(f"the formula rolls {dice} dice; at most {max_dice} are allowed")
    return tree


# --- Rolling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollOutcome:
    formula: str
    total: int
    detail: str
    dice: list[dict[str, Any]] = field(default_factory=list)


def _faces(node: Any, kept: bool, out: list[dict[str, Any]]) -> None:
    kept = kept and node.kept
    if isinstance(node, d20.Dice):
        for die in node.values:
            for value in die.values:
                out.append(
                    {
                        "sides": die.size,
                        "value": int(value.number),
                        "kept": kept and die.kept and value.kept,
                    }
                )
        return
    for child in node.children:
        _faces(child, kept, out)


def roll_compute(*, formula: str, seed: bytes | str, roll_id: uuid.UUID | str) -> RollOutcome:
    """Roll `formula` with the dice of (seed, roll_id): the same inputs, the same roll."""
    tree = formula_parse(formula)
    seed_bytes = bytes.fromhex(seed) if isinstance(seed, str) else seed
    context = _SeededContext(HmacDiceStream(seed_bytes, roll_id), _limit("DICE_MAX_DICE", 100))
    roller = _SeededRoller(context=context)
    try:
        result = roller.roll(tree, stringifier=_DetailStringifier())
        total, detail = result.total, result.result
    except d20.TooManyRolls:
        raise FormulaError(
            f"the formula would roll more than {context.max_rolls} dice "
            "(rerolls and explosions count)"
        ) from None
    except (d20.RollError, ZeroDivisionError, OverflowError, ValueError) as exc:
        raise FormulaError(f"cannot roll the formula: {exc}") from None
    max_total = _limit("DICE_MAX_TOTAL", 10**9)
    if abs(total) > max_total:
        raise FormulaError(f"the result is beyond ±{max_total}")
    faces: list[dict[str, Any]] = []
    _faces(result.expr, True, faces)
    return RollOutcome(formula=formula.strip(), total=total, detail=detail, dice=faces)


# --- Seeds -----------------------------------------------------------------------------------


def seed_hash_of(seed: bytes | str) -> str:
    """The published commitment: hex SHA-256 of the seed's raw bytes."""
    return hashlib.sha256(bytes.fromhex(seed) if isinstance(seed, str) else seed).hexdigest()


def dice_seed_new(*, campaign_id: uuid.UUID | str) -> tuple[DiceSeed, NewEvent]:
    """A fresh secret seed row and its `dice_seed_committed` event (append it in the same
    transaction). The secret never leaves the server until it is revealed."""
    secret = secrets.token_bytes(32)
    seed = DiceSeed.objects.create(
        seed_id=uuid.uuid4(),
        campaign_id=campaign_id,
        secret=secret.hex(),
        seed_hash=seed_hash_of(secret),
    )
    event = NewEvent(
        "dice_seed_committed",
        {"seed_id": str(seed.seed_id), "seed_hash": seed.seed_hash},
        "system",
    )
    return seed, event


def dice_seed_current(*, campaign_id: uuid.UUID | str, state: dict[str, Any]) -> DiceSeed | None:
    """The unrevealed seed of this campaign that the state says is committed, if any."""
    committed = state.get("dice") or {}
    seed_id = committed.get("seed_id")
    if not seed_id:
        return None
    return DiceSeed.objects.filter(
        campaign_id=campaign_id, seed_id=seed_id, revealed_at__isnull=True
    ).first()


def dice_seed_mark_revealed(seed: DiceSeed) -> None:
    seed.revealed_at = timezone.now()
    seed.save(update_fields=["revealed_at"])


# --- Verification ----------------------------------------------------------------------------


@dataclass
class RollCheck:
    seq: int
    roll_id: str
    formula: str
    stored_total: Any
    stored_detail: str
    computed_total: int | None = None
    computed_detail: str = ""
    ok: bool | None = None  # None: its seed is not revealed yet
    problem: str = ""


@dataclass
class SeedCheck:
    seed_id: str
    seed_hash: str
    committed_seq: int | None
    seed: str | None = None  # hex, once revealed
    revealed_seq: int | None = None
    hash_ok: bool | None = None
    rolls: list[RollCheck] = field(default_factory=list)

    @property
    def revealed(self) -> bool:
        return self.seed is not None

    @property
    def mismatches(self) -> int:
        return sum(1 for r in self.rolls if r.ok is False) + (1 if self.hash_ok is False else 0)


@dataclass
class DiceReport:
    seeds: list[SeedCheck]
    seconds: float

    @property
    def checked(self) -> int:
        return sum(1 for s in self.seeds for r in s.rolls if r.ok is not None)

    @property
    def mismatches(self) -> int:
        return sum(s.mismatches for s in self.seeds)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


def _check_roll(check: RollCheck, seed_hex: str, stored: dict[str, Any]) -> None:
    try:
        outcome = roll_compute(formula=check.formula, seed=seed_hex, roll_id=check.roll_id)
    except (FormulaError, ValueError) as exc:
        check.ok, check.problem = False, f"cannot be recomputed: {exc}"
        return
    check.computed_total, check.computed_detail = outcome.total, outcome.detail
    problems = []
    if stored.get("total") != outcome.total:
        problems.append(f"total {stored.get('total')!r} in the log, {outcome.total} recomputed")
    if stored.get("detail") != outcome.detail:
        problems.append(
            f"detail {stored.get('detail')!r} in the log, {outcome.detail!r} recomputed"
        )
    if "dice" in stored and stored.get("dice") != outcome.dice:
        problems.append("the dice in the log differ from the recomputed dice")
    check.ok = not problems
    check.problem = "; ".join(problems)


def dice_verify(*, campaign_id: uuid.UUID | str, viewer: Viewer = SYSTEM_VIEWER) -> DiceReport:
    """Recompute every roll of every revealed seed from the log alone (the revealed seed
    in `dice_seed_revealed`, its commitment in `dice_seed_committed`), as anyone holding
    an export could. Rolls the viewer may not see are left out."""
    started = time.monotonic()
    seeds: dict[str, SeedCheck] = {}
    rolls: list[tuple[str, RollCheck, dict[str, Any]]] = []
    events = (
        Event.objects.filter(
            campaign_id=campaign_id,
            type__in=("dice_seed_committed", "dice_seed_revealed", "roll_result"),
        )
        .order_by("seq")
        .only("seq", "type", "payload", "visibility")
    )
    for event in events.iterator(chunk_size=2000):
        p = event.payload
        seed_id = str(p.get("seed_id", ""))
        if event.type == "dice_seed_committed":
            seeds.setdefault(seed_id, SeedCheck(seed_id, str(p.get("seed_hash", "")), event.seq))
        elif event.type == "dice_seed_revealed":
            check = seeds.setdefault(seed_id, SeedCheck(seed_id, "", None))
            check.seed, check.revealed_seq = str(p.get("seed", "")), event.seq
            try:
                check.hash_ok = hmac.compare_digest(seed_hash_of(check.seed), check.seed_hash)
            except ValueError:
                check.hash_ok = False
        elif event_visible(event.visibility, viewer):
            roll = RollCheck(
                seq=event.seq,
                roll_id=str(p.get("roll_id", "")),
                formula=str(p.get("formula", "")),
                stored_total=p.get("total"),
                stored_detail=str(p.get("detail", "")),
            )
            seeds.setdefault(seed_id, SeedCheck(seed_id, "", None)).rolls.append(roll)
            rolls.append((seed_id, roll, p))
    for seed_id, roll, payload in rolls:
        seed = seeds[seed_id]
        if seed.seed is None:
            continue
        if seed.revealed_seq is not None and roll.seq > seed.revealed_seq:
            roll.ok, roll.problem = False, "rolled with a seed that was already public"
            continue
        _check_roll(roll, seed.seed, payload)
    return DiceReport(seeds=list(seeds.values()), seconds=time.monotonic() - started)
