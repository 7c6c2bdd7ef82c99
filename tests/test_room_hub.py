"""The room hub (realtime/hub.py) across two daphne processes on PostgreSQL and Redis.

One Redis subscription per room per process (counted by Redis itself), every member gets
every event once and in order, and what the hub loses or reorders (a message that never
came, a late copy, a subscription Redis dropped) is read back from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import InMemoryChannelLayer, channel_layers
from django.conf import settings as django_settings
from redis import asyncio as aioredis

from campaigns import selectors
from campaigns.events import NewEvent
from campaigns.services import events_append
from tests.processes import daphne, free_port
from tests.ws import _session_cookie

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

MEMBERS = 300


@pytest.fixture
def hub_prefix(settings: Any) -> str:
    """This test's own hub (Redis pub/sub channels are shared by every database number,
    and other runs may use the same Redis): the test process publishes through it too."""
    prefix = f"test-hub-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.hub.RoomHubLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "prefix": prefix},
        }
    }
    channel_layers.backends.clear()
    return prefix


@contextlib.contextmanager
def two_hub_processes(prefix: str) -> Iterator[tuple[int, int]]:
    ports = free_port(), free_port()
    env = {"TASKS_IN_PROCESS": "1", "CHANNEL_LAYER": "hub", "CHANNEL_LAYER_PREFIX": prefix}
    with daphne(ports[0], **env), daphne(ports[1], **env):
        yield ports


def _version(campaign_id: Any) -> int:
    snapshot = selectors.snapshot_get(campaign_id=campaign_id)
    return snapshot.version if snapshot else 0


async def _open(port: int, campaign_id: Any, key: str, last_seq: int) -> Any:
    """A member's socket past `client.hello` (from `last_seq`: no backlog to read)."""
    import websockets

    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={key}"},
        open_timeout=60,
        ping_interval=None,
        max_size=None,
        # Takes in whatever comes, read or not (as a browser does): the first sockets wait
        # for the others to open, and the presence lists of 300 members add up.
        max_queue=None,
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": last_seq}))
    async with asyncio.timeout(60):
        while json.loads(await ws.recv())["type"] != "server.ready":
            pass
    return ws


async def _seqs_through(ws: Any, last: int, timeout: float = 60) -> list[int]:
    """The seqs of the events this socket is sent, up to `last`."""
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < last:
            message = json.loads(await ws.recv())
            if message["type"] == "event":
                seqs.append(message["event"]["seq"])
    return seqs


def _cues(*names: str) -> list[NewEvent]:
    return [NewEvent("audio_cue", {"cue": name, "volume": 0.5}) for name in names]


def _append(campaign_id: Any, *names: str) -> list[Any]:
    return events_append(campaign_id=campaign_id, events=_cues(*names))


def _append_unheard(campaign_id: Any, *names: str) -> list[Any]:
    """Commit events whose message never reaches the room (an in-memory layer nobody
    listens on takes the broadcast): lost in transit, as Redis may lose it."""
    hub = channel_layers["default"]
    channel_layers.backends["default"] = InMemoryChannelLayer()
    try:
        return [_append(campaign_id, name)[0] for name in names]
    finally:
        channel_layers.backends["default"] = hub


async def _numsub(channel: str) -> int:
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        [(_, count)] = await redis.pubsub_numsub(channel)
        return int(count)
    finally:
        await redis.aclose()


async def _until_subscribers(channel: str, count: int) -> None:
    """Wait (20 s at most) until `count` connections subscribe to `channel`."""
    for _ in range(200):
        if await _numsub(channel) == count:
            return
        await asyncio.sleep(0.1)
    assert await _numsub(channel) == count


def _room_channel(campaign_id: Any) -> str:
    from channels.layers import get_channel_layer

    return get_channel_layer().subscription_name(selectors.group_name(campaign_id))


async def _close(sockets: list[Any]) -> None:
    async def close(ws: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 10)

    await asyncio.gather(*(close(ws) for ws in sockets))


async def _publish(campaign_id: Any, events: list[Any]) -> None:
    """One room message of these committed events, straight through the hub."""
    from channels.layers import get_channel_layer

    envelopes = [selectors.event_envelope(e) for e in events]
    await get_channel_layer().group_send(
        selectors.group_name(campaign_id), {"type": "campaign.events", "events": envelopes}
    )


# --- Every member, every event, once, in order; one subscription per process -------------


