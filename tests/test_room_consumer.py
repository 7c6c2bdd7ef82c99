"""The campaign room over WebSocket: auth, catch-up, actions, bad input, gap filling."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer

from campaigns import selectors, services
from campaigns.events import NewEvent
from rpgai.tasks import wait_idle
from tests.ws import ORIGIN, Room, events_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


async def test_anonymous_is_closed_with_4401(campaign):
    room = Room(campaign.id)
    connected, _ = await room.open()
    assert connected
    assert await room.closed_with() == 4401


async def test_outsider_is_closed_with_4403(campaign, make_user):
    outsider = await sync_to_async(make_user)("mallory")
    room = Room(campaign.id, outsider)
    await room.open()
    assert await room.closed_with() == 4403


async def test_unknown_campaign_is_closed_with_4403(alice):
    room = Room(uuid.uuid4(), alice)
    await room.open()
    assert await room.closed_with() == 4403


async def test_foreign_origin_is_refused(campaign, alice):
    room = Room(campaign.id, alice, headers=[(b"origin", b"https://evil.example")])
    connected, _ = await room.open()
    # Accepted, then closed with 4403: a browser sees that code, not a bare 1006.
    assert connected
    assert await room.closed_with() == 4403


async def test_hello_returns_every_event_then_ready(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    messages = await room.hello(0)
    version = (await sync_to_async(selectors.snapshot_get)(campaign_id=campaign.id)).version
    assert [e["seq"] for e in events_of(messages)] == list(range(1, version + 1))
    assert messages[-1] == {
        "type": "server.ready",
        "seq": version,
        "dm": {"provider": "fake", "model": "fake-dm"},
    }
    first = events_of(messages)[0]
    assert set(first) == {
        "id",
        "campaign_id",
        "seq",
        "type",
        "actor",
        "payload",
        "visibility",
        "request_id",
        "created_at",
    }
    assert first["campaign_id"] == str(campaign.id)
    await room.close()


async def test_catch_up_returns_exactly_the_events_after_last_seq(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    messages = await room.hello(2)
    version = (await sync_to_async(selectors.snapshot_get)(campaign_id=campaign.id)).version
    assert [e["seq"] for e in events_of(messages)] == list(range(3, version + 1))
    messages = await room.hello(version)
    assert events_of(messages) == []
    await room.close()


async def test_action_is_acked_broadcast_and_answered_by_the_dm(campaign, alice, gm):
    me, gm_room = Room(campaign.id, alice), Room(campaign.id, gm)
    await me.open()
    await gm_room.open()
    await me.hello(0)
    await gm_room.hello(0)
    action_id = str(uuid.uuid4())
    await me.send(
        {"type": "client.player_action", "action_id": action_id, "text": "I light a lantern"}
    )
    mine = await me.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    [ack] = [m for m in mine if m["type"] == "server.ack"]
    assert ack["action_id"] == action_id
    [action] = [e for e in events_of(mine) if e["type"] == "player_action"]
    assert action["seq"] == ack["seq"] and action["payload"]["text"] == "I light a lantern"
    assert action["actor"] == {"kind": "player", "user_id": str(alice.id)}
    narration = events_of(mine)[-1]
    assert narration["seq"] > action["seq"]
    assert "I light a lantern" in narration["payload"]["text"]
    assert 3 <= len(narration["payload"]["options"]) <= 6
    theirs = await gm_room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
    )
    assert [e["seq"] for e in events_of(theirs)] == [action["seq"], narration["seq"]]
    await wait_idle()
    await me.close()
    await gm_room.close()


async def test_repeated_action_id_is_appended_once(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    action = {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I wait"}
    await room.send(action)
    first = await room.recv_until(lambda m: m["type"] == "server.ack")
    await room.send(action)
    second = await room.recv_until(lambda m: m["type"] == "server.ack")
    assert first[-1]["seq"] == second[-1]["seq"]
    await wait_idle()
    events = await sync_to_async(selectors.events_after)(campaign_id=campaign.id)
    assert [e.type for e in events].count("player_action") == 1
    await room.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"type": "client.teleport"}', "invalid_message"),
        ('{"type": "client.player_action", "action_id": "nope", "text": "x"}', "invalid_message"),
        (
            f'{{"type": "client.player_action", "action_id": "{uuid.uuid4()}", "text": ""}}',
            "invalid_message",
        ),
        ('{"type": "client.hello", "last_seq": -4}', "invalid_message"),
        ('{"type": "client.hello", "last_seq": true}', "invalid_message"),
        ('{"type": "client.hello", "last_seq": "3"}', "invalid_message"),
        ('{"type": "client.hello", "last_seq": 2.5}', "invalid_message"),
        ('{"type": "client.player_action", "text": "%s"}' % ("x" * 20000), "too_large"),
        ("[" * 5000 + "]" * 5000, "invalid_message"),
    ],
)
async def test_bad_messages_get_an_error_and_the_socket_keeps_working(campaign, alice, frame, code):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send_raw(frame)
    error = (await room.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["code"] == code and error["detail"]
    await room.send({"type": "client.ping"})
    assert (await room.recv_until(lambda m: m["type"] == "server.pong"))[-1] == {
        "type": "server.pong"
    }
    await room.close()


async def test_binary_frame_gets_an_error(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await room.send_raw(data=b"\x00\x01")
    assert (await room.recv_until(lambda m: m["type"] == "error"))[-1]["code"] == "invalid_message"
    await room.close()


async def test_error_names_the_action_id(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    action_id = str(uuid.uuid4())
    await room.send({"type": "client.player_action", "action_id": action_id, "text": "y" * 2001})
    error = (await room.recv_until(lambda m: m["type"] == "error"))[-1]
    assert error["action_id"] == action_id
    await room.close()


def _append_silently(campaign_id, count: int, monkeypatch) -> list:
    """Append events whose broadcast the channel layer 'drops'."""
    monkeypatch.setattr(services, "broadcast_events", lambda *a, **k: None)
    try:
        return [
            services.events_append(
                campaign_id=campaign_id,
                events=[
                    NewEvent(
                        "player_left",
                        {
                            "user_id": str(uuid.uuid4()),
                            "display_name": f"ghost{i}",
                            "role": "player",
                        },
                    )
                ],
            )[0]
            for i in range(count)
        ]
    finally:
        monkeypatch.undo()


async def test_dropped_and_reordered_broadcasts_are_filled_from_the_database(
    campaign, alice, monkeypatch
):
    room = Room(campaign.id, alice)
    await room.open()
    ready = (await room.hello(0))[-1]
    dropped = await sync_to_async(_append_silently)(campaign.id, 3, monkeypatch)
    assert await room.nothing()
    layer = get_channel_layer()
    group = selectors.group_name(campaign.id)
    # Only the last of three arrives: the consumer reads the two it missed first.
    await layer.group_send(
        group, {"type": "campaign.events", "events": [selectors.event_envelope(dropped[2])]}
    )
    got = events_of(
        await room.recv_until(
            lambda m: m["type"] == "event" and m["event"]["seq"] == dropped[2].seq
        )
    )
    assert [e["seq"] for e in got] == [ready["seq"] + 1, ready["seq"] + 2, ready["seq"] + 3]
    # A late, out-of-order copy of an earlier one is dropped, not sent twice.
    await layer.group_send(
        group, {"type": "campaign.events", "events": [selectors.event_envelope(dropped[0])]}
    )
    assert await room.nothing()
    await room.close()


async def test_presence_lists_who_is_online(campaign, alice, gm):
    me, gm_room = Room(campaign.id, alice), Room(campaign.id, gm)
    await me.open()
    await me.hello(0)
    await gm_room.open()
    presence = (await me.recv_until(lambda m: m["type"] == "presence" and len(m["users"]) == 2))[-1]
    assert {u["user_id"] for u in presence["users"]} == {str(alice.id), str(gm.id)}
    await gm_room.close()
    presence = (await me.recv_until(lambda m: m["type"] == "presence" and len(m["users"]) == 1))[-1]
    assert presence["users"][0]["user_id"] == str(alice.id)
    await me.close()


async def test_a_member_who_leaves_is_disconnected(campaign, alice):
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)
    await sync_to_async(services.membership_leave)(campaign_id=campaign.id, user_id=alice.id)
    messages = await room.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "player_left"
    )
    assert messages[-1]["event"]["payload"]["user_id"] == str(alice.id)
    assert await room.closed_with() == 4403


def test_origin_header_helper_is_a_local_host():
    assert ORIGIN[1].startswith(b"http://127.0.0.1")


async def test_a_member_whose_server_died_leaves_the_list_on_the_next_ping(
    campaign, alice, gm, settings
):
    """A server process that dies leaves its members' presence rows behind, with no
    "left" broadcast. Each socket re-reads the list as it refreshes its own row."""
    from datetime import timedelta

    from django.utils import timezone

    from campaigns.models import Membership
    from realtime.models import RoomPresence
    from realtime.services import presence_enter

    settings.PRESENCE_TOUCH_SECONDS = 0
    gm_membership = await sync_to_async(Membership.objects.get)(campaign=campaign, user=gm)
    # The GM's socket lived on another process, which was killed: only its row is left.
    await sync_to_async(presence_enter)(
        channel_name="specific.dead-process!gm", membership=gm_membership
    )
    me = Room(campaign.id, alice)
    await me.open()
    await me.hello(0)
    shown = (await me.recv_until(lambda m: m["type"] == "presence"))[-1]
    assert {u["user_id"] for u in shown["users"]} == {str(alice.id), str(gm.id)}

    # A ping while the ghost is still fresh changes nothing on the page.
    await me.send({"type": "client.ping"})
    seen = await me.recv_until(lambda m: m["type"] == "server.pong")
    assert not [m for m in seen if m["type"] == "presence"]

    long_ago = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL_SECONDS + 1)
    await sync_to_async(
        RoomPresence.objects.filter(channel_name="specific.dead-process!gm").update
    )(last_seen=long_ago)
    await me.send({"type": "client.ping"})
    shown = (await me.recv_until(lambda m: m["type"] == "presence"))[-1]
    assert [u["user_id"] for u in shown["users"]] == [str(alice.id)]
    await me.close()


async def test_a_crowd_coming_in_makes_a_few_presence_broadcasts_not_one_each(
    campaign, alice, make_user, join, settings
):
    """Each join used to broadcast the whole list to the whole room: n joins, n lists of
    up to n users to n sockets. Joins close together now make one broadcast."""
    settings.PRESENCE_COALESCE_SECONDS = 1  # wide enough for a loaded machine
    watcher = Room(campaign.id, alice)
    await watcher.open()
    await watcher.hello(0)
    await watcher.recv_until(lambda m: m["type"] == "presence")
    crowd = []
    for i in range(12):
        user = await sync_to_async(make_user)(f"spectator{i}")
        await sync_to_async(join)(user, f"Spectator {i}")
        crowd.append(Room(campaign.id, user))
    for room in crowd:
        await room.open()
    seen = await watcher.recv_until(lambda m: m["type"] == "presence" and len(m["users"]) == 13)
    lists = [m for m in seen if m["type"] == "presence"]
    assert len(lists) <= 3, [len(m["users"]) for m in lists]
    for room in crowd:
        await room.close()
    await watcher.close()


# --- Pacing: an action that waits, or is refused, is said so to its sender -----------------------

PACING = "The DM is still answering your last actions"


async def test_rapid_actions_are_taken_and_the_sender_is_told_they_wait(
    campaign, alice, bob, settings
):
    """Eight actions in a burst, while the DM is still answering the first: each one after
    the first is acked with a notice saying how many of the sender's own wait before it;
    nothing is dropped and every one of them is answered. Another player's action in the
    same moment waits behind none of theirs: no notice."""
    settings.DM_FAKE_CHUNK_DELAY_SECONDS = 0.05  # the first turn is still running meanwhile
    room, other = Room(campaign.id, alice), Room(campaign.id, bob)
    await room.open()
    await other.open()
    await room.hello(0)
    await other.hello(0)
    ids = [str(uuid.uuid4()) for _ in range(8)]
    for n, action_id in enumerate(ids):
        await room.send(
            {"type": "client.player_action", "action_id": action_id, "text": f"Step {n}"}
        )
    await other.send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I watch"}
    )
    seen: list[dict] = []
    while sum(m["type"] == "server.ack" for m in seen) < 8:
        seen.append(await room.recv(timeout=10))
    acks = {m["action_id"]: m for m in seen if m["type"] == "server.ack"}
    assert set(acks) == set(ids)
    assert "notice" not in acks[ids[0]] and "waiting" not in acks[ids[0]]
    for n, action_id in enumerate(ids[1:], start=1):
        ack = acks[action_id]
        assert ack["notice"].startswith(PACING) and ack["waiting"] == n
    assert acks[ids[2]]["notice"] == (
        "The DM is still answering your last actions. "
        "This one is answered after your 2 earlier actions."
    )
    theirs = (await other.recv_until(lambda m: m["type"] == "server.ack"))[-1]
    assert "notice" not in theirs
    last_seq = max(a["seq"] for a in acks.values())
    await room.recv_until(
        lambda m: (
            m["type"] == "event"
            and m["event"]["type"] == "dm_narration"
            and m["event"]["payload"]["through_seq"] >= last_seq
        ),
        timeout=60,
    )
    await wait_idle()
    # Answered: the next action waits behind nothing.
    await room.send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "Rest"}
    )
    assert "notice" not in (await room.recv_until(lambda m: m["type"] == "server.ack"))[-1]
    await wait_idle()
    await room.close()
    await other.close()


async def test_a_throttled_action_is_told_in_plain_words_and_can_go_again(
    campaign, alice, settings
):
    settings.WS_THROTTLE = {**settings.WS_THROTTLE, "connection": (3, 2.0)}
    room = Room(campaign.id, alice)
    await room.open()
    await room.hello(0)  # one token
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for action_id in ids:
        await room.send({"type": "client.player_action", "action_id": action_id, "text": "Go"})
    answers: list[dict] = []
    while len(answers) < 3:
        message = await room.recv(timeout=10)
        if message["type"] in ("server.ack", "error"):
            answers.append(message)
    [refused] = [a for a in answers if a["type"] == "error"]
    assert refused["code"] == "rate_limited" and refused["action_id"] == ids[2]
    assert refused["detail"].startswith(PACING) and "again" in refused["detail"]
    assert 0 < refused["retry_after"] <= 1.0
    await asyncio.sleep(refused["retry_after"] + 0.2)
    await room.send({"type": "client.player_action", "action_id": ids[2], "text": "Go"})
    again = (await room.recv_until(lambda m: m["type"] in ("server.ack", "error")))[-1]
    assert again["type"] == "server.ack" and again["action_id"] == ids[2]
    await wait_idle()
    await room.close()
