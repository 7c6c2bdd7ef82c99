"""Logging out closes the sockets that login opened (CONTRACTS §7 "Origins and
sessions"; issue 16, finding 6): the page logout closes the session's room sockets with
4401, on every process; an API logout closes the user's token sockets (and their tokens
open no new one). Nothing sent after the logout is taken. The same tests run on the
in-memory layer and, with REDIS_URL, on Redis; the last one across a real daphne."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import tokens_for_user
from campaigns.models import Event
from realtime import consumers
from rpgai.asgi import application
from tests.auth_tools import bearer, isolate_limits
from tests.processes import daphne, free_port
from tests.ws import ORIGIN, Room, _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


class SessionRoom(Room):
    """A room client whose session key the test knows (to log that session out); given
    a key, it opens with that session (another tab of the same browser)."""

    def __init__(self, campaign_id: Any, user: Any, key: str | None = None) -> None:
        super().__init__(campaign_id, user)
        self.key = key

    async def open(self) -> tuple[bool, Any]:
        if self.key is None:
            self.key = await sync_to_async(_session_cookie)(self.user)
        cookie = (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={self.key}".encode())
        self.comm = WebsocketCommunicator(
            application, f"/ws/campaigns/{self.campaign_id}/", headers=[ORIGIN, cookie]
        )
        return await self.comm.connect()


class TokenRoom(Room):
    def __init__(self, campaign_id: Any, token: str) -> None:
        super().__init__(campaign_id, None)
        self.token = token

    async def open(self) -> tuple[bool, Any]:
        self.comm = WebsocketCommunicator(
            application, f"/ws/campaigns/{self.campaign_id}/?token={self.token}", headers=[]
        )
        return await self.comm.connect()


def _page_logout(session_key: str) -> int:
    browser = Client()
    browser.cookies[django_settings.SESSION_COOKIE_NAME] = session_key
    return browser.post("/logout/").status_code


def _api_logout(pair: dict[str, str]) -> int:
    return (
        APIClient()
        .post(
            "/api/auth/logout",
            {"refresh": pair["refresh"]},
            format="json",
            **bearer(pair["access"]),
        )
        .status_code
    )


def _whispers(campaign_id: Any) -> list[str]:
    return list(
        Event.objects.filter(campaign_id=campaign_id, type="whisper").values_list(
            "payload__text", flat=True
        )
    )


async def _closed_with(room: Room) -> int | None:
    """The close code, after whatever was still queued (presence, events)."""
    while True:
        output = await room.comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output.get("code")
        assert json.loads(output["text"])["type"] in ("presence", "event"), output


async def test_a_page_logout_closes_that_sessions_sockets(campaign, alice):
    mine = SessionRoom(campaign.id, alice)
    await mine.open()
    await mine.hello(0)
    other_tab_of_mine = SessionRoom(campaign.id, alice, key=mine.key)
    await other_tab_of_mine.open()  # idle: never said hello, it closes too
    elsewhere = SessionRoom(campaign.id, alice)  # another login (another device)
    await elsewhere.open()
    await elsewhere.hello(0)

    assert await sync_to_async(_page_logout)(mine.key) == 302
    assert await _closed_with(mine) == 4401
    assert await _closed_with(other_tab_of_mine) == 4401
    await mine.send({"type": "client.whisper", "to": "gm", "text": "after logout"})
    # The other login is not logged out.
    await elsewhere.send({"type": "client.whisper", "to": "gm", "text": "still in"})
    await elsewhere.recv_until(lambda m: m["type"] == "server.ack")
    assert await sync_to_async(_whispers)(campaign.id) == ["still in"]
    for room in (mine, other_tab_of_mine, elsewhere):
        await room.close()


async def test_logging_out_of_the_admin_closes_that_sessions_sockets(campaign, alice):
    """Any logout through django.contrib.auth, not only the room's own page."""

    def make_staff() -> None:
        alice.is_staff = True
        alice.save(update_fields=["is_staff"])

    await sync_to_async(make_staff)()
    room = SessionRoom(campaign.id, alice)
    await room.open()
    await room.hello(0)

    def admin_logout(session_key: str) -> int:
        browser = Client()
        browser.cookies[django_settings.SESSION_COOKIE_NAME] = session_key
        return browser.post("/admin/logout/").status_code

    assert await sync_to_async(admin_logout)(room.key) in (200, 302)
    assert await _closed_with(room) == 4401
    await room.close()


async def test_a_session_logged_out_while_its_socket_connects(campaign, alice, monkeypatch):
    """The logout lands between the socket's first read and its group join."""
    room = SessionRoom(campaign.id, alice)

    async def logout_in_the_window(consumer: Any) -> None:
        assert await sync_to_async(_page_logout)(room.key) == 302

    monkeypatch.setattr(consumers, "before_group_join", logout_in_the_window)
    await room.open()
    await room.send({"type": "client.whisper", "to": "gm", "text": "after logout"})
    assert await _closed_with(room) == 4401
    await room.close()
    assert await sync_to_async(_whispers)(campaign.id) == []


async def test_an_api_logout_closes_the_users_token_sockets(campaign, alice):
    pair = await sync_to_async(tokens_for_user)(user=alice)
    room = TokenRoom(campaign.id, pair["access"])
    await room.open()
    await room.hello(0)
    assert await sync_to_async(_api_logout)(pair) == 204
    assert await _closed_with(room) == 4401
    await room.send({"type": "client.whisper", "to": "gm", "text": "after logout"})
    await room.close()
    # The logged-out access token opens no new socket either.
    again = TokenRoom(campaign.id, pair["access"])
    await again.open()
    assert await _closed_with(again) == 4401
    await again.close()
    assert await sync_to_async(_whispers)(campaign.id) == []


async def test_an_api_logout_leaves_session_sockets_open(campaign, alice):
    pair = await sync_to_async(tokens_for_user)(user=alice)
    page = SessionRoom(campaign.id, alice)
    await page.open()
    await page.hello(0)
    assert await sync_to_async(_api_logout)(pair) == 204
    await page.send({"type": "client.whisper", "to": "gm", "text": "the page stays"})
    await page.recv_until(lambda m: m["type"] == "server.ack")
    await page.close()


# --- Across processes (PostgreSQL + Redis) ------------------------------------------------------


@pytest.mark.services
async def test_a_page_logout_closes_the_sessions_socket_on_another_process(campaign, alice):
    port = free_port()
    with daphne(port):
        key = await sync_to_async(_session_cookie)(alice)
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/campaigns/{campaign.id}/",
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={key}"},
        )
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "server.ready":
                pass
        # This process logs out; the socket lives in daphne: only Redis connects them.
        assert await sync_to_async(_page_logout)(key) == 302
        async with asyncio.timeout(10):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
        assert closed.value.rcvd.code == 4401
