"""Hidden entities in the room, in a real browser (the set-up is tests/test_browser_room.py's).

The DM makes a creature the players have not discovered: the GM's "Met so far" shows it
marked hidden (with a Reveal button), Alice's page never has its name, not in the feed,
not in the table. The GM reveals it with one click: Alice's page shows it in "Met so
far" and a "Discovered" line in the feed, without a reload.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_browser_room as room
from tests.test_browser_room import DESKTOP, WAIT_MS, Server, open_room

# The room test's fixtures: Chromium, a daphne server, Alice and Bob at the table.
browser = room.browser
server = room.server
players = room.players
campaign = room.campaign

LURKER = "Ossuary Lurker"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_hidden_creature_shows_for_the_gm_and_reaches_the_players_when_revealed(
    browser: Any, server: Server, campaign: Any, gm: Any, players: tuple[Any, Any]
) -> None:
    from playwright.sync_api import expect

    alice_user, _bob = players
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)

    server.tools_execute(
        {
            "campaign_id": str(campaign.id),
            "narration": "Something shifts among the bones.",
            "options": ["Look closer", "Back away"],
            "tool_calls": [
                {
                    "name": "create_entity",
                    "args": {
                        "kind": "creature",
                        "name": LURKER,
                        "data": {"description": "pale, patient, watching"},
                        "hidden": True,
                    },
                },
                {"name": "create_entity", "args": {"kind": "location", "name": "The Ossuary"}},
            ],
        }
    )
    for player in (master, alice):
        expect(player.page.locator("#met")).to_contain_text("The Ossuary", timeout=WAIT_MS)
        expect(player.page.locator("#feed-events .entry-dm").last).to_contain_text(
            "Something shifts", timeout=WAIT_MS
        )
    lurker = master.page.locator("#met li", has_text=LURKER)
    expect(lurker).to_have_class("met-hidden", timeout=WAIT_MS)
    expect(lurker.locator(".met-hidden-badge")).to_have_text("hidden")
    expect(master.page.locator("#feed-events")).to_contain_text("hidden from the players")
    expect(alice.page.locator("#met li")).to_have_count(1)
    assert LURKER not in alice.page.content()

    # The GM reveals it: Alice's table and feed learn it live.
    lurker.get_by_role("button", name=f"Reveal {LURKER} to the players").click()
    expect(alice.page.locator("#met")).to_contain_text(LURKER, timeout=WAIT_MS)
    expect(alice.page.locator("#met li").first).to_contain_text(LURKER)  # the newest first
    discovered = alice.page.locator("#feed-events .entry-reveal").last
    expect(discovered).to_contain_text(f"Discovered: {LURKER} — pale, patient, watching")
    expect(master.page.locator("#met li", has_text=LURKER)).not_to_have_class(
        "met-hidden", timeout=WAIT_MS
    )
    expect(
        master.page.locator("#met li", has_text=LURKER).get_by_role(
            "button", name=f"Hide {LURKER} from the players"
        )
    ).to_be_visible()
    for player in (master, alice):
        assert player.errors == [], player.errors
