"""Round-based turns: in `rounds` mode the DM answers once every player has acted, or when
the GM's round timer runs out; the room is told whom the table waits for."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async
from rest_framework.test import APIClient

from campaigns import selectors, services
from campaigns.models import Campaign, Event
from campaigns.rounds import campaign_turn_mode_set
from rpgai.errors import DomainError, PermissionDenied
from rpgai.tasks import wait_idle
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def players(campaign, join, make_user, gm):
    found = {}
    for name in ("alice", "bob", "carol"):
        user = make_user(name)
        found[name] = (user, join(user, name.title()))
    campaign_turn_mode_set(
        campaign_id=campaign.id, by_user=gm, turn_mode="rounds", round_seconds=60
    )
    return found


def _narrations(campaign) -> list[Event]:
    return list(Event.objects.filter(campaign=campaign, type="dm_narration").order_by("seq"))


async def _act(membership, text: str) -> Event:
    event = await sync_to_async(services.player_action_submit)(
        membership=membership, action_id=uuid.uuid4(), text=text
    )
    await wait_idle()
    return event


async def test_two_of_three_players_acting_get_no_narration_until_the_third_acts(
    campaign, gm, players
):
    watcher = Room(campaign.id, gm)  # the GM's room shows whom the table waits for
    await watcher.open()
    await watcher.hello(0)
    await _act(players["alice"][1], "I search the altar")
    await _act(players["bob"][1], "I guard the door")
    assert await sync_to_async(_narrations)(campaign) == []
    waiting = await watcher.recv_until(
        lambda m: m["type"] == "round_waiting" and len(m["user_ids"]) == 1
    )
    assert waiting[-1]["user_ids"] == [str(players["carol"][0].id)]
    assert waiting[-1]["deadline"]

    third = await _act(players["carol"][1], "I light a torch")
    [narration] = await sync_to_async(_narrations)(campaign)
    assert narration.payload["through_seq"] == third.seq
    for text in ("altar", "door", "torch"):  # one answer for the whole round (fake DM)
        assert text in narration.payload["text"]
    await watcher.recv_until(lambda m: m["type"] == "round_waiting" and m["user_ids"] == [])
    await watcher.close()


async def test_the_round_timer_ends_the_wait(campaign, players):
    await sync_to_async(Campaign.objects.filter(id=campaign.id).update)(round_seconds=1)
    await _act(players["alice"][1], "I search the altar")
    await _act(players["bob"][1], "I guard the door")
    assert await sync_to_async(_narrations)(campaign) == []
    for _ in range(60):  # the timer fires one second after the round's first action
        await asyncio.sleep(0.1)
        await wait_idle()
        if await sync_to_async(_narrations)(campaign):
            break
    [narration] = await sync_to_async(_narrations)(campaign)
    assert "altar" in narration.payload["text"] and "door" in narration.payload["text"]


async def test_only_players_present_are_waited_for(campaign, players):
    rooms = [Room(campaign.id, players[name][0]) for name in ("alice", "bob")]
    for room in rooms:
        await room.open()
        await room.hello(0)
    await _act(players["alice"][1], "I search the altar")
    assert await sync_to_async(_narrations)(campaign) == []
    await _act(players["bob"][1], "I guard the door")  # Carol is not in the room
    assert len(await sync_to_async(_narrations)(campaign)) == 1
    for room in rooms:
        await room.close()


def test_free_mode_answers_each_action_at_once(campaign, join, make_user, gm):
    _, alice_m = (user := make_user("alice")), join(user, "Alice")
    join(make_user("bob"), "Bob")
    services.player_action_submit(membership=alice_m, action_id=uuid.uuid4(), text="I wave")
    assert len(_narrations(campaign)) == 1


def test_only_the_gm_sets_the_turn_mode(campaign, players, gm):
    with pytest.raises(PermissionDenied):
        campaign_turn_mode_set(
            campaign_id=campaign.id, by_user=players["alice"][0], turn_mode="free"
        )
    for bad in ({"turn_mode": "chaos"}, {"round_seconds": 0}, {"round_seconds": 10**6}):
        with pytest.raises(DomainError):
            campaign_turn_mode_set(campaign_id=campaign.id, by_user=gm, **bad)
    campaign.refresh_from_db()
    assert (campaign.turn_mode, campaign.round_seconds) == ("rounds", 60)


def test_the_turns_api(campaign, players, gm, make_user):
    url = f"/api/campaigns/{campaign.id}/turns"
    client = APIClient()
    client.force_authenticate(gm)
    assert client.get(url).json() == {"turn_mode": "rounds", "round_seconds": 60}
    response = client.put(url, {"turn_mode": "free", "round_seconds": 30}, format="json")
    assert response.status_code == 200 and response.json() == {
        "turn_mode": "free",
        "round_seconds": 30,
    }
    for bad in ({"turn_mode": "chaos"}, {"round_seconds": 1}, {"round_seconds": "x"}, ["x"]):
        assert client.put(url, bad, format="json").status_code == 400, bad
    player = APIClient()
    player.force_authenticate(players["alice"][0])
    assert player.put(url, {"turn_mode": "rounds"}, format="json").status_code == 403
    assert player.get(url).status_code == 403
    outsider = APIClient()
    outsider.force_authenticate(make_user("mallory"))
    assert outsider.get(url).status_code in (403, 404)
    assert APIClient().get(url).status_code == 401
    assert selectors.campaign_get(campaign_id=campaign.id).turn_mode == "free"


def test_the_admin_edits_the_turn_settings(admin_client, campaign, players):
    from django.urls import reverse

    url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and 'name="turn_mode"' in page.content.decode()
    data = {"turn_mode": "free", "round_seconds": 45, "name": "Renamed"}
    for inline in page.context["inline_admin_formsets"]:  # the read-only members inline
        management = inline.formset.management_form
        data.update({management.add_prefix(k): v for k, v in management.initial.items()})
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    campaign.refresh_from_db()
    assert (campaign.turn_mode, campaign.round_seconds, campaign.name) == (
        "free",
        45,
        "The Sunken Crown",
    )


@pytest.mark.services
@pytest.mark.celery_worker
def test_a_celery_worker_closes_the_round_when_its_timer_ends(campaign, players):
    """On Redis the round timer is a Celery countdown task run by a real worker."""
    import time

    from tests.processes import celery_worker

    Campaign.objects.filter(id=campaign.id).update(round_seconds=2)
    with celery_worker(TASKS_IN_PROCESS="0"):
        for name, text in (("alice", "I search the altar"), ("bob", "I guard the door")):
            services.player_action_submit(
                membership=players[name][1], action_id=uuid.uuid4(), text=text
            )
        time.sleep(1.0)
        assert _narrations(campaign) == []  # the worker ran the turn task, and it waited
        deadline = time.monotonic() + 20
        while not _narrations(campaign) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # a duplicate would show up now
    [narration] = _narrations(campaign)
    assert "altar" in narration.payload["text"] and "door" in narration.payload["text"]


async def test_a_round_whose_timer_was_lost_closes_when_a_page_comes_back(campaign, players, gm):
    """An embedded round timer lives in the server's memory: a restart loses it. The
    pages reconnect after a restart, and a page coming into the room re-checks the round."""
    from orchestrator.receivers import turns_deferred

    await sync_to_async(Campaign.objects.filter(id=campaign.id).update)(round_seconds=1)

    def act_with_no_timer() -> None:  # the action is stored; no turn, no timer is armed
        with turns_deferred():
            services.player_action_submit(
                membership=players["alice"][1], action_id=uuid.uuid4(), text="I search the altar"
            )

    await sync_to_async(act_with_no_timer)()
    await asyncio.sleep(1.2)  # the round's deadline passes with no timer to notice
    await wait_idle()
    assert await sync_to_async(_narrations)(campaign) == []

    page = Room(campaign.id, players["bob"][0])  # Bob's page reconnects
    await page.open()
    await page.hello(0)
    await wait_idle()
    [narration] = await sync_to_async(_narrations)(campaign)
    assert "altar" in narration.payload["text"]
    await page.recv_until(lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration")
    await page.close()


async def test_the_table_stops_waiting_for_a_player_who_leaves(campaign, players):
    alice, bob = Room(campaign.id, players["alice"][0]), Room(campaign.id, players["bob"][0])
    for page in (alice, bob):
        await page.open()
        await page.hello(0)
    await _act(players["alice"][1], "I search the altar")
    waiting = await alice.recv_until(lambda m: m["type"] == "round_waiting" and m["user_ids"])
    assert waiting[-1]["user_ids"] == [str(players["bob"][0].id)]
    assert await sync_to_async(_narrations)(campaign) == []

    await bob.close()  # Bob leaves the table: everyone present has acted
    await wait_idle()
    [narration] = await sync_to_async(_narrations)(campaign)
    assert "altar" in narration.payload["text"]
    await alice.close()


def test_a_new_turn_mode_is_told_to_the_table(campaign, players, gm):
    """The snapshot's `campaign` (what every member reads) follows PUT .../turns, by a
    `campaign_updated` event; a repeat of the same mode appends nothing."""
    assert selectors.snapshot_get(campaign_id=campaign.id).state["campaign"]["turn_mode"] == (
        "rounds"
    )
    campaign_turn_mode_set(campaign_id=campaign.id, by_user=gm, turn_mode="free")
    campaign_turn_mode_set(campaign_id=campaign.id, by_user=gm, turn_mode="free")
    updates = Event.objects.filter(campaign=campaign, type="campaign_updated")
    assert [e.payload for e in updates] == [
        {"changes": {"turn_mode": "rounds"}},
        {"changes": {"turn_mode": "free"}},
    ]
    assert updates.last().actor_user_id == gm.id
    assert selectors.snapshot_get(campaign_id=campaign.id).state["campaign"]["turn_mode"] == "free"
