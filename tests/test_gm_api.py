"""The GM's tools in the room over HTTP: set a value, revert an event, reveal the dice seed."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns import selectors
from campaigns.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for():
    def make(user: Any = None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def state_of(campaign: Any) -> dict[str, Any]:
    return selectors.snapshot_get(campaign_id=campaign.id).state


def character_of(campaign: Any, user: Any) -> str:
    [character_id] = [
        cid
        for cid, c in state_of(campaign)["characters"].items()
        if c["owner_user_id"] == str(user.id)
    ]
    return character_id


def url(campaign: Any, name: str) -> str:
    return {
        "values": f"/api/campaigns/{campaign.id}/gm/values",
        "reverts": f"/api/campaigns/{campaign.id}/gm/reverts",
        "reveal": f"/api/campaigns/{campaign.id}/gm/dice/reveal",
    }[name]


def event_count(campaign: Any) -> int:
    return Event.objects.filter(campaign_id=campaign.id).count()


# --- Set a value ------------------------------------------------------------------------------


def test_gm_sets_a_characters_hp(client_for, campaign, gm, alice):
    character_id = character_of(campaign, alice)
    response = client_for(gm).post(
        url(campaign, "values"),
        {"character_id": character_id, "field": "hp", "value": 4, "reason": "trap"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    events = response.json()["events"]
    assert [e["type"] for e in events] == ["state_patch_requested", "state_patch_applied"]
    assert all(e["actor"] == {"kind": "gm", "user_id": str(gm.id)} for e in events)
    assert events[1]["payload"]["patches"] == [
        {"op": "replace", "path": f"/characters/{character_id}/hp", "value": 4}
    ]
    assert events[0]["payload"]["reason"] == "trap"
    assert state_of(campaign)["characters"][character_id]["hp"] == 4


def test_gm_sets_a_list_field_and_a_path(client_for, campaign, gm, alice):
    character_id = character_of(campaign, alice)
    client = client_for(gm)
    conditions = client.post(
        url(campaign, "values"),
        {"character_id": character_id, "field": "conditions", "value": ["poisoned", "prone"]},
        format="json",
    )
    assert conditions.status_code == 201
    scene = client.post(
        url(campaign, "values"), {"path": "/scene/location", "value": "The crypt"}, format="json"
    )
    assert scene.status_code == 201
    state = state_of(campaign)
    assert state["characters"][character_id]["conditions"] == ["poisoned", "prone"]
    assert state["scene"]["location"] == "The crypt"


@pytest.mark.parametrize(
    ("field", "value"),
    [("hp", 999), ("hp", "seven"), ("hp", -1), ("conditions", "poisoned"), ("ac", 1.5)],
)
def test_a_value_the_schema_refuses_is_a_400_and_appends_nothing(
    client_for, campaign, gm, alice, field, value
):
    character_id = character_of(campaign, alice)
    before = event_count(campaign)
    response = client_for(gm).post(
        url(campaign, "values"),
        {"character_id": character_id, "field": field, "value": value},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "patch_rejected"
    assert response.json()["detail"]
    assert event_count(campaign) == before


def test_a_path_outside_the_gm_allow_list_is_refused(client_for, campaign, gm, alice):
    response = client_for(gm).post(
        url(campaign, "values"),
        {"path": f"/members/{alice.id}/role", "value": "gm"},
        format="json",
    )
    assert response.status_code == 400
    assert state_of(campaign)["members"][str(alice.id)]["role"] == "player"


@pytest.mark.parametrize(
    "body",
    [
        {"value": 3},
        {"character_id": str(uuid.uuid4()), "path": "/scene/location", "field": "hp", "value": 3},
        {"character_id": str(uuid.uuid4()), "value": 3},
        {"field": "hp", "value": 3},
        {"character_id": "not-a-uuid", "field": "hp", "value": 3},
        {"character_id": str(uuid.uuid4()), "field": "owner_user_id", "value": 3},
        {"path": "scene/location", "value": "x"},
        {"path": "/scene/location"},
        [1, 2],
    ],
)
def test_malformed_set_value_bodies_are_400(client_for, campaign, gm, body):
    response = client_for(gm).post(url(campaign, "values"), body, format="json")
    assert response.status_code == 400, response.content
    assert "detail" in response.json()


def test_an_unknown_character_is_a_404(client_for, campaign, gm):
    response = client_for(gm).post(
        url(campaign, "values"),
        {"character_id": str(uuid.uuid4()), "field": "hp", "value": 3},
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- Revert an event ---------------------------------------------------------------------------


def test_gm_reverts_a_change_once(client_for, campaign, gm, alice):
    character_id = character_of(campaign, alice)
    client = client_for(gm)
    applied = client.post(
        url(campaign, "values"),
        {"character_id": character_id, "field": "hp", "value": 2},
        format="json",
    ).json()["events"][1]
    response = client.post(url(campaign, "reverts"), {"seq": applied["seq"]}, format="json")
    assert response.status_code == 201, response.json()
    events = response.json()["events"]
    assert events[-1]["type"] == "state_patch_applied"
    assert events[-1]["payload"]["reverts_seq"] == applied["seq"]
    assert state_of(campaign)["characters"][character_id]["hp"] == 10

    again = client.post(url(campaign, "reverts"), {"seq": applied["seq"]}, format="json")
    assert again.status_code == 409
    assert "already reverted" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [({"seq": 10_000}, 404), ({"seq": 0}, 400), ({"seq": "x"}, 400), ({}, 400), ({"seq": 1}, 409)],
)
def test_bad_reverts_get_clear_errors(client_for, campaign, gm, alice, body, status):
    # seq 1 is campaign_created: the state it made is not the GM's to undo.
    response = client_for(gm).post(url(campaign, "reverts"), body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["detail"]


# --- Reveal the dice seed ----------------------------------------------------------------------


def test_gm_reveals_the_seed_and_a_new_one_is_committed(client_for, campaign, gm):
    committed = state_of(campaign)["dice"]
    response = client_for(gm).post(url(campaign, "reveal"))
    assert response.status_code == 201, response.json()
    revealed, new = response.json()["events"]
    assert revealed["type"] == "dice_seed_revealed" and new["type"] == "dice_seed_committed"
    assert revealed["payload"]["seed_id"] == committed["seed_id"]
    seed = bytes.fromhex(revealed["payload"]["seed"])
    assert hashlib.sha256(seed).hexdigest() == committed["seed_hash"]
    assert (
        state_of(campaign)["dice"]["seed_id"] == new["payload"]["seed_id"] != committed["seed_id"]
    )


# --- Who may -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["values", "reverts", "reveal"])
def test_players_outsiders_and_anonymous_are_refused(client_for, campaign, alice, make_user, name):
    body = {"seq": 1} if name == "reverts" else {"path": "/scene/location", "value": "x"}
    before = event_count(campaign)
    player = client_for(alice).post(url(campaign, name), body, format="json")
    assert player.status_code == 403 and player.json()["code"] == "gm_only"
    outsider = client_for(make_user("mallory")).post(url(campaign, name), body, format="json")
    assert outsider.status_code == 403 and outsider.json()["code"] == "not_a_member"
    anonymous = client_for().post(url(campaign, name), body, format="json")
    assert anonymous.status_code == 401
    missing = client_for(alice).post(
        f"/api/campaigns/{uuid.uuid4()}/gm/{name.replace('reveal', 'dice/reveal')}",
        body,
        format="json",
    )
    assert missing.status_code == 404
    assert event_count(campaign) == before


def test_the_room_posts_with_its_session_and_csrf_token(campaign, gm, alice):
    """The room page calls these endpoints with the session cookie: CSRF is enforced, and
    the page carries the token it needs."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(gm)
    page = browser.get(reverse("campaign-room", args=[campaign.id])).content.decode()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match, "the room page carries the CSRF token for its fetch calls"
    body = {"path": "/scene/location", "value": "The crypt"}
    refused = browser.post(url(campaign, "values"), body, content_type="application/json")
    assert refused.status_code == 403
    accepted = browser.post(
        url(campaign, "values"),
        body,
        content_type="application/json",
        headers={"X-CSRFToken": match.group(1)},
    )
    assert accepted.status_code == 201
