"""apply_state_patch: RFC 6902 on a copy, an allow-list, bounds, the state schema; a
rejected patch is recorded and leaves the state untouched; the fold replays patches."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns import services
from campaigns.events import initial_state
from campaigns.models import Event, Snapshot
from campaigns.state_schema import PatchRefused, patch_check, state_validate
from campaigns.tools import turn_commit

pytestmark = pytest.mark.django_db


def state_of(campaign) -> dict[str, Any]:
    return Snapshot.objects.get(campaign=campaign).state


@pytest.fixture
def hero(campaign, join, make_user) -> str:
    alice = make_user("alice")
    join(alice, "Alice")
    [cid] = [
        cid
        for cid, c in state_of(campaign)["characters"].items()
        if c["owner_user_id"] == str(alice.id)
    ]
    return cid


def patch_turn(campaign, *patch_lists: list[dict[str, Any]]):
    return turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="The goblin strikes.",
        options=["Fight", "Flee"],
        tool_calls=[
            {"name": "apply_state_patch", "args": {"reason": "combat", "patches": patches}}
            for patches in patch_lists
        ],
        through_seq=0,
    )


def test_dm_patch_changes_hp_conditions_inventory_scene_flags(campaign, hero):
    result = patch_turn(
        campaign,
        [
            {"op": "replace", "path": f"/characters/{hero}/hp", "value": 4},
            {"op": "add", "path": f"/characters/{hero}/conditions/-", "value": "poisoned"},
            {"op": "add", "path": f"/characters/{hero}/inventory/-", "value": "rusty key"},
            {"op": "replace", "path": "/scene/location", "value": "The crypt"},
            {"op": "add", "path": "/flags/crypt_open", "value": True},
        ],
    )
    assert [e.type for e in result.events] == [
        "state_patch_requested",
        "state_patch_applied",
        "dm_narration",
    ]
    assert result.rejections == []
    requested, applied, _ = result.events
    assert requested.payload["patch_id"] == applied.payload["patch_id"]
    assert requested.payload["reason"] == "combat"
    state = state_of(campaign)
    character = state["characters"][hero]
    assert character["hp"] == 4
    assert character["conditions"] == ["poisoned"]
    assert character["inventory"] == ["rusty key"]
    assert state["scene"]["location"] == "The crypt"
    assert state["flags"] == {"crypt_open": True}
    # The reducer re-applies the stored patch: a fresh fold gives the same state.
    assert services.snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


@pytest.mark.parametrize(
    ("make_patch", "reason"),
    [
        (lambda h: [{"op": "replace", "path": f"/characters/{h}/hp", "value": 11}], "above max_hp"),
        (lambda h: [{"op": "replace", "path": f"/characters/{h}/hp", "value": -1}], "hp"),
        (lambda h: [{"op": "replace", "path": f"/characters/{h}/hp", "value": "9"}], "integer"),
        (
            lambda h: [{"op": "replace", "path": f"/characters/{h}/owner_user_id", "value": None}],
            "not allowed",
        ),
        (
            lambda h: [{"op": "replace", "path": f"/characters/{h}/max_hp", "value": 99}],
            "not allowed",
        ),
        (lambda h: [{"op": "remove", "path": f"/characters/{h}"}], "not allowed"),
        (
            lambda h: [{"op": "add", "path": f"/characters/{uuid.uuid4()}", "value": {}}],
            "not allowed",
        ),
        (lambda h: [{"op": "add", "path": "/members/x", "value": {}}], "not allowed"),
        (
            lambda h: [{"op": "replace", "path": "/turn/answered_through_seq", "value": 99}],
            "not allowed",
        ),
        (lambda h: [{"op": "replace", "path": "/campaign/name", "value": "Mine"}], "not allowed"),
        (lambda h: [{"op": "remove", "path": "/dice"}], "not allowed"),
        (lambda h: [{"op": "add", "path": "/budget", "value": 1000}], "not allowed"),
        (lambda h: [{"op": "replace", "path": "", "value": {}}], "not allowed"),
        (lambda h: [{"op": "copy", "from": "/members", "path": "/flags/leak"}], "not allowed"),
        (lambda h: [{"op": "remove", "path": "/scene/location"}], "scene/location"),
        (lambda h: [{"op": "replace", "path": "/flags/nope", "value": 1}], "does not apply"),
        (lambda h: [{"op": "replace", "path": "no-slash", "value": 1}], "JSON pointer"),
        (lambda h: [{"op": "explode", "path": "/flags/x"}], "operation 0"),
        (lambda h: [{"op": "add", "path": "/flags/x"}], "no value"),
        (lambda h: [], "non-empty list"),
        (lambda h: "hp=0", "non-empty list"),
        (lambda h: [["op", "add"]], "not an object"),
        (
            lambda h: [{"op": "add", "path": f"/flags/f{i}", "value": i} for i in range(40)],
            "at most",
        ),
    ],
)
def test_refused_patch_is_recorded_and_leaves_the_state_untouched(
    campaign, hero, make_patch, reason
):
    before = copy.deepcopy(state_of(campaign))
    patches = make_patch(hero)
    result = patch_turn(campaign, patches)
    requested, rejected, narration = result.events
    assert (requested.type, rejected.type, narration.type) == (
        "state_patch_requested",
        "state_patch_rejected",
        "dm_narration",
    )
    assert rejected.payload["patch_id"] == requested.payload["patch_id"]
    assert reason in rejected.payload["error"]
    [rejection] = result.rejections
    assert rejection.name == "apply_state_patch" and rejection.reason == rejected.payload["error"]
    after = state_of(campaign)
    after.pop("last_options"), before.pop("last_options")
    assert after == before


def test_each_patch_sees_the_state_left_by_the_previous_calls_of_the_turn(campaign, hero):
    result = patch_turn(
        campaign,
        [{"op": "replace", "path": f"/characters/{hero}/hp", "value": 3}],
        [{"op": "test", "path": f"/characters/{hero}/hp", "value": 3}],
        [{"op": "test", "path": f"/characters/{hero}/hp", "value": 10}],
    )
    types = [e.type for e in result.events]
    assert types == [
        "state_patch_requested",
        "state_patch_applied",
        "state_patch_requested",
        "state_patch_applied",
        "state_patch_requested",
        "state_patch_rejected",
        "dm_narration",
    ]
    assert [r.index for r in result.rejections] == [2]


def test_refused_patches_are_not_repeated_in_tool_errors(campaign, hero):
    result = patch_turn(campaign, [{"op": "add", "path": "/members/x", "value": 1}])
    narration = result.events[-1]
    assert "tool_errors" not in narration.payload


def test_gm_allow_list_is_wider_but_still_not_owners(campaign, hero):
    state = state_of(campaign)
    grown = patch_check(
        state,
        [{"op": "replace", "path": f"/characters/{hero}/max_hp", "value": 20}],
        actor="gm",
    )
    assert grown["characters"][hero]["max_hp"] == 20
    with pytest.raises(PatchRefused):
        patch_check(
            state,
            [{"op": "replace", "path": f"/characters/{hero}/owner_user_id", "value": None}],
            actor="gm",
        )


def test_a_fresh_campaign_state_fits_the_schema(campaign, hero):
    state_validate(state_of(campaign))
    state_validate(initial_state())


# --- Property: random patches never break the schema nor touch a forbidden path ---------

CHARACTER = "11111111-1111-4111-8111-111111111111"
ENTITY = "22222222-2222-4222-8222-222222222222"
BASE_STATE: dict[str, Any] = {
    **initial_state(),
    "campaign": {"name": "C", "edition": "5e"},
    "members": {"33333333-3333-4333-8333-333333333333": {"display_name": "A", "role": "gm"}},
    "characters": {
        CHARACTER: {
            "name": "Alice",
            "owner_user_id": "33333333-3333-4333-8333-333333333333",
            "hp": 7,
            "max_hp": 10,
            "ac": 12,
            "inventory": ["rope", "torch"],
            "conditions": ["prone"],
        }
    },
    "entities": {ENTITY: {"kind": "npc", "name": "Old Tom", "data": {"mood": "grim"}}},
    "flags": {"door": "shut"},
    "dice": {"seed_id": "44444444-4444-4444-8444-444444444444", "seed_hash": "0" * 64},
}
PROTECTED = ("members", "turn", "campaign", "dice", "last_options")

C, E = f"/characters/{CHARACTER}", f"/entities/{ENTITY}"
# Mostly paths a patch might plausibly name (allowed or not), some made of random segments.
known_pointers = st.sampled_from(
    [
        f"{C}/hp", f"{C}/max_hp", f"{C}/ac", f"{C}/name", f"{C}/owner_user_id", f"{C}/inventory",
        f"{C}/inventory/0", f"{C}/inventory/-", f"{C}/conditions", f"{C}/conditions/0",
        f"{C}/conditions/-", C, f"/characters/{uuid.UUID(int=5)}", "/characters", E,
        f"{E}/name", f"{E}/kind", f"{E}/data", f"{E}/data/mood", f"{E}/id", "/entities",
        "/scene", "/scene/location", "/scene/description", "/scene/weather", "/flags",
        "/flags/door", "/flags/new", "/flags/door/0", "/members", "/turn",
        "/turn/answered_through_seq", "/campaign/name", "/dice/seed_id", "/last_options/0",
        "/budget", "", "/",
    ]
)  # fmt: skip
segments = st.sampled_from(["characters", CHARACTER, "hp", "entities", "flags", "x", "0", "-", ""])
pointers = known_pointers | st.lists(segments, max_size=4).map(
    lambda ps: "".join("/" + p for p in ps)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 15) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Operations a DM might well send, most of them allowed, so that many patches apply.
plausible = st.one_of(
    st.fixed_dictionaries(
        {"op": st.just("replace"), "path": st.just(f"{C}/hp"), "value": st.integers(-2, 14)}
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("add"),
            "path": st.sampled_from([f"{C}/conditions/-", f"{C}/inventory/-", f"{C}/inventory/0"]),
            "value": st.text(min_size=1, max_size=10),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("remove"),
            "path": st.sampled_from(
                [f"{C}/inventory/0", f"{C}/conditions/0", E, "/flags/door", f"{E}/data/mood"]
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "replace"]),
            "path": st.sampled_from(
                [
                    "/flags/new",
                    "/flags/door",
                    "/scene/location",
                    f"{E}/name",
                    f"{E}/data/mood",
                    f"{C}/max_hp",
                    f"{C}/ac",
                    f"{C}/name",
                ]
            ),
            "value": json_values | st.integers(0, 20) | st.text(min_size=1, max_size=10),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["move", "copy"]),
            "from": st.sampled_from([f"{C}/inventory/0", "/flags/door", "/scene/location"]),
            "path": st.sampled_from([f"{C}/inventory/-", "/flags/new", f"{E}/data/door"]),
        }
    ),
)
operations = st.one_of(
    plausible,
    plausible,
    plausible,
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "test"]), "path": pointers, "value": json_values}
    ),
    st.fixed_dictionaries({"op": st.just("remove"), "path": pointers}),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["move", "copy"]), "path": pointers, "from": pointers}
    ),
    st.dictionaries(
        st.sampled_from(["op", "path", "value", "from", "extra"]),
        st.text(max_size=8) | json_values,
        max_size=4,
    ),
)


@settings(max_examples=400, deadline=None)
@given(patches=st.lists(operations, min_size=1, max_size=3), actor=st.sampled_from(["dm", "gm"]))
def test_random_patches_never_break_the_schema_nor_touch_forbidden_paths(patches, actor):
    state = copy.deepcopy(BASE_STATE)
    try:
        result = patch_check(state, patches, actor=actor)
    except PatchRefused as exc:
        assert exc.detail
        assert state == BASE_STATE  # refused: untouched
        return
    assert state == BASE_STATE  # applied to a copy
    state_validate(result)
    for key in PROTECTED:
        assert result.get(key) == BASE_STATE.get(key)
    assert set(result["characters"]) == {CHARACTER}
    character = result["characters"][CHARACTER]
    assert character["owner_user_id"] == BASE_STATE["characters"][CHARACTER]["owner_user_id"]
    assert 0 <= character["hp"] <= character["max_hp"]
    assert set(result["entities"]) <= {ENTITY}
    assert set(result) == set(BASE_STATE)
    if actor == "dm":
        for field in ("name", "max_hp", "ac"):
            assert character[field] == BASE_STATE["characters"][CHARACTER][field]


def test_stored_patches_replay_to_the_same_snapshot(campaign, hero):
    for hp in (9, 5, 2):
        patch_turn(campaign, [{"op": "replace", "path": f"/characters/{hero}/hp", "value": hp}])
    patch_turn(campaign, [{"op": "add", "path": "/flags/bell", "value": {"rung": [1, 2]}}])
    patch_turn(campaign, [{"op": "add", "path": "/flags/bell/rung/-", "value": 3}])
    assert state_of(campaign)["flags"]["bell"] == {"rung": [1, 2, 3]}
    # The stored payload was not aliased into the state (a later patch did not change it).
    [stored] = [
        e
        for e in Event.objects.filter(campaign=campaign, type="state_patch_applied")
        if e.payload["patches"][0]["path"] == "/flags/bell"
    ]
    assert stored.payload["patches"][0]["value"] == {"rung": [1, 2]}
    assert services.snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


# --- Refusals never quote the state (issue 16) ------------------------------------------

MARK = "ZQXstoredvalue"


@pytest.mark.parametrize(
    ("make_patch", "words"),
    [
        (lambda h: [{"op": "test", "path": "/flags/mark", "value": 1}], "not the tested value"),
        (lambda h: [{"op": "add", "path": "/flags/mark/deeper", "value": 1}], "neither"),
        (lambda h: [{"op": "add", "path": "/flags/none/x", "value": 1}], "does not exist"),
        (lambda h: [{"op": "remove", "path": "/flags/bag/5"}], "past the end"),
        (lambda h: [{"op": "remove", "path": "/flags/bag/x"}], "not a list index"),
        (lambda h: [{"op": "copy", "from": "/flags/nope", "path": "/flags/y"}], "from location"),
        (lambda h: [{"op": "move", "from": "/flags/bag", "path": "/flags/bag/0"}], "into itself"),
        (lambda h: [{"op": "replace", "path": "/scene/location", "value": {"a": MARK}}], "text"),
        (lambda h: [{"op": "replace", "path": f"/characters/{h}/hp", "value": MARK}], "integer"),
        (lambda h: [{"op": "replace", "path": "/~2", "value": 1}], "JSON pointer"),
    ],
)
def test_a_refusal_names_the_operation_and_never_quotes_the_state(
    campaign, hero, make_patch, words
):
    patch_turn(
        campaign,
        [
            {"op": "add", "path": "/flags/mark", "value": MARK},
            {"op": "add", "path": "/flags/bag", "value": [MARK]},
        ],
    )
    result = patch_turn(campaign, make_patch(hero))
    [rejected] = [e for e in result.events if e.type == "state_patch_rejected"]
    error = rejected.payload["error"]
    # An operation that does not apply is named; a result that breaks the schema is
    # told by where (the keys the patch wrote) and what, in the schema's words.
    assert words in error and ("operation 0" in error or "state schema" in error), error
    assert MARK not in error and "{" not in error and "<class" not in error, error
