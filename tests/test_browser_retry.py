"""Retry in the room, in a real browser (Debian's Chromium driven by Playwright, against
daphne with the fake DM; the set-up is tests/test_browser_room.py's).

Alice attacks the goblin; the GM's room has a Retry button on that narration, Alice's has
none. The GM clicks it: in every room the old narration folds away under "retried by the
GM" (still readable when opened) and the DM's new answer appears, with the same roll (no
second one). After a reload the rooms look the same. The button leaves a narration as soon
as a player acts after it, and a retry the server refuses (a player acted meanwhile) is
said in plain words.

Screenshot (a temporary folder; `docs/` with RPGAI_SCREENSHOTS=docs): room-retry.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
    assert_no_duplicates,
    db_count,
    open_room,
    save_screenshot,
)

# The room test's fixtures: Chromium, the campaign, Alice and Bob.
browser = room.browser
campaign = room.campaign
players = room.players


@pytest.fixture
def server() -> Iterator[room.Server]:
    # A narration streams for a few seconds: long enough to see the room between a
    # player's action and the DM's answer to it.
    server = room.Server(DM_FAKE_CHUNK_DELAY_SECONDS="0.12")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def narrations(player: Player) -> Any:
    return player.page.locator("#feed-events .entry-dm")


def retry_buttons(player: Player) -> Any:
    return player.page.locator("#feed-events .entry-retry")


def wait_for_count(campaign: Any, type_name: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while db_count(campaign, type_name) < count:
        assert time.monotonic() < deadline, f"no {count} {type_name} in the log"
        time.sleep(0.1)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_gm_retries_the_latest_narration_and_the_rooms_show_it(
    browser: Any,
    server: room.Server,
    campaign: Any,
    gm: Any,
    players: tuple[Any, Any],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    alice_user, _ = players
    alice = open_room(browser, server, alice_user, campaign, **PHONE)
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    rooms = (alice, master)

    act(alice, "I attack the goblin and pick up the crown")
    for player in rooms:
        expect(narrations(player)).to_have_count(1, timeout=WAIT_MS)
    [old] = Event.objects.filter(campaign_id=campaign.id, type="dm_narration")
    # The GM may retry it; a player has no such button.
    expect(narrations(master).first.locator(".entry-retry")).to_have_text("Retry")
    expect(retry_buttons(alice)).to_have_count(0)

    retry_buttons(master).first.click()
    for player in rooms:
        first = narrations(player).first
        expect(first).to_have_class(
            "entry entry-dm entry-retracted", timeout=WAIT_MS
        )  # folded away...
        expect(first.locator("summary")).to_contain_text("retried by the GM")
        expect(first.locator(".entry-body")).to_be_hidden()
        expect(player.page.locator("#feed-events")).to_contain_text(
            "asked the DM for another answer"
        )
        # ... and the DM's new answer, with the same roll: none was rolled again.
        expect(narrations(player)).to_have_count(2, timeout=WAIT_MS)
        expect(narrations(player).last).not_to_have_class("entry-retracted")
        expect(player.page.locator("#feed-events .entry-roll")).to_have_count(1)
    assert db_count(campaign, "roll_result") == 1
    new = Event.objects.filter(campaign_id=campaign.id, type="dm_narration").order_by("-seq")[0]
    assert new.payload["turn_id"] != old.payload["turn_id"]
    # Retry goes on the new latest narration, for the GM only.
    expect(retry_buttons(master)).to_have_count(1)
    expect(narrations(master).last.locator(".entry-retry")).to_have_count(1)
    expect(retry_buttons(alice)).to_have_count(0)

    # The retried answer can still be read: opened, it shows its words.
    first = narrations(alice).first
    first.locator("summary").click()
    body = first.locator(".entry-body")
    expect(body).to_be_visible()
    expect(body).to_contain_text(old.payload["text"].split(".")[0])
    assert_fits(alice.page)
    save_screenshot(master.page, "room-retry.png", tmp_path)

    # After a reload: the same rooms.
    for player in rooms:
        player.page.reload()
        expect(player.page.locator("#room-status")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
        expect(narrations(player)).to_have_count(2, timeout=WAIT_MS)
        expect(narrations(player).first).to_have_class("entry entry-dm entry-retracted")
        expect(narrations(player).first.locator("summary")).to_contain_text("retried by the GM")
        expect(narrations(player).last).not_to_have_class("entry-retracted")
        assert_no_duplicates(player, campaign)
    expect(narrations(master).last.locator(".entry-retry")).to_have_count(1)
    expect(retry_buttons(master)).to_have_count(1)
    expect(retry_buttons(alice)).to_have_count(0)

    # A player acts: the button leaves that narration at once (the server would refuse
    # it), and comes back on the DM's answer to the action.
    act(alice, "I look around")
    expect(master.page.locator("#feed-events .entry-action")).to_have_count(2, timeout=WAIT_MS)
    expect(retry_buttons(master)).to_have_count(0)
    expect(narrations(master)).to_have_count(3, timeout=WAIT_MS)
    expect(narrations(master).last.locator(".entry-retry")).to_have_count(1)

    # A retry the server refuses, because a player acted while it was on its way: said
    # in plain words.
    paused: list[Any] = []
    master.page.route("**/narrations/*/retry", lambda route: paused.append(route))
    retry_buttons(master).click()
    deadline = time.monotonic() + WAIT_MS / 1000
    while not paused:
        assert time.monotonic() < deadline, "the retry was never sent"
        master.page.wait_for_timeout(50)
    act(alice, "I open the door")
    wait_for_count(campaign, "player_action", 3)
    paused[0].continue_()
    expect(master.page.locator("#notices")).to_contain_text(
        "The DM was not asked again: a player acted after this narration", timeout=WAIT_MS
    )
    master.page.unroute("**/narrations/*/retry")
    expect(narrations(master)).to_have_count(4, timeout=WAIT_MS)
    assert db_count(campaign, "dm_narration_retracted") == 1
    assert alice.errors == [] and master.errors == []
