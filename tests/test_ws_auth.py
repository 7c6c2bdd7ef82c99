"""WebSocket auth by `?token=<JWT access>`: verified locally, refused with 4401 when bad
or expired (also mid-session, at the next message), and never written to a log."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator

from campaigns.models import Event
from realtime.auth import access_claims
from realtime.messages import MESSAGE_MODELS
from rpgai.asgi import application
from tests.auth_tools import BAD_TOKEN_KINDS, access_for, bad_token, isolate_limits
from tests.processes import ROOT, _wait_for_port, free_port, test_env
from tests.ws import ORIGIN, Room, _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


class TokenRoom(Room):
    """A room client that authenticates with `?token=` instead of a session cookie."""

    def __init__(self, campaign_id, token: str | None, headers: list | None = None):
        super().__init__(campaign_id, None, headers)
        self.token = token

    async def open(self):
        query = "" if self.token is None else f"?token={self.token}"
        headers = list(self.extra_headers) if self.extra_headers is not None else [ORIGIN]
        self.comm = WebsocketCommunicator(
            application, f"/ws/campaigns/{self.campaign_id}/{query}", headers=headers
        )
        return await self.comm.connect()


async def _token(user, lifetime: timedelta | None = None) -> str:
    return await sync_to_async(access_for)(user, lifetime)


async def test_a_valid_token_joins_the_room(campaign, alice):
    room = TokenRoom(campaign.id, await _token(alice))
    connected, _ = await room.open()
    assert connected
    messages = await room.hello(0)
    assert messages[-1]["type"] == "server.ready"
    action_id = str(uuid.uuid4())
    await room.send({"type": "client.player_action", "action_id": action_id, "text": "I wave"})
    ack = (await room.recv_until(lambda m: m["type"] == "server.ack"))[-1]
    assert ack["action_id"] == action_id
    await room.close()


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
async def test_bad_tokens_are_closed_with_4401(campaign, alice, kind):
    room = TokenRoom(campaign.id, await sync_to_async(bad_token)(kind, alice))
    connected, _ = await room.open()
    assert connected
    assert await room.closed_with() == 4401
    await room.close()


async def test_an_empty_token_is_closed_with_4401(campaign, alice):
    room = TokenRoom(campaign.id, "")
    await room.open()
    assert await room.closed_with() == 4401
    await room.close()


async def test_a_bad_token_wins_over_a_good_session_cookie(campaign, alice):
    """A client that sends a token means that token."""
    room = Room(campaign.id, alice)
    forged = await sync_to_async(bad_token)("wrong_key", alice)
    await room.open()  # the cookie alone is fine...
    await room.hello(0)
    await room.close()
    cookie_room = TokenRoom(campaign.id, forged)
    cookie_room.user = alice
    # ...but the same cookie with a forged token is refused.
    key = await sync_to_async(_session_cookie)(alice)
    cookie_room.extra_headers = [ORIGIN, (b"cookie", f"sessionid={key}".encode())]
    await cookie_room.open()
    assert await cookie_room.closed_with() == 4401
    await cookie_room.close()


async def test_a_token_for_an_outsider_is_closed_with_4403(campaign, make_user):
    outsider = await sync_to_async(make_user)("mallory")
    room = TokenRoom(campaign.id, await _token(outsider))
    await room.open()
    assert await room.closed_with() == 4403
    await room.close()


async def test_a_token_for_a_deactivated_account_is_closed_with_4401(campaign, alice):
    token = await _token(alice)
    alice.is_active = False
    await sync_to_async(alice.save)()
    room = TokenRoom(campaign.id, token)
    await room.open()
    assert await room.closed_with() == 4401
    await room.close()


@pytest.mark.parametrize("message_type", sorted(MESSAGE_MODELS))
async def test_a_token_that_expires_closes_at_the_next_message(campaign, alice, message_type):
    room = TokenRoom(campaign.id, await _token(alice, timedelta(seconds=2)))
    await room.open()
    await room.hello(0)
    await asyncio.sleep(2.1)
    action_id = str(uuid.uuid4())
    await room.send(
        {"type": message_type, "last_seq": 0, "action_id": action_id, "text": "I sneak in"}
    )
    assert await _close_code(room) == 4401
    await room.close()
    stored = await sync_to_async(
        Event.objects.filter(campaign_id=campaign.id, type="player_action").count
    )()
    assert stored == 0


async def _close_code(room: Room) -> int | None:
    """The close code, after any presence updates still queued; nothing else may come."""
    while True:
        output = await room.comm.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            return output.get("code")
        assert json.loads(output["text"])["type"] == "presence", output


def test_token_verification_needs_no_database(alice, django_assert_max_num_queries):
    token = access_for(alice)
    bad = [bad_token(kind, alice) for kind in BAD_TOKEN_KINDS]
    with django_assert_max_num_queries(0):
        claims = access_claims(token)
        assert [access_claims(b) for b in bad] == [None] * len(bad)
    assert claims["user_id"] == str(alice.id)


# --- Tokens never reach a log -------------------------------------------------------------


def test_our_log_lines_carry_no_token(alice):
    token = access_for(alice)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    assert handlers
    stream = io.StringIO()
    old = handlers[0].setStream(stream)
    try:
        logging.getLogger("django.channels.server").warning(
            "WebSocket HANDSHAKING %(path)s [%(client)s]",
            {"path": f"/ws/campaigns/x/?token={token}", "client": "1.2.3.4:5"},
        )
        logging.getLogger("rpgai.test").error("Authorization: Bearer %s", token)
        logging.getLogger("rpgai.test").error("refresh body %s", {"refresh": token})
    finally:
        handlers[0].setStream(old)
    output = stream.getvalue()
    assert "/ws/campaigns/x/?token=[redacted]" in output, output
    assert token not in output
    assert token.split(".")[2] not in output


def test_daphne_access_log_never_prints_the_token(campaign, alice, tmp_path):
    """The real server, as deployed: a WebSocket session and plain HTTP requests carrying
    `?token=`; neither the access log nor the server's own output shows it."""
    token = access_for(alice)
    signature = token.split(".")[2]
    port = free_port()
    access_log = tmp_path / "access.log"
    command = [sys.executable, "-m", "daphne", "-v", "2", "--access-log", str(access_log)]
    command += ["-b", "127.0.0.1", "-p", str(port), "rpgai.asgi:application"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=test_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_port(port, proc)
        asyncio.run(_play(port, campaign.id, token))
        for path in (f"/ws/campaigns/{campaign.id}/", "/api/campaigns/"):
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{path}?token={token}&x=1", timeout=10
                )
        time.sleep(0.5)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    log = access_log.read_text()
    assert f"WSCONNECT /ws/campaigns/{campaign.id}/" in log, log
    assert '"GET /api/campaigns/" 401' in log, log
    for text in (log, output.decode(errors="replace")):
        assert signature not in text
        assert "token=" not in text or "token=[redacted]" in text


async def _play(port: int, campaign_id, token: str) -> None:
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/?token={token}",
        origin=f"http://127.0.0.1:{port}",
    ) as ws:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "server.ready":
                pass
