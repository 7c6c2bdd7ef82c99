"""Rate and size limits: login brute force, register, refresh (429 + Retry-After), the
client address behind a proxy, WebSocket token buckets (a flood is refused without
slowing the others), model calls per minute, and request body sizes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.test import Client
from rest_framework.test import APIClient

from campaigns.models import Event
from realtime import throttle
from tests.asgi_http import asgi_request
from tests.auth_tools import isolate_limits
from tests.processes import ROOT
from tests.ws import Room

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


def _assert_429(response) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "rate_limited"
    assert set(response.json()) == {"detail", "code"}
    assert int(response["Retry-After"]) >= 1


def _login(client, username: str, password: str, ip: str = "10.0.0.1", **extra):
    return client.post(
        "/api/auth/token",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=ip,
        **extra,
    )


# --- Login, register, refresh ---------------------------------------------------------------


def test_login_brute_force_on_one_account_is_throttled_from_any_address(settings, make_user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_username": "5/m", "login_ip": "100/m"}
    make_user("alice", PASSWORD)
    api = APIClient()
    for attempt in range(5):
        assert _login(api, "alice", f"guess-{attempt}", ip=f"10.0.0.{attempt}").status_code == 401
    _assert_429(_login(api, "alice", "guess-5", ip="10.0.1.1"))
    # Even the right password waits now; other accounts do not.
    _assert_429(_login(api, "ALICE ", PASSWORD, ip="10.0.1.2"))
    make_user("bob", PASSWORD)
    assert _login(api, "bob", PASSWORD, ip="10.0.1.3").status_code == 200


def test_login_from_one_address_is_throttled_across_accounts(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_ip": "4/m"}
    api = APIClient()
    for n in range(4):
        assert _login(api, f"user{n}", "x-password").status_code == 401
    _assert_429(_login(api, "user9", "x-password"))
    assert _login(api, "user9", "x-password", ip="10.9.9.9").status_code == 401


def test_the_login_page_shares_the_counters_and_answers_429(settings, make_user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_username": "3/m"}
    make_user("alice", PASSWORD)
    page = Client()
    for _ in range(2):
        response = page.post("/login/", {"username": "alice", "password": "nope"})
        assert response.status_code == 200  # the form again, with its error
    assert _login(APIClient(), "alice", "nope").status_code == 401
    _assert_429(page.post("/login/", {"username": "alice", "password": PASSWORD}))


def test_register_is_throttled_per_address(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "register_ip": "3/h"}
    api = APIClient()

    def register(n: int, ip: str = "10.0.0.1"):
        return api.post(
            "/api/auth/register",
            {"username": f"player{n}", "password": PASSWORD},
            format="json",
            REMOTE_ADDR=ip,
        )

    assert [register(n).status_code for n in range(3)] == [201, 201, 201]
    _assert_429(register(3))
    assert register(4, ip="10.0.0.2").status_code == 201
    # The signup page counts against the same limit.
    _assert_429(Client(REMOTE_ADDR="10.0.0.1").post("/signup/", {"username": "x"}))


def test_refresh_is_throttled_per_address(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "refresh_ip": "2/m"}
    api = APIClient()
    for _ in range(2):
        response = api.post("/api/auth/token/refresh", {"refresh": "junk"}, format="json")
        assert response.status_code == 401
    _assert_429(api.post("/api/auth/token/refresh", {"refresh": "junk"}, format="json"))


@pytest.mark.parametrize(
    ("header", "expected_separate"),
    [
        # Each client behind the proxy counts on its own (the last address is the proxy's
        # own view of the client).
        (["203.0.113.1", "203.0.113.2"], True),
        (["198.51.100.7, 203.0.113.1", "198.51.100.7, 203.0.113.2"], True),
        # A forged first entry does not buy a fresh counter.
        (["1.1.1.1, 203.0.113.1", "2.2.2.2, 203.0.113.1"], False),
    ],
)
def test_the_client_address_comes_from_the_configured_proxy_header(
    settings, header, expected_separate
):
    settings.RATELIMIT_IP_META_KEY = "HTTP_X_FORWARDED_FOR"
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_ip": "2/m"}
    api = APIClient()
    first, second = header
    for n in range(2):
        _login(api, f"u{n}", "x-password", HTTP_X_FORWARDED_FOR=first)
    response = _login(api, "u9", "x-password", HTTP_X_FORWARDED_FOR=second)
    assert response.status_code == (401 if expected_separate else 429)


def test_a_garbage_proxy_header_is_no_error(settings):
    settings.RATELIMIT_IP_META_KEY = "HTTP_X_FORWARDED_FOR"
    api = APIClient()
    for value in ("not an address", "", "999.1.1.1", "::::"):
        assert _login(api, "u", "x-password", HTTP_X_FORWARDED_FOR=value).status_code == 401
    assert _login(api, "u", "x-password").status_code == 401  # header missing


def test_limits_can_be_switched_off(settings):
    settings.RATELIMIT_ENABLE = False
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_ip": "1/m"}
    api = APIClient()
    assert [_login(api, "u", "x-password").status_code for _ in range(3)] == [401] * 3


# --- WebSocket token buckets ----------------------------------------------------------------


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


@pytest.fixture
def bob(make_user, join):
    user = make_user("bob")
    join(user, "Bob")
    return user


async def _answers(room: Room, count: int) -> list[dict]:
    """The next `count` answers to pings (pong or error), presence updates skipped."""
    answers: list[dict] = []
    while len(answers) < count:
        message = await room.recv()
        if message["type"] in ("server.pong", "error"):
            answers.append(message)
    return answers


@pytest.mark.django_db(transaction=True)
async def test_a_flood_is_refused_without_closing_or_slowing_the_others(campaign, alice, bob):
    flooder, player = Room(campaign.id, alice), Room(campaign.id, bob)
    await flooder.open()
    await player.open()
    await flooder.hello(0)
    await player.hello(0)
    for _ in range(100):
        await flooder.send({"type": "client.ping"})
    answers = await _answers(flooder, 100)
    refused = [a for a in answers if a["type"] == "error"]
    assert refused and all(a["code"] == "rate_limited" for a in refused)
    assert len(refused) >= 50  # the burst is 20, the refill 5 per second
    # The other player acts at once, as if nothing happened.
    for n in range(3):
        action_id = str(uuid.uuid4())
        await player.send(
            {"type": "client.player_action", "action_id": action_id, "text": f"I step {n}"}
        )
        messages = await player.recv_until(
            lambda m: m["type"] in ("server.ack", "error"), timeout=5
        )
        # Accepted (the ack may add that it waits behind their earlier actions).
        assert messages[-1]["type"] == "server.ack" and messages[-1]["action_id"] == action_id
    # The flooder is still connected, and served again after a pause.
    await asyncio.sleep(0.5)
    await flooder.send({"type": "client.ping"})
    assert (await _answers(flooder, 1))[0]["type"] == "server.pong"
    await flooder.close()
    await player.close()


@pytest.mark.django_db(transaction=True)
async def test_a_refused_action_is_not_processed_and_names_its_action_id(campaign, alice, settings):
    settings.WS_THROTTLE = {**settings.WS_THROTTLE, "connection": (3, 0.01)}
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)  # takes one token
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for action_id in ids:
        await room.send({"type": "client.player_action", "action_id": action_id, "text": "Go"})
    answers = []
    while len(answers) < 4:
        message = await room.recv(timeout=10)
        if message["type"] in ("server.ack", "error"):
            answers.append(message)
    acked = [a["action_id"] for a in answers if a["type"] == "server.ack"]
    refused = [a for a in answers if a["type"] == "error"]
    assert acked == ids[:2]
    assert [(a["code"], a["action_id"]) for a in refused] == [("rate_limited", i) for i in ids[2:]]
    stored = await sync_to_async(
        lambda: sorted(
            e.payload["action_id"]
            for e in Event.objects.filter(campaign_id=campaign.id, type="player_action")
        )
    )()
    assert stored == sorted(ids[:2])
    await room.close()


@pytest.mark.django_db(transaction=True)
async def test_one_users_tabs_share_a_bucket(campaign, alice, settings):
    settings.WS_THROTTLE = {**settings.WS_THROTTLE, "user": (6, 0.01)}
    tabs = [Room(campaign.id, alice) for _ in range(3)]
    for tab in tabs:
        await tab.open()
    for tab in tabs:
        for _ in range(3):
            await tab.send({"type": "client.ping"})
    answers = [a for tab in tabs for a in await _answers(tab, 3)]
    assert sum(a["type"] == "server.pong" for a in answers) == 6
    for tab in tabs:
        await tab.close()


@pytest.mark.django_db(transaction=True)
async def test_the_campaign_bucket_bounds_a_whole_room(campaign, alice, bob, settings):
    settings.WS_THROTTLE = {**settings.WS_THROTTLE, "campaign": (4, 0.01)}
    rooms = [Room(campaign.id, alice), Room(campaign.id, bob)]
    for room in rooms:
        await room.open()
    for room in rooms:
        for _ in range(3):
            await room.send({"type": "client.ping"})
    answers = [a for room in rooms for a in await _answers(room, 3)]
    assert sum(a["type"] == "server.pong" for a in answers) == 4
    for room in rooms:
        await room.close()


def test_buckets_refuse_all_or_nothing():
    """A message refused by one bucket takes nothing from the others: a flooding
    player cannot drain the campaign's bucket for everyone."""
    room = throttle.Bucket(f"t:room:{uuid.uuid4()}", 3, 0.001)
    player = throttle.Bucket(f"t:player:{uuid.uuid4()}", 1, 0.001)
    other = throttle.Bucket(f"t:other:{uuid.uuid4()}", 10, 0.001)
    assert throttle.take([player, room]).allowed
    for _ in range(10):
        decision = throttle.take([player, room])
        assert not decision.allowed and decision.limited_by == player.key
        assert decision.retry_after > 1
    assert throttle.take([other, room]).allowed
    assert throttle.take([other, room]).allowed
    assert not throttle.take([other, room]).allowed