async def test_300_members_on_two_processes_get_every_event_once_in_order(
    campaign, join, make_user, hub_prefix
):
    def members() -> list[str]:
        keys = []
        for i in range(MEMBERS):
            user = make_user(f"member-{i}")
            join(user, f"Member {i}")
            keys.append(_session_cookie(user))
        return keys

    keys = await sync_to_async(members)()
    start = await sync_to_async(_version)(campaign.id)
    sockets: list[Any] = []
    with two_hub_processes(hub_prefix) as ports:
        try:
            for i in range(0, MEMBERS, 25):  # a crowd arrives in batches
                sockets += await asyncio.gather(
                    *(
                        _open(ports[j % 2], campaign.id, keys[j], start)
                        for j in range(i, min(i + 25, MEMBERS))
                    )
                )
            # Redis itself counts who listens on the room: one subscription per process,
            # not one per socket.
            assert await _numsub(_room_channel(campaign.id)) == 2

            # 30 events: one transaction each, and some of several events at once.
            appended: list[Any] = []
            for k in range(20):
                appended += await sync_to_async(_append)(campaign.id, f"single-{k}")
            for k in range(5):
                appended += await sync_to_async(_append)(campaign.id, f"a-{k}", f"b-{k}")
            expected = [e.seq for e in appended]
            assert expected == list(range(start + 1, start + 31))

            got = await asyncio.gather(*(_seqs_through(ws, expected[-1]) for ws in sockets))
            wrong = [i for i, seqs in enumerate(got) if seqs != expected]
            assert not wrong, f"{len(wrong)} members got another run, e.g. {got[wrong[0]]}"
        finally:
            await _close(sockets)
        # The last socket of the room gone from a process: its subscription goes too.
        await _until_subscribers(_room_channel(campaign.id), 0)


# --- What the hub loses or reorders comes from the database --------------------------------


async def test_dropped_and_reordered_hub_messages_are_filled_from_the_database(
    campaign, alice, bob, hub_prefix
):
    keys = [await sync_to_async(_session_cookie)(user) for user in (alice, bob)]
    start = await sync_to_async(_version)(campaign.id)
    with two_hub_processes(hub_prefix) as ports:
        sockets = [
            await _open(port, campaign.id, key, start)
            for port, key in zip(ports, keys, strict=True)
        ]
        try:
            lost = await sync_to_async(_append_unheard)(campaign.id, "one", "two", "three")
            # Only the third comes: the first two are read from the database before it.
            await _publish(campaign.id, lost[2:])
            # A late copy of the first, and a fourth and fifth that come in reverse order.
            later = await sync_to_async(_append_unheard)(campaign.id, "four", "five")
            await _publish(campaign.id, lost[:1])
            await _publish(campaign.id, later[1:])
            await _publish(campaign.id, later[:1])
            # Then the room goes on as usual.
            last = (await sync_to_async(_append)(campaign.id, "six"))[-1]
            expected = list(range(start + 1, last.seq + 1))
            assert len(expected) == 6
            for ws in sockets:
                assert await _seqs_through(ws, last.seq) == expected
        finally:
            await _close(sockets)


async def _cut_hub_subscriptions(prefix: str) -> int:
    """Close the hub's subscription connections (as a Redis restart or a network cut
    does); how many were cut."""
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        cut = 0
        for client in await redis.client_list():
            if client.get("name", "").startswith(prefix + ".") and int(client.get("sub", 0)):
                await redis.client_kill_filter(_id=client["id"])
                cut += 1
        return cut
    finally:
        await redis.aclose()


async def test_a_lost_subscription_is_renewed_and_what_it_missed_is_read(
    campaign, alice, bob, hub_prefix
):
    keys = [await sync_to_async(_session_cookie)(user) for user in (alice, bob)]
    start = await sync_to_async(_version)(campaign.id)
    with two_hub_processes(hub_prefix) as ports:
        sockets = [
            await _open(port, campaign.id, key, start)
            for port, key in zip(ports, keys, strict=True)
        ]
        try:
            # Committed while the subscriptions are about to go: their message is lost.
            [missed] = await sync_to_async(_append_unheard)(campaign.id, "in the dark")
            assert await _cut_hub_subscriptions(hub_prefix) == 2
            # Nothing else is sent: only the hub's renewed subscription can bring it.
            for ws in sockets:
                assert await _seqs_through(ws, missed.seq, timeout=20) == [missed.seq]
            await _until_subscribers(_room_channel(campaign.id), 2)
            # And the room streams on through the renewed subscriptions.
            [after] = await sync_to_async(_append)(campaign.id, "lights")
            for ws in sockets:
                assert await _seqs_through(ws, after.seq) == [after.seq]
        finally:
            await _close(sockets)
