"""Whispers in the room, in a real browser (Debian's Chromium driven by Playwright, against
daphne; the set-up is tests/test_browser_room.py's).

A GM and two players at one table. Alice whispers to the DM with the whisper box: she and
the GM see it, Bob never does. The GM whispers to Alice; Bob (on a phone) whispers to the
GM, then to Alice: only the two of them and the GM see each. A whisper the server refuses comes back
into the box with the server's reason. The DM's private narration ("only the rogue notices
the trap") and a private roll reach Alice alone, and the GM is told whom they were for.
The box is usable by keyboard, waits while the connection is down, fits a 360 px screen.

Screenshot: docs/room-whisper.png (with RPGAI_SCREENSHOTS=docs).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import campaign_create, events_append
from tests import test_browser_room as room
from tests.test_browser_room import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Player,
    Server,
    assert_fits,
    in_thread,
    open_room,
    save_screenshot,
)

# The room test's fixtures: Chromium, a daphne server, Alice and Bob at the table.
browser = room.browser
server = room.server
players = room.players


@pytest.fixture
def campaign(gm: Any) -> Any:
    return in_thread(
        lambda: campaign_create(
            name="The Sunken Crown",
            edition="5e",
            creator=gm,
            display_name="Mira",
            scene={"location": "The Drowned Lantern inn", "description": "Rain on the shutters."},
        )
    )


def whisper(player: Player, to_label: str, text: str, *, keyboard: bool = True) -> None:
    """Open the whisper box (if closed), choose the recipient by name, type, send."""
    page = player.page
    form = page.locator("#whisper-form")
    if form.is_hidden():
        page.locator("#whisper-toggle").click()
    page.locator("#whisper-to").select_option(label=to_label)
    box = page.locator("#whisper-text")
    box.fill(text)
    if keyboard:
        box.press("Enter")
    else:
        page.locator("#send-whisper").click()


def whispers(player: Player) -> Any:
    return player.page.locator("#feed-events .entry-whisper")


def last_whisper_is(player: Player, who: str, text: str) -> None:
    from playwright.sync_api import expect

    entry = whispers(player).last
    expect(entry.locator(".entry-who")).to_contain_text(who, timeout=WAIT_MS)
    expect(entry.locator(".entry-text, .entry-body")).to_have_text(text)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_whispers_reach_only_whom_they_name(
    browser: Any,
    server: Server,
    campaign: Any,
    gm: Any,
    players: tuple[Any, Any],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    bob = open_room(browser, server, bob_user, campaign, **PHONE)
    everyone = (master, alice, bob)

    # Whom one may whisper to: a player gets the GM, the DM and the other players; the GM
    # gets the players and the DM.
    recipients = "#whisper-to option"
    expect(alice.page.locator(recipients)).to_have_text(
        ["The GM", "The DM", "Bob"], timeout=WAIT_MS
    )
    expect(master.page.locator(recipients)).to_have_text(
        ["Alice", "Bob", "The DM"], timeout=WAIT_MS
    )

    # By keyboard: Tab from Send reaches the whisper toggle; Enter opens the box on the
    # text field; Escape closes it and gives the focus back.
    page = alice.page
    expect(page.locator("#whisper-form")).to_be_hidden()
    page.locator("#send-action").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "whisper-toggle"
    page.keyboard.press("Enter")
    expect(page.locator("#whisper-form")).to_be_visible()
    expect(page.locator("#whisper-toggle")).to_have_attribute("aria-expanded", "true")
    assert page.evaluate("document.activeElement.id") == "whisper-text"
    page.keyboard.press("Escape")
    expect(page.locator("#whisper-form")).to_be_hidden()
    assert page.evaluate("document.activeElement.id") == "whisper-toggle"

    # Alice whispers to the DM: she and the GM see it; Bob does not.
    whisper(alice, "The DM", "I pocket the silver key before anyone sees.")
    expect(page.locator("#whisper-help")).to_contain_text("The DM takes it into account")
    last_whisper_is(alice, "You whisper to the DM", "I pocket the silver key before anyone sees.")
    expect(page.locator("#whisper-text")).to_have_value("")
    last_whisper_is(
        master, "Alice → the DM (whisper)", "I pocket the silver key before anyone sees."
    )

    # The GM whispers to Alice; only Alice (and the GM) see it.
    secret = "Bob is not who he says he is."
    whisper(master, "Alice", secret, keyboard=False)
    last_whisper_is(master, "You whisper to Alice", secret)
    last_whisper_is(alice, "Mira whispers to you", secret)
    expect(whispers(alice).last.locator(".badge-gm")).to_have_count(1)
    expect(whispers(alice).last).to_have_class(re.compile(r"\bto-me\b"))

    # Bob, on his phone, whispers to the GM (a script in it stays text), then to Alice:
    # player to player, the GM sees it too.
    script = '<img src=x onerror="window.__pwned = 1"> I am a spy, do not tell.'
    whisper(bob, "The GM", script)
    expect(bob.page.locator("#whisper-help")).to_contain_text("Only the GM will read it.")
    last_whisper_is(bob, "You whisper to the GM", script)
    last_whisper_is(master, "Bob whispers to you (the GM)", script)
    whisper(bob, "Alice", "Meet me by the well at midnight.")
    last_whisper_is(bob, "You whisper to Alice", "Meet me by the well at midnight.")
    last_whisper_is(alice, "Bob whispers to you", "Meet me by the well at midnight.")
    last_whisper_is(master, "Bob → Alice (whisper)", "Meet me by the well at midnight.")

    # A whisper the server refuses (to someone not at the table) comes back into the box,
    # with the server's reason.
    page.evaluate(
        """id => {
          const select = document.getElementById('whisper-to');
          select.append(new Option('A stranger', id));
          select.value = id;
        }""",
        str(uuid.uuid4()),
    )
    page.locator("#whisper-text").fill("Psst, stranger.")
    page.locator("#send-whisper").click()
    notice = page.locator("#notices .notice").last
    expect(notice).to_contain_text("Your whisper was not sent", timeout=WAIT_MS)
    expect(notice).to_contain_text("member of this campaign")
    expect(page.locator("#whisper-text")).to_have_value("Psst, stranger.")
    expect(page.locator("#send-whisper")).to_be_enabled()
    page.locator("#whisper-text").fill("")
    notice.locator("button").click()

    # The DM's private narration for Alice alone (the DM's own tool appends this event),
    # then a DM turn with a roll only Alice sees and a narration for everyone. The turn is
    # live from the server; the private narration before it reaches Alice's page as the
    # gap the room fills from the log.
    in_thread(
        lambda: events_append(
            campaign_id=campaign.id,
            events=[
                NewEvent(
                    "whisper",
                    {
                        "to": str(alice_user.id),
                        "to_user_id": str(alice_user.id),
                        "from_user_id": None,
                        "text": "Only you notice the **tripwire** across the stair.",
                    },
                    "dm",
                    None,
                    {"kind": "users", "user_ids": [str(alice_user.id)]},
                )
            ],
        )
    )
    server.tools_execute(
        {
            "campaign_id": str(campaign.id),
            "narration": "The stair creaks under the party's weight.",
            "options": ["Go on", "Turn back"],
            "tool_calls": [
                {
                    "name": "roll",
                    "args": {
                        "formula": "1d20+3",
                        "reason": "Alice's perception",
                        "private_to": str(alice_user.id),
                    },
                }
            ],
        }
    )
    for player in everyone:
        expect(player.page.locator("#feed-events .entry-dm").last).to_contain_text(
            "The stair creaks", timeout=WAIT_MS
        )
    dm_whisper = whispers(alice).last
    expect(dm_whisper.locator(".entry-who")).to_have_text("The DM, to you alone")
    expect(dm_whisper).to_have_class(re.compile(r"\bto-me\b.*\bfrom-dm\b"))
    expect(dm_whisper.locator(".entry-body strong")).to_have_text("tripwire")
    expect(dm_whisper.locator(".entry-body")).to_have_text(
        "Only you notice the tripwire across the stair."
    )
    last_whisper_is(
        master, "The DM → Alice (whisper)", "Only you notice the tripwire across the stair."
    )
    alice_roll = alice.page.locator(".entry-roll", has_text="Alice's perception")
    expect(alice_roll.locator(".entry-tag")).to_have_text("private")
    gm_roll = master.page.locator(".entry-roll", has_text="Alice's perception")
    expect(gm_roll.locator(".entry-tag")).to_have_text("private: Alice")

    # Bob's page never showed what was not his: his own whisper only, no private roll.
    expect(whispers(bob)).to_have_count(2)
    expect(bob.page.locator(".entry-roll", has_text="Alice's perception")).to_have_count(0)
    for words in ("silver key", "Bob is not who", "tripwire"):
        expect(bob.page.locator("#feed")).not_to_contain_text(words)
    expect(alice.page.locator("#feed")).not_to_contain_text("I am a spy")
    expect(whispers(alice)).to_have_count(4)
    expect(whispers(master)).to_have_count(5)
    assert Event.objects.filter(campaign_id=campaign.id, type="whisper").count() == 5
    for player in everyone:
        assert player.page.evaluate("window.__pwned") is None
        expect(player.page.locator("#feed img")).to_have_count(0)

    # While the connection is down the Whisper button waits; it comes back with the room.
    alice.page.locator("#whisper-text").fill("Are you still there?")
    server.stop()
    expect(alice.page.locator('[data-banner="connection"]')).to_be_visible(timeout=WAIT_MS)
    expect(alice.page.locator("#send-whisper")).to_be_disabled()
    server.start()
    for player in everyone:
        player.page.evaluate(
            """document.querySelector('[data-banner="connection"] button')?.click()"""
        )
        expect(player.page.locator("#room-status")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
    expect(alice.page.locator("#send-whisper")).to_be_enabled()
    alice.page.locator("#whisper-text").fill("")

    assert master.errors == [] and alice.errors == [] and bob.errors == []

    # The picture for the docs: Alice's side of it, the whisper box open.
    whisper_form = alice.page.locator("#whisper-form")
    alice.page.locator("#whisper-to").select_option(label="The GM")
    alice.page.locator("#whisper-text").fill("Can I roll to pick the lock quietly?")
    expect(whisper_form).to_be_visible()
    alice.page.set_viewport_size({"width": 1280, "height": 960})
    alice.page.locator("#feed").evaluate("feed => { feed.scrollTop = feed.scrollHeight; }")
    save_screenshot(alice.page, "room-whisper.png", tmp_path)
    master.page.screenshot(path=str(tmp_path / "room-whisper-gm.png"))

    # 360 px wide: the box and the whispers fit.
    bob.page.set_viewport_size({"width": 360, "height": 740})
    expect(bob.page.locator("#whisper-form")).to_be_visible()
    assert_fits(bob.page)
    bob.page.screenshot(path=str(tmp_path / "room-whisper-phone.png"))

    # Removed from the campaign: the whisper box closes for good, like the action box.
    master.page.on("dialog", lambda dialog: dialog.accept())
    master.page.get_by_role("button", name="Remove Bob from the campaign").click()
    expect(bob.page.locator('[data-banner="closed"]')).to_be_visible(timeout=WAIT_MS)
    for control in ("#whisper-toggle", "#whisper-to", "#whisper-text", "#send-whisper"):
        expect(bob.page.locator(control)).to_be_disabled()
    assert bob.errors == []