# --- Model calls ------------------------------------------------------------------------------


def test_model_calls_per_user_and_per_campaign_per_minute(settings):
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 2
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 3
    campaign_id, other_campaign = uuid.uuid4(), uuid.uuid4()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert throttle.model_call_allowed(campaign_id, alice)
    assert throttle.model_call_allowed(campaign_id, alice)
    assert not throttle.model_call_allowed(campaign_id, alice)  # alice's minute is used up
    assert throttle.model_call_allowed(campaign_id, bob)  # the campaign's third call
    assert not throttle.model_call_allowed(campaign_id, bob)  # the campaign's minute is used up
    assert not throttle.model_call_allowed(campaign_id, None)
    assert throttle.model_call_allowed(other_campaign, None)


@pytest.mark.django_db(transaction=True)
async def test_model_calls_from_async_code(settings):
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 1
    campaign_id = uuid.uuid4()
    assert await throttle.amodel_call_allowed(campaign_id, None)
    assert not await throttle.amodel_call_allowed(campaign_id, None)


@pytest.mark.services
def test_buckets_hold_across_processes(settings):
    """On Redis another process sees the tokens this one took."""
    key = f"t:shared:{uuid.uuid4()}"
    code = f"""
import django
django.setup()
from django.conf import settings
settings.THROTTLE_CACHE_PREFIX = {settings.THROTTLE_CACHE_PREFIX!r}
from realtime import throttle
bucket = throttle.Bucket({key!r}, 3, 0.001)
print(sum(throttle.take([bucket]).allowed for _ in range(2)))
"""
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="rpgai.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == "2"
    bucket = throttle.Bucket(key, 3, 0.001)
    assert throttle.take([bucket]).allowed
    assert not throttle.take([bucket]).allowed


