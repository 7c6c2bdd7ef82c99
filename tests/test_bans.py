"""GM controls (CONTRACTS §7): a kick is a ban. A kicked member cannot rejoin with the
invite code (403 `banned`, whatever the code) until the GM lifts the ban; the GM lists
the bans; a new invite code retires the old one. (Who may call these at all: the
schema-driven checks of tests/test_roles.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns import selectors, services
from campaigns.services import campaign_create
from rpgai.errors import PermissionDenied
from tests.auth_tools import isolate_limits
from tests.reads import api_as

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


def _join(user: Any, campaign_id: Any, code: str) -> Any:
    return api_as(user).post(
        f"/api/campaigns/{campaign_id}/join", {"invite_code": code}, format="json"
    )


def _kick(gm: Any, campaign_id: Any, user_id: Any) -> Any:
    return api_as(gm).post(f"/api/campaigns/{campaign_id}/members/{user_id}/kick")


def test_a_kicked_member_cannot_rejoin_until_the_gm_lifts_the_ban(campaign, gm, alice):
    assert _kick(gm, campaign.id, alice.id).status_code == 204
    for code in (campaign.invite_code, "WRONGCODE1", ""):
        response = _join(alice, campaign.id, code)
        assert response.status_code in (403, 400), response.content
        if code:
            assert response.status_code == 403
            assert response.json() == {
                "detail": "you were removed from this campaign by its GM",
                "code": "banned",
            }
    assert selectors.membership_get(campaign_id=campaign.id, user_id=alice.id) is None

    listed = api_as(gm).get(f"/api/campaigns/{campaign.id}/bans")
    assert listed.status_code == 200
    [ban] = listed.json()
    assert ban["user_id"] == str(alice.id)
    assert ban["username"] == "alice" and ban["display_name"] == "Alice"
    assert ban["by"] == str(gm.id) and ban["banned_at"].endswith("Z")

    assert api_as(gm).delete(f"/api/campaigns/{campaign.id}/bans/{alice.id}").status_code == 204
    assert api_as(gm).get(f"/api/campaigns/{campaign.id}/bans").json() == []
    response = _join(alice, campaign.id, campaign.invite_code)
    assert response.status_code == 200, response.content
    assert selectors.membership_get(campaign_id=campaign.id, user_id=alice.id) is not None


def test_lifting_a_ban_that_does_not_exist_is_404(campaign, gm, alice):
    for user_id in (alice.id, uuid.uuid4()):
        response = api_as(gm).delete(f"/api/campaigns/{campaign.id}/bans/{user_id}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_the_join_page_refuses_a_banned_user_too(campaign, gm, alice):
    """The page's join (no campaign id, only the code) goes through the same service."""
    services.member_kick(campaign_id=campaign.id, user_id=alice.id, by_user=gm)
    with pytest.raises(PermissionDenied) as refused:
        services.campaign_join(invite_code=campaign.invite_code, user=alice)
    assert refused.value.code == "banned"


def test_a_ban_holds_in_its_campaign_only(campaign, gm, alice, make_user):
    other = campaign_create(name="Elsewhere", edition="5e", creator=gm)
    services.member_kick(campaign_id=campaign.id, user_id=alice.id, by_user=gm)
    assert _join(alice, other.id, other.invite_code).status_code == 200


def test_a_fork_keeps_its_originals_bans(campaign, gm, alice):
    assert _kick(gm, campaign.id, alice.id).status_code == 204
    forked = api_as(gm).post(f"/api/campaigns/{campaign.id}/fork", {"at_seq": 1}, format="json")
    assert forked.status_code == 201, forked.content
    fork_id = forked.json()["id"]
    code = api_as(gm).get(f"/api/campaigns/{fork_id}/").json()["invite_code"]
    response = _join(alice, fork_id, code)
    assert response.status_code == 403 and response.json()["code"] == "banned"
    assert [b["user_id"] for b in api_as(gm).get(f"/api/campaigns/{fork_id}/bans").json()] == [
        str(alice.id)
    ]


def test_a_new_invite_code_retires_the_old_one(campaign, gm, make_user):
    old = campaign.invite_code
    response = api_as(gm).post(f"/api/campaigns/{campaign.id}/invite_code")
    assert response.status_code == 200
    new = response.json()["invite_code"]
    assert new != old and len(new) == len(old)
    assert api_as(gm).get(f"/api/campaigns/{campaign.id}/").json()["invite_code"] == new
    bob, carol = make_user("bob"), make_user("carol")
    refused = _join(bob, campaign.id, old)
    assert refused.status_code == 403 and refused.json()["code"] == "bad_invite"
    assert _join(carol, campaign.id, new).status_code == 200


def test_players_may_not_see_or_change_bans_or_codes(campaign, gm, alice, make_user):
    bob = make_user("bob")
    services.campaign_join(invite_code=campaign.invite_code, user=bob)
    services.member_kick(campaign_id=campaign.id, user_id=bob.id, by_user=gm)
    client = api_as(alice)
    for response in (
        client.get(f"/api/campaigns/{campaign.id}/bans"),
        client.delete(f"/api/campaigns/{campaign.id}/bans/{bob.id}"),
        client.post(f"/api/campaigns/{campaign.id}/invite_code"),
    ):
        assert response.status_code == 403 and response.json()["code"] == "gm_only"
    anonymous = APIClient().get(f"/api/campaigns/{campaign.id}/bans")
    assert anonymous.status_code == 401
    # The ban stands and the code is unchanged.
    assert [b.user_id for b in selectors.bans_of(campaign_id=campaign.id)] == [bob.id]
    assert selectors.campaign_get(campaign_id=campaign.id).invite_code == campaign.invite_code


def test_the_join_form_tells_a_banned_user_why_in_plain_words(campaign, gm, alice):
    from django.test import Client

    services.member_kick(campaign_id=campaign.id, user_id=alice.id, by_user=gm)
    browser = Client()
    browser.force_login(alice)
    response = browser.post(
        "/campaigns/join", {"invite_code": campaign.invite_code, "display_name": "Alice"}
    )
    page = response.content.decode()
    assert "You did not join: the GM removed you from this campaign." in page
    assert "invite code was not accepted" not in page
    assert campaign.invite_code in page  # what was typed stays
