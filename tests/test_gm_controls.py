"""GM controls in the room (CONTRACTS §7, issue 20): a player leaves; the only GM may not;
kicked and departed characters leave the party (and come back with their player); the GM
role changes hands, and the sockets of both follow; the campaign list says how many
play, when they last did and whose turn it is, in a fixed number of queries; a room link
opened by someone who is not at the table, and a bad invite code, get plain pages."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns import selectors, services
from campaigns.events import NewEvent
from campaigns.models import Event, Membership
from campaigns.services import campaign_create, campaign_join, events_append, snapshots_rebuild
from tests.auth_tools import isolate_limits
from tests.reads import api_as, snapshot_seen_by
from tests.ws import Room, events_of


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


def gm_state(campaign: Any) -> dict:
    return selectors.snapshot_get(campaign_id=campaign.id).state


def own_characters(campaign: Any, user: Any) -> dict[str, dict]:
    return {
        cid: c
        for cid, c in gm_state(campaign)["characters"].items()
        if c.get("owner_user_id") == str(user.id)
    }


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- Leaving ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_player_leaves_and_their_character_leaves_the_party(campaign, gm, alice, bob):
    [(alice_character, _)] = own_characters(campaign, alice).items()
    response = api_as(alice).post(f"/api/campaigns/{campaign.id}/leave")
    assert response.status_code == 204, response.content
    assert not Membership.objects.filter(campaign=campaign, user=alice).exists()
    assert api_as(alice).get(f"/api/campaigns/{campaign.id}/events").status_code == 403

    [left] = Event.objects.filter(campaign=campaign, type="player_left")
    assert left.payload["departed_character_ids"] == [alice_character]
    # The character stays in the story, marked: the page leaves it out of the party.
    seen = snapshot_seen_by(campaign, bob)["state"]
    assert seen["characters"][alice_character]["departed"] is True
    assert str(alice.id) not in seen["members"]
    assert not any(c.get("departed") for c in own_characters(campaign, bob).values())
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []
    # The DM is no longer told of a character out of the story.
    from orchestrator.prompt import prompt_build
    from orchestrator.selectors import turn_context_get

    context = turn_context_get(campaign_id=campaign.id, answered_seq=0, through_seq=left.seq)
    prompt = " ".join(m["content"] for m in prompt_build(context=context, budget=100_000).messages)
    assert alice_character not in prompt
    [(bob_character, _)] = own_characters(campaign, bob).items()
    assert bob_character in prompt


@pytest.mark.django_db
def test_the_only_gm_cannot_leave_but_one_who_handed_the_role_can(campaign, gm, alice):
    response = api_as(gm).post(f"/api/campaigns/{campaign.id}/leave")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "sole_gm"
    assert "only game master" in body["detail"] and "Hand the GM role" in body["detail"]
    assert Membership.objects.filter(campaign=campaign, user=gm).exists()

    assert api_as(gm).post(f"/api/campaigns/{campaign.id}/gm_role", {"to": str(alice.id)})
    assert api_as(gm).post(f"/api/campaigns/{campaign.id}/leave").status_code == 204
    assert api_as(alice).post(f"/api/campaigns/{campaign.id}/leave").status_code == 409


@pytest.mark.django_db
def test_outsiders_cannot_leave_what_they_are_not_in(campaign, make_user):
    stranger = make_user("stranger")
    assert api_as(stranger).post(f"/api/campaigns/{campaign.id}/leave").status_code == 403
    response = api_as(stranger).post(f"/api/campaigns/{uuid.uuid4()}/leave")
    assert response.status_code == 404


@pytest.mark.django_db
def test_a_kicked_character_leaves_the_party_and_comes_back_with_its_player(
    campaign, gm, alice, bob
):
    [(bob_character, sheet)] = own_characters(campaign, bob).items()
    services.member_kick(campaign_id=campaign.id, user_id=bob.id, by_user=gm)
    assert gm_state(campaign)["characters"][bob_character]["departed"] is True
    assert snapshot_seen_by(campaign, alice)["state"]["characters"][bob_character]["departed"]

    services.ban_lift(campaign_id=campaign.id, user_id=bob.id)
    campaign_join(invite_code=campaign.invite_code, user=bob, display_name="Bob")
    # The same character, back in the party; no second one is made.
    back = own_characters(campaign, bob)
    assert list(back) == [bob_character]
    assert "departed" not in back[bob_character]
    assert back[bob_character]["name"] == sheet["name"]
    [_, again] = Event.objects.filter(campaign=campaign, type="player_joined").filter(
        payload__user_id=str(bob.id)
    )
    assert again.payload["character_id"] == bob_character and not again.payload["character"]
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


@pytest.mark.django_db
def test_an_older_player_left_without_the_field_folds_as_it_always_did(campaign, gm, alice):
    """Logs written before `departed_character_ids` existed replay to the state they had."""
    [(character_id, _)] = own_characters(campaign, alice).items()
    membership = Membership.objects.get(campaign=campaign, user=alice)
    events_append(
        campaign_id=campaign.id,
        events=[
            NewEvent(
                "player_left",
                {"user_id": str(alice.id), "display_name": "Alice", "role": "player"},
                "player",
                alice.id,
            )
        ],
    )
    membership.delete()
    assert "departed" not in gm_state(campaign)["characters"][character_id]
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


# --- Handing the GM role -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_gm_hands_the_role_to_a_player(campaign, gm, alice, bob):
    url = f"/api/campaigns/{campaign.id}/gm_role"
    response = api_as(gm).post(url, {"to": str(alice.id)}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["from_user_id"] == str(gm.id)
    assert response.json()["to_user_id"] == str(alice.id)

    roles = dict(Membership.objects.filter(campaign=campaign).values_list("user_id", "role"))
    assert roles == {gm.id: "player", alice.id: "gm", bob.id: "player"}
    [handed] = Event.objects.filter(campaign=campaign, type="gm_role_handed")
    assert handed.payload == {"from_user_id": str(gm.id), "to_user_id": str(alice.id)}
    assert handed.visibility == {"kind": "all"}
    members = gm_state(campaign)["members"]
    assert members[str(alice.id)]["role"] == "gm" and members[str(gm.id)]["role"] == "player"

    # The new GM has the GM's controls; the former one does not any more.
    assert api_as(alice).get(f"/api/campaigns/{campaign.id}/budget").status_code == 200
    assert "invite_code" in api_as(alice).get(f"/api/campaigns/{campaign.id}/").json()
    assert api_as(gm).get(f"/api/campaigns/{campaign.id}/budget").status_code == 403
    assert api_as(gm).post(url, {"to": str(bob.id)}, format="json").status_code == 403
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []


@pytest.mark.django_db
def test_the_role_goes_only_to_a_member_who_is_not_banned(campaign, gm, alice, bob, make_user):
    url = f"/api/campaigns/{campaign.id}/gm_role"
    services.member_kick(campaign_id=campaign.id, user_id=bob.id, by_user=gm)
    stranger = make_user("stranger")
    cases = [
        (gm.id, 409),  # themself
        (bob.id, 404),  # kicked and banned
        (stranger.id, 404),  # never a member
        (uuid.uuid4(), 404),
    ]
    for target, status in cases:
        response = api_as(gm).post(url, {"to": str(target)}, format="json")
        assert response.status_code == status, (target, response.content)
        body = response.json()
        assert set(body) == {"detail", "code"}
        assert str(target) not in body["detail"]  # plain words, no id
    for bad in ({}, {"to": "someone"}, {"to": [str(alice.id)]}):
        assert api_as(gm).post(url, bad, format="json").status_code == 400
    assert api_as(alice).post(url, {"to": str(alice.id)}, format="json").status_code == 403
    assert not Event.objects.filter(campaign=campaign, type="gm_role_handed").exists()
    assert Membership.objects.get(campaign=campaign, user=gm).role == "gm"


@pytest.mark.django_db(transaction=True)
async def test_the_sockets_of_both_follow_the_new_roles(campaign, gm, alice):
    rooms = {"gm": Room(campaign.id, gm), "alice": Room(campaign.id, alice)}
    for room in rooms.values():
        await room.open()
        await room.hello(0)

    def hand() -> None:
        response = api_as(gm).post(
            f"/api/campaigns/{campaign.id}/gm_role", {"to": str(alice.id)}, format="json"
        )
        assert response.status_code == 200, response.content

    await sync_to_async(hand)()
    for room in rooms.values():
        got = events_of(
            await room.recv_until(lambda m: m.get("event", {}).get("type") == "gm_role_handed")
        )
        assert got[-1]["payload"]["to_user_id"] == str(alice.id)

    # A secret direction of the new GM: her socket gets it, the former GM's does not.
    await rooms["alice"].send(
        {"type": "client.gm_direction", "text": "The bell is cursed.", "secret": True, "now": False}
    )
    seen = await rooms["alice"].recv_until(lambda m: m.get("type") == "server.ack")
    secret_seq = seen[-1]["seq"]
    assert any(e["seq"] == secret_seq for e in events_of(seen)) or any(
        e["seq"] == secret_seq
        for e in events_of(await rooms["alice"].recv_until(lambda m: m.get("type") == "event"))
    )
    # The former GM: a socket that follows the log gets the next public event, never that one.
    await rooms["gm"].send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I bow out"}
    )
    seen = await rooms["gm"].recv_until(lambda m: m.get("type") == "server.ack")
    ack = seen[-1]
    more = events_of(seen)
    if not any(e["seq"] == ack["seq"] for e in more):
        more += events_of(
            await rooms["gm"].recv_until(lambda m: m.get("event", {}).get("seq") == ack["seq"])
        )
    assert all(e["seq"] != secret_seq for e in more)
    assert next(e for e in more if e["seq"] == ack["seq"])["actor"]["kind"] == "player"
    # ... and a GM's message is refused to them now.
    await rooms["gm"].send({"type": "client.gm_direction", "text": "Rain.", "now": False})
    refused = await rooms["gm"].recv_until(lambda m: m.get("type") == "error")
    assert refused[-1]["code"] == "forbidden"
    for room in rooms.values():
        await room.close()


# --- The campaign list ---------------------------------------------------------------------------


def _list(user: Any) -> dict[str, dict]:
    response = api_as(user).get("/api/campaigns/")
    assert response.status_code == 200, response.content
    return {c["id"]: c for c in response.json()}


@pytest.mark.django_db
def test_the_list_shows_players_last_activity_and_whose_turn(gm, make_user, act):
    alice, bob = make_user("alice"), make_user("bob")
    free = campaign_create(name="Free", creator=gm)
    rounds = campaign_create(name="Rounds", creator=gm, turn_mode="rounds")
    for campaign in (free, rounds):
        for user, name in ((alice, "Alice"), (bob, "Bob")):
            campaign_join(invite_code=campaign.invite_code, user=user, display_name=name)

    listed = _list(gm)
    for campaign in (free, rounds):
        entry = listed[str(campaign.id)]
        assert entry["players"] == 2
        latest = Event.objects.filter(campaign=campaign).order_by("-seq").first()
        assert entry["last_activity_at"] == latest.created_at.isoformat().replace("+00:00", "Z")
        assert entry["whose_turn"] == {"waiting_for": None, "user_ids": [], "text": ""}

    act(free, alice, "I light a torch")
    act(rounds, alice, "I light a torch")
    listed = _list(bob)
    assert listed[str(free.id)]["whose_turn"] == {
        "waiting_for": "dm",
        "user_ids": [],
        "text": "Waiting for the DM",
    }
    assert listed[str(rounds.id)]["whose_turn"] == {
        "waiting_for": "players",
        "user_ids": [str(bob.id)],
        "text": "Waiting for Bob",
    }
    act(rounds, bob, "I follow")
    assert _list(gm)[str(rounds.id)]["whose_turn"]["waiting_for"] == "dm"

    html = client_for(bob).get(reverse("campaign-list")).content.decode()
    assert "2 players" in html and "Waiting for the DM" in html and "last played" in html


def _many_campaigns(gm: Any, players: list[Any], count: int, act: Any) -> None:
    for n in range(count):
        campaign = campaign_create(
            name=f"Table {n}", creator=gm, turn_mode="rounds" if n % 2 else "free"
        )
        for user in players:
            campaign_join(invite_code=campaign.invite_code, user=user, display_name=user.username)
        act(campaign, players[0], "I look around")


@pytest.mark.django_db
def test_the_list_costs_the_same_few_queries_for_2_or_20_campaigns(gm, make_user, act):
    players = [make_user("alice"), make_user("bob")]
    _many_campaigns(gm, players, 2, act)

    def count(read) -> int:
        with CaptureQueriesContext(connection) as queries:
            read()
        return len(queries)

    def api_read() -> None:
        assert api_as(gm).get("/api/campaigns/").status_code == 200

    def page_read() -> None:
        assert client.get(reverse("campaign-list")).status_code == 200

    client = client_for(gm)
    api_few, page_few = count(api_read), count(page_read)
    _many_campaigns(gm, players, 18, act)
    assert len(_list(gm)) == 20
    assert count(api_read) == api_few
    assert count(page_read) == page_few
    assert api_few <= 8, api_few


# --- Pages for normal mistakes ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_a_room_link_opened_by_someone_not_at_the_table(campaign, make_user, settings, debug):
    settings.DEBUG = debug
    client = client_for(make_user("mallory"))
    for campaign_id in (campaign.id, uuid.uuid4()):
        response = client.get(reverse("campaign-room", args=[campaign_id]))
        assert response.status_code == 404
        html = response.content.decode()
        assert "re not at this table" in html
        assert f'action="{reverse("campaign-join")}"' in html and 'name="invite_code"' in html
        assert campaign.name not in html
        assert "URLconf" not in html and "Traceback" not in html  # not Django's debug page
        assert 'class="site-header"' in html  # the site's own look


@pytest.mark.django_db
def test_a_removed_member_is_told_so(campaign, gm, alice, settings):
    settings.DEBUG = True
    services.member_kick(campaign_id=campaign.id, user_id=alice.id, by_user=gm)
    response = client_for(alice).get(reverse("campaign-room", args=[campaign.id]))
    assert response.status_code == 403
    html = response.content.decode()
    assert "removed you" in html and 'class="site-header"' in html


@pytest.mark.django_db
def test_a_bad_invite_code_keeps_what_was_typed(campaign, make_user):
    bob = make_user("bob")
    response = client_for(bob).post(
        reverse("campaign-join"), {"invite_code": "NOPE12345X", "display_name": "Thorn Oakes"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="NOPE12345X"' in html and 'value="Thorn Oakes"' in html
    assert re.search(r'class="field-errors" id="join_invite_code_error"', html)
    assert "does not open any campaign" in html
    assert not Membership.objects.filter(user=bob).exists()
    # ... and the right code still works from there.
    response = client_for(bob).post(
        reverse("campaign-join"), {"invite_code": campaign.invite_code, "display_name": "Thorn"}
    )
    assert response.status_code == 302
