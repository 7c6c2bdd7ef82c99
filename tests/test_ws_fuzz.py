"""Abuse of the room (issue 10): a bounded, seeded fuzzer over the real ASGI application.

Random and binary frames, huge frames, deep JSON, odd unicode and wrong types for every
field of every client message type. Each bad message is answered with one `error`
(never `internal_error`), the connection stays open, valid actions sent in between are
acked, and afterwards the log is gapless and every acked action is in it, seen live by
another member.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async

from campaigns import selectors
from campaigns.models import Event
from rpgai.tasks import wait_idle
from tests.ws import Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 1010
MAX_MESSAGES = 400  # bounded in count ...
MAX_SECONDS = 40.0  # ... and in time
BAD_CODES = {"invalid_message", "too_large"}

ODD_UNICODE = [
    "\u202eevil\u202c",  # right-to-left override
    "\u200b\u200c\u200d\ufeff",  # zero-width characters and BOM
    "שלום عليكم",  # RTL scripts
    "e\u0301\u0301\u0301",  # stacked combining marks
    "😀" * 50,  # astral plane
    "\u0000",  # NUL
    "a\u0000b",
    "\ud800",  # lone high surrogate
    "x\udfffy",  # lone low surrogate
    "\uffff\ufffe",  # non-characters
]

WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**70,
    -(2**70),
    "",
    "   ",
    "not-a-uuid",
    "1e309",
    "x" * 2001,
    [],
    [1, 2],
    {},
    {"$gt": ""},
    *ODD_UNICODE,
]

# Every field of every client message type, with a valid value.
MESSAGE_FIELDS: dict[str, dict[str, Any]] = {
    "client.hello": {"last_seq": 0},
    "client.player_action": {"action_id": "uuid", "text": "I look around."},
    "client.whisper": {"to": "gm", "text": "Psst."},
    "client.ping": {},
}


def _wrong_for(field: str, value: Any) -> bool:
    """True when `value` must be refused for `field` of its message type."""
    if field == "last_seq":
        # Any non-negative int is a valid last_seq (one past the end means "from now").
        # true/false are refused (realtime/messages.py is strict), though Python's bool is an int.
        return not (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if field == "action_id":
        return True  # none of WRONG_VALUES is a uuid
    if field == "to":
        # a string naming no one is the whisper service's business; here only bad types
        return not isinstance(value, str) or not value or len(value) > 40
    if field == "text":
        return not (
            isinstance(value, str)
            and value.strip()
            and len(value) <= 2000
            and "\u0000" not in value
            and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        )
    raise AssertionError(field)


def _deep(depth: int, rng: random.Random) -> str:
    """Nesting deeper than any parser should follow (still under the 16 KiB limit, or
    over it for the deepest)."""
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"type": "client.ping", "x": ' + '{"a":' * depth + "1" + "}" * depth + "}"


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = '{}[]":,0123456789.-eEtrufalsn \\u\n\t' + "".join(ODD_UNICODE[:5])
    return "".join(rng.choice(alphabet) for _ in range(n))


def _bad_messages(rng: random.Random) -> Any:
    """Endless (kind, text, bytes, expected) tuples; `expected` is the error code or None
    for "an error of any bad-input code"."""
    limit = 16 * 1024
    while True:
        roll = rng.random()
        if roll < 0.10:
            yield "binary", None, rng.randbytes(rng.randint(0, 512)), "invalid_message"
        elif roll < 0.15:
            yield "huge-binary", None, rng.randbytes(limit + rng.randint(1, 4096)), "too_large"
        elif roll < 0.20:
            big = json.dumps({"type": "client.ping", "pad": "x" * (limit + rng.randint(1, 9))})
            yield "huge-text", big, None, "too_large"
        elif roll < 0.30:
            yield "deep", _deep(rng.choice([2000, 2500, 8000, 50000]), rng), None, None
        elif roll < 0.40:
            yield "garbage", _random_text(rng, rng.randint(1, 200)), None, "invalid_message"
        elif roll < 0.47:
            value = rng.choice(["1", '"x"', "null", "[]", "[{}]", "true", '"\\ud800"', " "])
            yield "not-object", value, None, "invalid_message"
        elif roll < 0.55:
            kind = rng.choice([None, 1, [], {}, "client.nope", "server.ack", "", *ODD_UNICODE])
            yield "bad-type", json.dumps({"type": kind}), None, "invalid_message"
        else:
            mtype = rng.choice([t for t, f in MESSAGE_FIELDS.items() if f])
            fields = {
                k: (str(uuid.uuid4()) if k == "action_id" else v)
                for k, v in MESSAGE_FIELDS[mtype].items()
            }
            field = rng.choice(list(fields))
            value = rng.choice(WRONG_VALUES)
            if not _wrong_for(field, value):
                continue
            message = {"type": mtype, **fields, field: value}
            if rng.random() < 0.2:
                del message[field]  # a missing field
                if field == "last_seq":
                    continue  # last_seq defaults to 0
            yield f"wrong:{mtype}.{field}", json.dumps(message), None, "invalid_message"


async def _answer(room: Room) -> dict[str, Any]:
    """The next message that is not presence nor a live event."""
    while True:
        message = await room.recv(timeout=5)
        if message["type"] not in {"presence", "event", "narration.delta"}:
            return message


@pytest.fixture
def roomy(settings):
    """No rate limits: the fuzzer tests the parser, not the throttle."""
    settings.WS_THROTTLE = {
        "connection": (10**6, 10**6),
        "user": (10**6, 10**6),
        "campaign": (10**6, 10**6),
    }


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


async def test_fuzzed_frames_get_errors_and_lose_no_event(roomy, campaign, alice, bob):
    rng = random.Random(SEED)
    fuzzer = Room(campaign.id, alice)
    observer = Room(campaign.id, bob)
    assert (await fuzzer.open())[0] and (await observer.open())[0]
    await fuzzer.hello(0)
    await observer.hello(0)
    acked: dict[str, int] = {}
    kinds: dict[str, int] = {}
    started = time.monotonic()
    bad = _bad_messages(rng)
    sent = 0
    while sent < MAX_MESSAGES and time.monotonic() - started < MAX_SECONDS:
        sent += 1
        if sent % 25 == 0:  # a valid action now and then: acked in the middle of the abuse
            action_id = str(uuid.uuid4())
            text = rng.choice(ODD_UNICODE[:5]) + f" I act ({sent})"
            await fuzzer.send(
                {"type": "client.player_action", "action_id": action_id, "text": text}
            )
            answer = await _answer(fuzzer)
            assert answer["type"] == "server.ack", answer
            assert answer["action_id"] == action_id
            acked[action_id] = answer["seq"]
            continue
        kind, text, data, expected = next(bad)
        kinds[kind.split(":")[0]] = kinds.get(kind.split(":")[0], 0) + 1
        await fuzzer.send_raw(text=text, data=data)
        answer = await _answer(fuzzer)
        assert answer["type"] == "error", (kind, (text or "")[:200], answer)
        assert answer["code"] in BAD_CODES, (kind, (text or "")[:200], answer)
        if expected:
            assert answer["code"] == expected, (kind, (text or "")[:200], answer)
        # the connection is still open and still answers
        if sent % 50 == 1:
            await fuzzer.send({"type": "client.ping"})
            assert (await _answer(fuzzer))["type"] == "server.pong"

    assert sent >= 100, f"only {sent} messages in {MAX_SECONDS} s"
    assert {"binary", "huge-binary", "huge-text", "deep", "garbage", "wrong"} <= set(kinds)

    # After the abuse, a normal action is acked and every event is there, gapless.
    action_id = str(uuid.uuid4())
    await fuzzer.send(
        {"type": "client.player_action", "action_id": action_id, "text": "I sheathe my sword."}
    )
    answer = await _answer(fuzzer)
    assert answer["type"] == "server.ack", answer
    acked[action_id] = answer["seq"]

    last = max(acked.values())
    seen = await observer.recv_until(
        lambda m: m["type"] == "event" and m["event"]["seq"] >= last, timeout=20
    )
    live = events_of(seen)
    seqs = [e["seq"] for e in live]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate in live stream"

    def stored() -> tuple[list[int], dict[str, int], int]:
        rows = list(Event.objects.filter(campaign_id=campaign.id).order_by("seq"))
        actions = {e.payload["action_id"]: e.seq for e in rows if e.type == "player_action"}
        version = selectors.snapshot_get(campaign_id=campaign.id).version
        return [e.seq for e in rows], actions, version

    await wait_idle(timeout=30)  # the DM turns the actions started
    all_seqs, actions, version = await sync_to_async(stored)()
    assert all_seqs == list(range(1, len(all_seqs) + 1))
    assert version == all_seqs[-1]
    assert actions == acked, "an acked action is missing, or something bad was stored"
    live_actions = {
        e["payload"]["action_id"]: e["seq"] for e in live if e["type"] == "player_action"
    }
    assert live_actions == acked

    # A fresh connection catches up on the same, complete log.
    late = Room(campaign.id, bob)
    await late.open()
    caught_up = events_of(await late.hello(0))
    assert [e["seq"] for e in caught_up] == list(range(1, len(caught_up) + 1))
    assert caught_up[-1]["seq"] >= last
    for room in (fuzzer, observer, late):
        await room.close()


@pytest.mark.parametrize("text", ODD_UNICODE)
async def test_odd_unicode_action_is_stored_exactly_or_refused(roomy, campaign, alice, text):
    """Text a player may type (RTL, zero-width, emoji) is stored as sent; what no database
    can store faithfully (NUL, lone surrogates) is refused with invalid_message."""
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    action_id = str(uuid.uuid4())
    body = f"I say {text} loudly"
    await room.send({"type": "client.player_action", "action_id": action_id, "text": body})
    answer = await _answer(room)
    if _wrong_for("text", body):
        assert answer["type"] == "error" and answer["code"] == "invalid_message", answer
        assert answer.get("action_id") == action_id
        count = await sync_to_async(
            Event.objects.filter(campaign_id=campaign.id, type="player_action").count
        )()
        assert count == 0
    else:
        assert answer["type"] == "server.ack", answer
        event = await sync_to_async(Event.objects.get)(campaign_id=campaign.id, seq=answer["seq"])
        assert event.payload["text"] == body.strip()
    await room.close()
    # The DM turn the action started runs on this loop: let it end before the database is
    # flushed (a turn still writing then deadlocks the flush on PostgreSQL).
    await wait_idle(timeout=30)


async def test_fuzzing_one_room_does_not_disturb_another_connection(roomy, campaign, alice, bob):
    """While one connection floods bad frames, another member's action goes through."""
    rng = random.Random(SEED + 1)
    fuzzer = Room(campaign.id, alice)
    player = Room(campaign.id, bob)
    await fuzzer.open()
    await player.open()
    await fuzzer.hello(0)
    await player.hello(0)
    bad = _bad_messages(rng)

    async def flood() -> None:
        for _ in range(60):
            _, text, data, _ = next(bad)
            await fuzzer.send_raw(text=text, data=data)
            await asyncio.sleep(0)

    action_id = str(uuid.uuid4())
    flooding = asyncio.create_task(flood())
    await player.send({"type": "client.player_action", "action_id": action_id, "text": "I hide."})
    answer = await _answer(player)
    await flooding
    assert answer["type"] == "server.ack" and answer["action_id"] == action_id
    errors = 0
    while errors < 60:
        message = await _answer(fuzzer)
        assert message["type"] == "error" and message["code"] in BAD_CODES, message
        errors += 1
    await fuzzer.send({"type": "client.ping"})
    assert (await _answer(fuzzer))["type"] == "server.pong"
    await fuzzer.close()
    await player.close()