# --- Sizes ------------------------------------------------------------------------------------


async def _asgi_post(body_chunks: list[bytes], content_length: int | None) -> tuple[int, dict]:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    status, _, body = await asgi_request("/api/auth/register", body_chunks, headers)
    return status, json.loads(body)


@pytest.mark.django_db(transaction=True)
async def test_an_oversized_body_is_413_before_it_is_read(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    status, body = await _asgi_post([b"{}"], content_length=5000)
    assert status == 413 and body["code"] == "too_large"


@pytest.mark.django_db(transaction=True)
async def test_an_oversized_chunked_body_is_413(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    status, body = await _asgi_post([b" " * 600, b" " * 600, b"{}"], content_length=None)
    assert status == 413 and body["code"] == "too_large"


@pytest.mark.django_db(transaction=True)
async def test_a_body_within_the_limit_goes_through(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    payload = json.dumps({"username": "sizer", "password": PASSWORD}).encode()
    status, body = await _asgi_post([payload], content_length=len(payload))
    assert status == 201, body


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_frame_over_16_kib_is_too_large(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send_raw(text=json.dumps({"type": "client.ping", "pad": "x" * 17000}))
    message = await room.recv_until(lambda m: m["type"] == "error")
    assert message[-1]["code"] == "too_large"
    await room.send({"type": "client.ping"})
    assert (await room.recv_until(lambda m: m["type"] == "server.pong"))[-1]
    await room.close()
