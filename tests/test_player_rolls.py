"""Players roll with the server's dice, over HTTP and over the socket."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns import selectors
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_roll_over_http(campaign, alice):
    response = _client(alice).post(
        f"/api/campaigns/{campaign.id}/rolls",
        {"formula": "2d6+3", "reason": "damage"},
        format="json",
    )
    assert response.status_code == 201
    requested, result = response.json()
    assert requested["type"] == "roll_requested" and result["type"] == "roll_result"
    assert requested["payload"]["requested_by"] == "player"
    assert result["actor"]["user_id"] == str(alice.id)
    assert 5 <= result["payload"]["total"] <= 15
    stored = selectors.events_after(campaign_id=campaign.id, after_seq=requested["seq"] - 1)
    assert [e.seq for e in stored[:2]] == [requested["seq"], result["seq"]]


@pytest.mark.parametrize("formula", ["", "10000d6", "d", "(" * 300 + "1"])
def test_bad_formula_is_a_400(campaign, alice, formula):
    response = _client(alice).post(
        f"/api/campaigns/{campaign.id}/rolls", {"formula": formula}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "code"}


def test_outsider_cannot_roll(campaign, make_user):
    response = _client(make_user()).post(
        f"/api/campaigns/{campaign.id}/rolls", {"formula": "1d20"}, format="json"
    )
    assert response.status_code == 403


async def test_roll_over_the_socket(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send({"type": "client.roll", "formula": "1d20+5", "reason": "Perception"})
    got = events_of(
        await room.recv_until(lambda m: m.get("event", {}).get("type") == "roll_result")
    )
    result = got[-1]["payload"]
    assert 6 <= result["total"] <= 25 and result["formula"] == "1d20+5"
    await room.send({"type": "client.roll", "formula": "99999d6", "reason": ""})
    error = (await room.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["code"] == "invalid_message" and "dice" in error["detail"].lower()
    await room.close()
