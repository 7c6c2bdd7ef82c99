"""Server dice: d20 formulas with limits, deterministic dice from (seed, roll_id), rolls in
the log with the committed seed, and a secret that never leaves the server."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import selectors, services
from campaigns.dice import FormulaError, HmacDiceStream, roll_compute, seed_hash_of
from campaigns.models import DiceSeed, Event, Snapshot
from campaigns.tools import roll_make

SEED = bytes(range(32))


def roll(formula: str, roll_id: uuid.UUID | None = None):
    return roll_compute(formula=formula, seed=SEED, roll_id=roll_id or uuid.uuid4())


# --- Formulas (no database) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "low", "high"),
    [
        ("1d20+5", 6, 25),
        ("2d20kh1", 1, 20),
        ("2d20kl1", 1, 20),
        ("4d6kh3", 3, 18),
        ("(1d8+2)*2", 6, 20),
        ("1d4rr1", 2, 4),
        ("3d6ro<2", 3, 18),
        ("1d20mi10", 10, 20),
        ("8d6pl2", 6, 36),
        ("d%", 0, 90),
        ("10 - 1d4", 6, 9),
    ],
)
def test_contract_formulas_roll_within_their_bounds(formula, low, high):
    for _ in range(30):
        outcome = roll(formula)
        assert low <= outcome.total <= high
        assert outcome.detail.endswith(f"= {outcome.total}")
        assert all(set(d) == {"sides", "value", "kept"} for d in outcome.dice)


def test_detail_is_d20s_readable_text_and_dice_carry_each_face():
    outcome = roll("1d20+5")
    [die] = outcome.dice
    assert outcome.detail == f"1d20 ({die['value']}) + 5 = {die['value'] + 5}"
    assert die["sides"] == 20 and die["kept"] is True


def test_exploding_dice_keep_rolling_on_the_maximum():
    # 1d2e2 explodes on every 2: the faces are some 2s then a 1.
    for _ in range(20):
        faces = [d["value"] for d in roll("1d2e2").dice]
        assert faces[-1] == 1 and all(v == 2 for v in faces[:-1])


def test_same_seed_and_roll_id_give_the_same_roll_and_another_id_another_stream():
    roll_id = uuid.uuid4()
    first, again = roll("20d20", roll_id), roll("20d20", roll_id)
    assert first == again
    others = {tuple(d["value"] for d in roll("20d20").dice) for _ in range(5)}
    assert len(others) == 5
    other_seed = roll_compute(formula="20d20", seed=bytes(32), roll_id=roll_id)
    assert other_seed.dice != first.dice


def test_stream_is_uniform_enough_and_in_range():
    stream = HmacDiceStream(SEED, uuid.uuid4())
    counts = [0] * 6
    for _ in range(6000):
        counts[stream.randrange(6)] += 1
    assert all(850 < c < 1150 for c in counts), counts


def test_concurrent_rolls_do_not_share_dice_state():
    roll_ids = [uuid.uuid4() for _ in range(40)]
    expected = {rid: roll("10d20+3", rid) for rid in roll_ids}
    seen: dict[uuid.UUID, object] = {}

    def worker(ids: list[uuid.UUID]) -> None:
        for _ in range(5):
            for rid in ids:
                seen[rid] = roll("10d20+3", rid)
                assert seen[rid] == expected[rid]

    threads = [threading.Thread(target=worker, args=(roll_ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == expected


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 12),
    sides=st.sampled_from([2, 3, 4, 6, 8, 10, 12, 20, 100]),
    keep=st.integers(1, 12),
    modifier=st.integers(-50, 50),
    roll_id=st.uuids(),
)
def test_random_formulas_stay_in_bounds_and_keep_highest_keeps_the_highest(
    count, sides, keep, modifier, roll_id
):
    keep = min(keep, count)
    formula = f"{count}d{sides}kh{keep}{modifier:+d}"
    outcome = roll_compute(formula=formula, seed=SEED, roll_id=roll_id)
    assert keep + modifier <= outcome.total <= keep * sides + modifier
    values = [d["value"] for d in outcome.dice]
    kept = [d["value"] for d in outcome.dice if d["kept"]]
    assert len(values) == count and len(kept) == keep
    assert sorted(kept, reverse=True) == sorted(values, reverse=True)[:keep]
    assert outcome.total == sum(kept) + modifier


@settings(max_examples=100, deadline=None)
@given(
    formula=st.one_of(
        st.integers(101, 10**9).map(lambda n: f"{n}d6"),
        st.integers(11, 1000).map(lambda n: "(" * n + "1" + ")" * n),
        st.integers(1001, 10**12).map(lambda n: f"1d{n}"),
        st.integers(10**6, 10**40).map(lambda n: f"{n}+1d6"),
        st.text(min_size=101, max_size=5000),
        st.sampled_from(["1d6rr<7", "1d1e1", "50d6+50d6+1d6", "1d0", "", "   ", "1d6/0"]),
    )
)
def test_absurd_formulas_are_refused_quickly(formula):
    started = time.perf_counter()
    with pytest.raises(FormulaError) as caught:
        roll(formula)
    assert time.perf_counter() - started < 0.05
    assert caught.value.code == "invalid_formula" and caught.value.detail


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formula=st.text(max_size=60))
def test_any_text_rolls_or_is_refused_with_a_clear_error(formula):
    try:
        outcome = roll(formula)
    except FormulaError as exc:
        assert exc.detail
    else:
        assert isinstance(outcome.total, int)


# --- Rolls in the log ------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytestmark_db
def test_campaign_commits_to_a_seed_right_after_it_is_created(campaign):
    first, second = selectors.events_after(campaign_id=campaign.id, limit=2)
    assert (first.type, second.type) == ("campaign_created", "dice_seed_committed")
    seed = DiceSeed.objects.get(campaign=campaign)
    assert second.payload == {"seed_id": str(seed.seed_id), "seed_hash": seed.seed_hash}
    assert seed.seed_hash == hashlib.sha256(bytes.fromhex(seed.secret)).hexdigest()
    assert seed.revealed_at is None


@pytestmark_db
def test_roll_make_appends_request_and_result_made_with_the_committed_seed(
    campaign, join, make_user
):
    alice = make_user("alice")
    join(alice)
    requested, result = roll_make(
        campaign_id=campaign.id,
        formula="2d20kh1+3",
        reason="Stealth",
        requested_by="player",
        actor_kind="player",
        actor_user_id=alice.id,
    )
    assert (requested.type, result.type) == ("roll_requested", "roll_result")
    assert result.seq == requested.seq + 1
    assert requested.payload["requested_by"] == "player" and requested.actor_user_id == alice.id
    assert requested.payload["roll_id"] == result.payload["roll_id"]
    seed = DiceSeed.objects.get(campaign=campaign)
    assert result.payload["seed_id"] == str(seed.seed_id)
    again = roll_compute(formula="2d20kh1+3", seed=seed.secret, roll_id=result.payload["roll_id"])
    assert result.payload["total"] == again.total and result.payload["detail"] == again.detail
    assert result.payload["dice"] == again.dice
    assert isinstance(result.payload["total"], int)


@pytestmark_db
def test_refused_formula_appends_nothing(campaign):
    version = Snapshot.objects.get(campaign=campaign).version
    for formula in ("10000d6", "1d6 then dance", "(" * 50 + "1" + ")" * 50, 42):
        with pytest.raises(FormulaError):
            roll_make(
                campaign_id=campaign.id,
                formula=formula,
                reason="",
                requested_by="dm",
                actor_kind="dm",
                actor_user_id=None,
            )
    assert Snapshot.objects.get(campaign=campaign).version == version


@pytestmark_db
def test_the_secret_never_reaches_the_log_or_the_snapshot(campaign):
    for _ in range(3):
        roll_make(
            campaign_id=campaign.id,
            formula="1d20",
            reason="",
            requested_by="dm",
            actor_kind="dm",
            actor_user_id=None,
        )
    secret = DiceSeed.objects.get(campaign=campaign).secret
    log = "".join(services.campaign_export(campaign_id=campaign.id))
    assert secret not in log
    assert secret not in json.dumps(Snapshot.objects.get(campaign=campaign).state)
    assert secret not in repr(DiceSeed.objects.get(campaign=campaign))
    assert secret not in str(DiceSeed.objects.get(campaign=campaign))


@pytestmark_db
def test_an_imported_copy_commits_a_secret_of_its_own(campaign, gm):
    roll_make(
        campaign_id=campaign.id,
        formula="1d20",
        reason="",
        requested_by="dm",
        actor_kind="dm",
        actor_user_id=None,
    )
    original_seed = DiceSeed.objects.get(campaign=campaign)
    copy = services.campaign_import(
        lines=services.campaign_export(campaign_id=campaign.id), owner=gm
    )
    [copy_seed] = DiceSeed.objects.filter(campaign=copy)
    assert copy_seed.secret != original_seed.secret
    last = Event.objects.filter(campaign=copy).order_by("-seq").first()
    assert last.type == "dice_seed_committed"
    assert last.payload["seed_id"] == str(copy_seed.seed_id)
    assert last.payload["seed_hash"] == seed_hash_of(copy_seed.secret)
    _, result = roll_make(
        campaign_id=copy.id,
        formula="1d20",
        reason="",
        requested_by="dm",
        actor_kind="dm",
        actor_user_id=None,
    )
    assert result.payload["seed_id"] == str(copy_seed.seed_id)


@pytestmark_db
def test_a_campaign_without_a_committed_seed_commits_one_before_its_first_roll(campaign):
    # A revealed seed leaves nothing to roll with until a new one is committed.
    seed = DiceSeed.objects.get(campaign=campaign)
    services.events_append(
        campaign_id=campaign.id,
        events=[
            services.NewEvent(
                "dice_seed_revealed", {"seed_id": str(seed.seed_id), "seed": seed.secret}
            )
        ],
    )
    assert "dice" not in Snapshot.objects.get(campaign=campaign).state
    events = services.events_append(
        campaign_id=campaign.id,
        events=lambda state: [],
    )
    assert events == []
    requested, result = roll_make(
        campaign_id=campaign.id,
        formula="1d6",
        reason="a secret GM roll",
        requested_by="dm",
        actor_kind="gm",
        actor_user_id=campaign.created_by_id,
        visibility={"kind": "gm"},
    )
    assert requested.visibility == result.visibility == {"kind": "gm"}
    committed = Event.objects.get(campaign=campaign, seq=requested.seq - 1)
    assert committed.type == "dice_seed_committed"
    # The commitment is public even when the roll that needed it is not.
    assert committed.visibility == {"kind": "all"} and committed.actor_kind == "system"
    assert result.payload["seed_id"] == committed.payload["seed_id"] != str(seed.seed_id)
