"""A socket connecting while its member is kicked does not survive the kick (issue 16,
finding 2). The room reads the membership, then joins the campaign's group: a
`player_left` sent in between used to be missed, and the socket streamed on and could
still whisper and roll. Now the room reads the membership again once it listens, and
every write re-checks membership under the log's lock.

The race is made deterministic with the consumer's `before_group_join` seam: the test
kicks the member exactly in that window."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async

from campaigns import services
from campaigns.models import Event
from campaigns.tools import roll_make
from campaigns.whispers import whisper_send
from realtime import consumers
from rpgai.errors import PermissionDenied
from tests.auth_tools import isolate_limits
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)

WRITES = ("player_action", "whisper", "roll_requested", "roll_result")


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


def _writes_by(campaign_id: Any, user_id: Any, after_seq: int) -> list[str]:
    return list(
        Event.objects.filter(
            campaign_id=campaign_id, actor_user_id=user_id, type__in=WRITES, seq__gt=after_seq
        ).values_list("type", flat=True)
    )


def _last_seq(campaign_id: Any) -> int:
    return Event.objects.filter(campaign_id=campaign_id).order_by("-seq").first().seq


async def test_a_member_kicked_while_their_socket_connects_is_closed(
    campaign, gm, alice, monkeypatch
):
    kicked: list[int] = []

    async def kick_in_the_window(consumer: Any) -> None:
        # Membership read, group not joined yet: the GM kicks now (the kick API's service).
        await sync_to_async(services.member_kick)(
            campaign_id=campaign.id, user_id=alice.id, by_user=gm
        )
        kicked.append(await sync_to_async(_last_seq)(campaign.id))

    monkeypatch.setattr(consumers, "before_group_join", kick_in_the_window)
    room = Room(campaign.id, alice)
    connected, _ = await room.open()
    assert connected  # accepted first, so that the close carries its code

    # Whatever the socket sends now is not taken: an action, a whisper, a roll.
    await room.send({"type": "client.hello", "last_seq": 0})
    await room.send(
        {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I stay"}
    )
    await room.send({"type": "client.whisper", "to": "gm", "text": "still here"})
    await room.send({"type": "client.roll", "formula": "1d20", "reason": "sneak"})
    outputs = []
    while True:
        output = await room.comm.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            break
        outputs.append(json.loads(output["text"]))
    assert kicked, "the seam was not reached"
    assert output["code"] == 4403, outputs
    # It streamed nothing before closing: not the backlog, not an ack.
    assert [m["type"] for m in outputs if m["type"] != "presence"] == []
    await room.close()
    assert await sync_to_async(_writes_by)(campaign.id, alice.id, kicked[0]) == []


async def test_a_member_who_stays_is_let_in_through_the_same_window(campaign, alice, monkeypatch):
    """The seam and the re-read change nothing for a member who is not kicked."""
    reached: list[bool] = []

    async def nothing_happens(consumer: Any) -> None:
        reached.append(True)

    monkeypatch.setattr(consumers, "before_group_join", nothing_happens)
    room = Room(campaign.id, alice)
    await room.open()
    assert (await room.hello(0))[-1]["type"] == "server.ready"
    assert reached
    await room.close()


def test_writes_with_a_membership_read_before_the_kick_are_refused(campaign, gm, alice):
    """A socket whose kick message was dropped (the channel layer delivers at most once)
    still holds the membership it read at connect: each write re-checks under the lock.
    (The roll's check is in campaigns/tools.py roll_make.)"""
    stale = services.selectors.membership_get(campaign_id=campaign.id, user_id=alice.id)
    services.member_kick(campaign_id=campaign.id, user_id=alice.id, by_user=gm)
    after = _last_seq(campaign.id)
    with pytest.raises(PermissionDenied):
        services.player_action_submit(membership=stale, action_id=uuid.uuid4(), text="I stay")
    with pytest.raises(PermissionDenied):
        whisper_send(membership=stale, to="gm", text="still here")
    with pytest.raises(PermissionDenied):
        roll_make(
            campaign_id=campaign.id,
            formula="1d20",
            reason="sneak",
            requested_by="player",
            actor_kind="player",
            actor_user_id=alice.id,
        )
    assert _writes_by(campaign.id, alice.id, after) == []