@pytest.mark.parametrize("text", ["a\u0000b", "x\udfffy"])
def test_unstorable_action_text_is_refused_over_http_too(campaign, alice, text):
    """The same rule holds on `POST /api/campaigns/<id>/actions` (a 400, never a 500)."""
    from rest_framework.test import APIClient

    from tests.auth_tools import access_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_for(alice)}")
    response = client.post(
        f"/api/campaigns/{campaign.id}/actions",
        data=json.dumps({"action_id": str(uuid.uuid4()), "text": text}),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert not Event.objects.filter(campaign_id=campaign.id, type="player_action").exists()


@pytest.mark.services
async def test_fuzzed_frames_over_a_real_daphne(campaign, alice):
    """The same abuse through a real server and a real client: frames as the wire has
    them (binary, 1 MiB text, deep JSON, escaped lone surrogates), then a normal action."""
    import websockets
    from django.conf import settings as django_settings

    from tests.processes import daphne, free_port
    from tests.ws import _session_cookie

    port = free_port()
    key = await sync_to_async(_session_cookie)(alice)
    rng = random.Random(SEED + 2)
    frames: list[str | bytes] = [
        rng.randbytes(300),
        b"\xff\xfe\x00",
        "x" * (1024 * 1024),
        "[" * 8000 + "]" * 8000,
        json.dumps({"type": "client.player_action", "action_id": str(uuid.uuid4())})[:-1]
        + ', "text": "a\\ud800b"}',
        '{"type": "\\ud800"}',
        '{"type": "client.hello", "last_seq": "\\u0000"}',
    ]
    env = {
        "TASKS_IN_PROCESS": "1",
        "WS_THROTTLE_CONNECTION_BURST": "100000",
        "WS_THROTTLE_USER_BURST": "100000",
        "WS_THROTTLE_CAMPAIGN_BURST": "100000",
    }
    with daphne(port, **env):
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/campaigns/{campaign.id}/",
            origin=f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={key}"},
            max_size=None,
        ) as ws:

            async def answer() -> dict:
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads(await ws.recv())
                        if message["type"] not in {"presence", "event", "narration.delta"}:
                            return message

            await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
            assert (await answer())["type"] == "server.ready"
            for frame in frames:
                await ws.send(frame)
                reply = await answer()
                assert reply["type"] == "error" and reply["code"] in BAD_CODES, (frame[:80], reply)
            action_id = str(uuid.uuid4())
            await ws.send(
                json.dumps(
                    {"type": "client.player_action", "action_id": action_id, "text": "I rest."}
                )
            )
            ack = await answer()
            assert ack["type"] == "server.ack" and ack["action_id"] == action_id
    seqs = await sync_to_async(
        lambda: list(Event.objects.filter(campaign_id=campaign.id).values_list("seq", flat=True))
    )()
    seqs.sort()
    assert seqs == list(range(1, len(seqs) + 1)) and ack["seq"] in seqs
