"""Players roll their own checks, in a real browser (Debian's Chromium driven by Playwright,
against daphne with the fake DM; the set-up is tests/test_browser_room.py's).

Alice (on a phone) climbs the wall: the fake DM asks her to roll her own check. Her room
shows a big "Roll 1d20+2 for …" button (still there after a reload), Bob's says "Waiting
for Alice to roll …". She clicks it: the roll is hers (same roll_id as the request), the
button goes, and the DM narrates the climb as the dice decided. When a player waits too
long the server rolls for them, and the button goes when that roll arrives.

Screenshot (a temporary folder; `docs/` with RPGAI_SCREENSHOTS=docs):
room-roll-request-phone.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from campaigns.models import Event
from tests import test_browser_room as room
from tests.test_browser_room import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Player,
    act,
    assert_fits,
    open_room,
    save_screenshot,
)

# The room test's fixtures: Chromium, a daphne server, the campaign, Alice and Bob.
browser = room.browser
server = room.server
campaign = room.campaign
players = room.players

CLIMB = "I climb the wall"


def ask_of(player: Player) -> Any:
    return player.page.locator("#roll-requests .roll-ask")


def the_request(campaign: Any) -> Event:
    """The check the DM asked a player to roll (waited for: the turn appends it)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        requests = list(
            Event.objects.filter(
                campaign_id=campaign.id, type="roll_requested", payload__requested_by="dm"
            )
        )
        if requests:
            [request] = requests
            return request
        assert time.monotonic() < deadline, (
            "the fake DM never asked for a player's roll: "
            f"{[(e.type, e.payload) for e in Event.objects.filter(campaign_id=campaign.id)]}"
        )
        time.sleep(0.1)


def words_of(request: Event) -> str:
    reason = request.payload.get("reason") or ""
    return request.payload["formula"] + (f" for {reason}" if reason else "")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_player_rolls_the_check_the_dm_asked_for_and_the_narration_follows(
    browser: Any, server: Any, campaign: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    alice = open_room(browser, server, alice_user, campaign, **PHONE)
    bob = open_room(browser, server, bob_user, campaign, **DESKTOP)

    act(alice, CLIMB)
    request = the_request(campaign)
    assert request.payload["for_user_id"] == str(alice_user.id)
    button = alice.page.locator("#roll-requests .roll-ask-button")
    expect(button).to_have_text(f"Roll {words_of(request)}", timeout=WAIT_MS)
    expect(button).to_be_visible()
    expect(button).to_be_enabled()
    expect(ask_of(bob)).to_have_text(f"Waiting for Alice to roll {words_of(request)}…")
    expect(bob.page.locator("#roll-requests .roll-ask-button")).to_have_count(0)
    # The turn waits for her: nothing is narrated meanwhile.
    assert not Event.objects.filter(campaign_id=campaign.id, type="dm_narration").exists()
    assert_fits(alice.page)
    save_screenshot(alice.page, "room-roll-request-phone.png", tmp_path)

    # Still asked after a reload (the room reads it from the log).
    alice.page.reload()
    expect(alice.page.locator("#room-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    expect(button).to_have_text(f"Roll {words_of(request)}", timeout=WAIT_MS)

    button.click()
    expect(ask_of(alice)).to_have_count(0, timeout=WAIT_MS)
    expect(ask_of(bob)).to_have_count(0, timeout=WAIT_MS)
    [result] = Event.objects.filter(
        campaign_id=campaign.id, type="roll_result", payload__roll_id=request.payload["roll_id"]
    )
    assert result.payload["formula"] == request.payload["formula"]
    assert (result.actor_kind, result.actor_user_id) == ("player", alice_user.id)
    assert result.seq > request.seq
    # Her roll in every room, then the DM's narration of it.
    for player in (alice, bob):
        roll = player.page.locator("#feed-events .entry-roll").last
        expect(roll.locator(".roll-total")).to_have_text(
            str(result.payload["total"]), timeout=WAIT_MS
        )
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(1, timeout=WAIT_MS)
    [narration] = Event.objects.filter(campaign_id=campaign.id, type="dm_narration")
    assert narration.seq > result.seq
    assert str(result.payload["total"]) in narration.payload["text"]
    assert Event.objects.filter(campaign_id=campaign.id, type="roll_result").count() == 1
    assert alice.errors == [] and bob.errors == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_player_who_waits_too_long_gets_the_servers_roll_and_the_button_goes(
    browser: Any, campaign: Any, players: tuple[Any, Any]
) -> None:
    from playwright.sync_api import expect

    server = room.Server(DM_PLAYER_ROLL_SECONDS="4")
    server.start()
    try:
        alice_user, bob_user = players
        alice = open_room(browser, server, alice_user, campaign, **PHONE)
        bob = open_room(browser, server, bob_user, campaign, **DESKTOP)
        act(alice, CLIMB)
        request = the_request(campaign)
        expect(alice.page.locator("#roll-requests .roll-ask-button")).to_be_visible(timeout=WAIT_MS)
        expect(ask_of(bob)).to_contain_text("Waiting for Alice to roll")
        # She does not click: the server rolls for her, and the button goes.
        for player in (alice, bob):
            expect(ask_of(player)).to_have_count(0, timeout=WAIT_MS)
            expect(player.page.locator("#feed-events .entry-dm")).to_have_count(1, timeout=WAIT_MS)
        [result] = Event.objects.filter(
            campaign_id=campaign.id,
            type="roll_result",
            payload__roll_id=request.payload["roll_id"],
        )
        assert result.actor_kind != "player" and result.actor_user_id is None
        assert alice.errors == [] and bob.errors == []
    finally:
        server.stop()
