"""Who may do what. Every operation of the API (read from the OpenAPI schema, so that a
new endpoint is covered the day it appears) refuses the anonymous, expired and forged
tokens with 401 and a member of another campaign with 403 (or 404); every GM operation
refuses a player with 403. A kicked member loses the API and their open sockets."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from campaigns import selectors
from campaigns.services import campaign_create, campaign_join
from tests.auth_tools import BAD_TOKEN_KINDS, access_for, bad_token, bearer, isolate_limits
from tests.processes import daphne, free_port
from tests.ws import Room, _session_cookie, events_of

pytestmark = pytest.mark.django_db

PUBLIC = {("POST", "/api/auth/register"), ("POST", "/api/auth/token")}
PUBLIC |= {("POST", "/api/auth/token/refresh")}
# Open to any signed-in user, not only to members of the campaign in the URL.
ANY_USER = {("POST", "/api/campaigns/{campaign_id}/join")}
# GM only, besides everything under /gm/ (CONTRACTS §4 and issue 5: budget, usage,
# documents, model choice, corrections, dice seed reveal, kicking a member, forks).
GM_ONLY = {
    ("POST", "/api/campaigns/{campaign_id}/members/{user_id}/kick"),
    # GM controls (CONTRACTS §7): bans and a new invite code.
    ("GET", "/api/campaigns/{campaign_id}/bans"),
    ("DELETE", "/api/campaigns/{campaign_id}/bans/{user_id}"),
    ("POST", "/api/campaigns/{campaign_id}/invite_code"),
    ("POST", "/api/campaigns/{campaign_id}/gm_role"),
    ("GET", "/api/campaigns/{campaign_id}/usage"),
    ("GET", "/api/campaigns/{campaign_id}/budget"),
    ("PUT", "/api/campaigns/{campaign_id}/budget"),
    ("PATCH", "/api/campaigns/{campaign_id}/budget"),
    ("POST", "/api/campaigns/{campaign_id}/fork"),
    ("POST", "/api/campaigns/{campaign_id}/documents"),
    ("PUT", "/api/campaigns/{campaign_id}/model"),
    ("POST", "/api/campaigns/{campaign_id}/model"),
}


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    )


OPERATIONS = _operations()
PROTECTED = [op for op in OPERATIONS if op not in PUBLIC]
IN_CAMPAIGN = [op for op in PROTECTED if "{campaign_id}" in op[1] and op not in ANY_USER]
GM_OPERATIONS = [op for op in IN_CAMPAIGN if op in GM_ONLY or "/gm/" in op[1]]


def _id(op: tuple[str, str]) -> str:
    return f"{op[0]} {op[1]}"


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def outsider(make_user):
    """A GM of their own campaign, a stranger to `campaign`."""
    user = make_user("mallory")
    campaign_create(name="Elsewhere", edition="5e", creator=user)
    return user


def _call(client: APIClient, op: tuple[str, str], campaign_id: Any, user_id: Any, **extra):
    method, template = op
    path = template.replace("{campaign_id}", str(campaign_id)).replace("{user_id}", str(user_id))
    path = re.sub(r"\{seq\}", "1", path)  # an integer in its route
    path = re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), path)
    return getattr(client, method.lower())(path, {}, format="json", **extra)


def test_the_schema_lists_the_operations_this_module_checks():
    assert ("POST", "/api/campaigns/{campaign_id}/members/{user_id}/kick") in GM_OPERATIONS
    assert ("GET", "/api/campaigns/{campaign_id}/bans") in GM_OPERATIONS
    assert ("DELETE", "/api/campaigns/{campaign_id}/bans/{user_id}") in GM_OPERATIONS
    assert ("POST", "/api/campaigns/{campaign_id}/invite_code") in GM_OPERATIONS
    assert ("GET", "/api/campaigns/{campaign_id}/events") in IN_CAMPAIGN
    assert ("POST", "/api/auth/logout") in PROTECTED


@pytest.mark.parametrize("op", PROTECTED, ids=_id)
def test_anonymous_is_401(op, campaign, alice):
    response = _call(APIClient(), op, campaign.id, alice.id)
    assert response.status_code == 401, response.content
    assert set(response.json()) == {"detail", "code"}


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
@pytest.mark.parametrize("op", PROTECTED, ids=_id)
def test_bad_tokens_are_401(op, kind, campaign, gm, alice):
    response = _call(APIClient(), op, campaign.id, alice.id, **bearer(bad_token(kind, gm)))
    assert response.status_code == 401, response.content


@pytest.mark.parametrize("op", IN_CAMPAIGN, ids=_id)
def test_a_member_of_another_campaign_is_refused(op, campaign, alice, outsider):
    response = _call(APIClient(), op, campaign.id, alice.id, **bearer(access_for(outsider)))
    assert response.status_code in (403, 404), response.content
    assert set(response.json()) == {"detail", "code"}


@pytest.mark.parametrize("op", GM_OPERATIONS, ids=_id)
def test_a_player_doing_a_gms_thing_is_403(op, campaign, alice, gm):
    response = _call(APIClient(), op, campaign.id, gm.id, **bearer(access_for(alice)))
    assert response.status_code == 403, response.content
    assert response.json()["code"] in ("gm_only", "forbidden", "permission_denied")


@pytest.mark.parametrize("op", IN_CAMPAIGN, ids=_id)
def test_an_unknown_campaign_opens_nothing(op, alice):
    response = _call(APIClient(), op, uuid.uuid4(), alice.id, **bearer(access_for(alice)))
    assert response.status_code in (403, 404), response.content


# --- Kicking a member -----------------------------------------------------------------------


def _kick(client_user: Any, campaign_id: Any, user_id: Any):
    return APIClient().post(
        f"/api/campaigns/{campaign_id}/members/{user_id}/kick", **bearer(access_for(client_user))
    )


def test_the_gm_kicks_a_player_who_then_loses_the_campaign(campaign, gm, alice):
    assert _kick(gm, campaign.id, alice.id).status_code == 204
    assert selectors.membership_get(campaign_id=campaign.id, user_id=alice.id) is None
    response = APIClient().get(f"/api/campaigns/{campaign.id}/events", **bearer(access_for(alice)))
    assert response.status_code == 403
    left = APIClient().get(f"/api/campaigns/{campaign.id}/events", **bearer(access_for(gm)))
    [event] = [e for e in left.json() if e["type"] == "player_left"]
    assert event["payload"]["user_id"] == str(alice.id)


def test_kick_refusals(campaign, gm, alice, outsider, make_user):
    bob = make_user("bob")
    campaign_join(invite_code=campaign.invite_code, user=bob, display_name="Bob")
    assert _kick(alice, campaign.id, bob.id).status_code == 403
    assert _kick(outsider, campaign.id, bob.id).status_code == 403
    # Not a member here (the outsider is a member elsewhere): nothing to kick.
    assert _kick(gm, campaign.id, outsider.id).status_code == 404
    assert _kick(gm, campaign.id, uuid.uuid4()).status_code == 404
    # The last GM cannot leave their campaign (hand the GM role first: issue 20).
    response = _kick(gm, campaign.id, gm.id)
    assert response.status_code == 409 and response.json()["code"] == "sole_gm"
    assert (
        APIClient()
        .post(f"/api/campaigns/{campaign.id}/members/not-a-uuid/kick", **bearer(access_for(gm)))
        .status_code
        == 404
    )


@pytest.mark.django_db(transaction=True)
async def test_a_kicked_members_sockets_close_at_once(campaign, gm, alice, make_user):
    bob = await sync_to_async(make_user)("bob")
    await sync_to_async(campaign_join)(invite_code=campaign.invite_code, user=bob)
    streaming, idle, other = (
        Room(campaign.id, alice),
        Room(campaign.id, alice),
        Room(campaign.id, bob),
    )
    for room in (streaming, idle, other):
        await room.open()
    await streaming.hello(0)
    await other.hello(0)
    # `idle` never said hello: it gets no events, but it must close too.
    response = await sync_to_async(_kick)(gm, campaign.id, alice.id)
    assert response.status_code == 204
    for room in (streaming, idle):
        while True:
            output = await room.comm.receive_output(timeout=3)
            if output["type"] == "websocket.close":
                assert output["code"] == 4403
                break
            assert json.loads(output["text"])["type"] in ("event", "presence")
        await room.close()
    seen = await other.recv_until(lambda m: m["type"] == "event")
    assert events_of(seen)[-1]["type"] == "player_left"
    # The others' room goes on, and presence no longer lists the kicked player.
    await other.send({"type": "client.ping"})
    messages = await other.recv_until(lambda m: m["type"] == "server.pong")
    presence = [m for m in messages if m["type"] == "presence"]
    if presence:
        assert str(alice.id) not in {u["user_id"] for u in presence[-1]["users"]}
    await other.close()


# --- Across server processes (PostgreSQL + Redis) -------------------------------------------


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_a_kick_closes_the_members_sockets_on_every_process(campaign, gm, alice):
    port_a, port_b = free_port(), free_port()
    with daphne(port_a), daphne(port_b):
        sockets = [await _connect(port, campaign.id, alice) for port in (port_a, port_b)]
        response = await sync_to_async(_kick)(gm, campaign.id, alice.id)
        assert response.status_code == 204
        for ws in sockets:
            async with asyncio.timeout(10):
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            assert closed.value.rcvd.code == 4403


async def _connect(port: int, campaign_id: Any, user: Any) -> Any:
    key = await sync_to_async(_session_cookie)(user)
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"},
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
    async with asyncio.timeout(10):
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
    return ws


@pytest.mark.django_db
def test_an_address_no_api_route_matches_is_a_json_404():
    for path in ("/api/nothing", "/api/campaigns/not-a-uuid/narrations/x/retry"):
        response = APIClient().post(path, {}, format="json")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["code"] == "not_found"
