"""Dice, commands and GM direction in the room, in a real browser (Debian's Chromium driven
by Playwright, against daphne; the set-up is tests/test_browser_room.py's).

Alice (on a phone) rolls with the dice button (formula, DC, reason), then privately: Bob
sees the first roll and never the private one, the GM sees both and whose the private one
is. `/roll 2d6 dc 7 damage` typed in the action box rolls too; a bad formula gets the
server's reason in plain words by the box, with the command back in it; `/help` lists the
commands and `/dance` is an unknown command: none of it reaches the log as an action or
calls the DM. The GM directs the DM from the panel, in public and in secret: the room shows
a GM line, never a character's action, and the secret one to the GM only.

Screenshots (a temporary folder; `docs/` with RPGAI_SCREENSHOTS=docs): room-dice-phone.png,
room-gm-direction.png.
"""

from __future__ import annotations

import json
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
    assert_fits,
    open_room,
    save_screenshot,
)

# The room test's fixtures: Chromium, a daphne server, the campaign, Alice and Bob.
browser = room.browser
server = room.server
campaign = room.campaign
players = room.players


def count(campaign: Any, type_name: str) -> int:
    return Event.objects.filter(campaign_id=campaign.id, type=type_name).count()


def rolls(player: Player) -> Any:
    return player.page.locator("#feed-events .entry-roll")


def type_command(player: Player, text: str) -> None:
    box = player.page.locator("#action-text")
    box.fill(text)
    box.press("Enter")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_dice_button_roll_commands_help_and_gm_direction(
    browser: Any, server: Any, campaign: Any, gm: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    alice = open_room(browser, server, alice_user, campaign, **PHONE)
    bob = open_room(browser, server, bob_user, campaign, **DESKTOP)
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    page = alice.page

    # The dice button: formula, DC and reason; everyone sees the roll and its target.
    page.locator("#dice-toggle").click()
    expect(page.locator("#dice-form")).to_be_visible()
    expect(page.locator("#dice-formula")).to_have_value("1d20")
    page.locator("#dice-formula").fill("1d20+3")
    page.locator("#dice-dc").fill("12")
    page.locator("#dice-reason").fill("Climb the wall")
    assert_fits(page)
    page.locator("#send-roll").click()
    expect(page.locator("#dice-status")).to_contain_text("Rolled 1d20+3", timeout=WAIT_MS)
    [result] = Event.objects.filter(campaign_id=campaign.id, type="roll_result")
    p = result.payload
    assert p["dc"] == 12 and p["success"] is (p["total"] >= 12)
    outcome = "Success" if p["success"] else "Failure"
    expect(page.locator("#dice-status")).to_contain_text(
        f"{p['total']} against DC 12: {outcome.lower()}"
    )
    for player in (alice, bob, master):
        roll = rolls(player).last
        expect(roll.locator(".roll-reason")).to_have_text("Climb the wall", timeout=WAIT_MS)
        expect(roll.locator(".roll-total")).to_have_text(str(p["total"]))
        expect(roll.locator(".roll-target")).to_have_text(f"DC 12 · {outcome}")

    # A private roll: Alice and the GM see it (the GM is told whose), Bob never does.
    page.locator("#dice-formula").fill("1d20")
    page.locator("#dice-dc").fill("")
    page.locator("#dice-reason").fill("Sense a lie")
    page.locator("#dice-private").check()
    page.locator("#send-roll").click()
    expect(page.locator("#dice-status")).to_contain_text("Rolled 1d20", timeout=WAIT_MS)
    expect(rolls(alice)).to_have_count(2, timeout=WAIT_MS)
    expect(rolls(alice).last.locator(".entry-tag")).to_have_text("private")
    expect(rolls(master)).to_have_count(2, timeout=WAIT_MS)
    expect(rolls(master).last.locator(".entry-tag")).to_have_text("private: Alice")
    # A bad DC is said in the box, and nothing is sent.
    page.locator("#dice-dc").fill("99")
    page.locator("#send-roll").click()
    expect(page.locator("#dice-status")).to_have_text("The DC is a whole number from 1 to 40.")
    page.locator("#dice-dc").fill("")
    page.locator("#dice-private").uncheck()

    # /roll in the action box: a roll, never an action; the box is emptied.
    type_command(alice, "/roll 2d6 dc 7 damage to the door")
    expect(rolls(alice)).to_have_count(3, timeout=WAIT_MS)
    expect(rolls(alice).last.locator(".roll-reason")).to_have_text("damage to the door")
    expect(rolls(alice).last.locator(".roll-target")).to_contain_text("DC 7")
    expect(page.locator("#action-text")).to_have_value("")
    expect(page.locator("#composer-note")).to_contain_text("Rolled 2d6", timeout=WAIT_MS)

    # A bad formula: the server's reason, in words, by the box; the command comes back.
    type_command(alice, "/roll 1d20+ Stealth")
    note = page.locator("#composer-note")
    expect(note).to_contain_text("That roll was not made", timeout=WAIT_MS)
    expect(note).to_contain_text("formula")
    expect(page.locator("#action-text")).to_have_value("/roll 1d20+ Stealth")

    # /help lists the commands, here only; an unknown command is said so.
    type_command(alice, "/help")
    expect(note).to_contain_text("/roll 1d20+3 Stealth")
    expect(note).to_contain_text("/gmroll")
    assert_fits(page)
    save_screenshot(page, "room-dice-phone.png", tmp_path)
    type_command(alice, "/dance wildly")
    expect(note).to_contain_text("Unknown command /dance")
    expect(page.locator("#action-text")).to_have_value("/dance wildly")
    assert_fits(page)
    note.get_by_role("button", name="Close this note").click()
    expect(note).to_be_hidden()

    # None of it was an action, and the DM was never asked.
    expect(rolls(bob)).to_have_count(2, timeout=WAIT_MS)  # the two public rolls
    assert count(campaign, "roll_result") == 3
    assert count(campaign, "player_action") == 0
    assert count(campaign, "dm_narration") == 0
    expect(page.locator("#feed-events .entry-action")).to_have_count(0)
    expect(page.locator("#feed-pending .entry-pending")).to_have_count(0)

    # The GM directs the DM: a GM line in every room, not a character's action.
    gm_page = master.page
    gm_page.locator("#gm-direct-text").fill("The bell begins to toll.")
    expect(gm_page.locator("#gm-direct-now")).to_be_checked()
    gm_page.locator("#gm-direct-send").click()
    expect(gm_page.locator("#gm-direct-status")).to_contain_text("Sent to the DM", timeout=WAIT_MS)
    expect(gm_page.locator("#gm-direct-text")).to_have_value("")
    for player in (alice, bob, master):
        line = player.page.locator("#feed-events .entry-direction").last
        expect(line.locator(".entry-text")).to_have_text(
            "The bell begins to toll.", timeout=WAIT_MS
        )
        expect(line.locator(".badge-gm")).to_have_text("GM")
    expect(bob.page.locator("#feed-events .entry-direction .entry-who")).to_contain_text(
        "directs the DM"
    )
    # A secret one, for the next turn: the GM's room only.
    gm_page.locator("#gm-direct-text").fill("The innkeeper is a spy.")
    gm_page.locator("#gm-direct-secret").check()
    gm_page.locator("#gm-direct-now").uncheck()
    gm_page.locator("#gm-direct-send").click()
    expect(gm_page.locator("#gm-direct-status")).to_contain_text("next turn", timeout=WAIT_MS)
    secret = gm_page.locator("#feed-events .entry-direction").last
    expect(secret.locator(".entry-text")).to_have_text("The innkeeper is a spy.", timeout=WAIT_MS)
    expect(secret.locator(".entry-tag")).to_have_text("GM only")
    expect(secret.locator(".entry-note")).to_have_text("For the DM's next turn.")
    [public, hidden] = Event.objects.filter(campaign_id=campaign.id, type="gm_direction").order_by(
        "seq"
    )
    assert (public.visibility, hidden.visibility) == ({"kind": "all"}, {"kind": "gm"})
    assert hidden.payload == {"text": "The innkeeper is a spy.", "now": False}
    assert count(campaign, "player_action") == 0
    # Bob never gets the secret one: a public roll after it reaches him, it does not.
    type_command(alice, "/roll 1d4 afterwards")
    expect(rolls(bob)).to_have_count(3, timeout=WAIT_MS)
    expect(bob.page.locator("#feed-events .entry-direction")).to_have_count(1)
    expect(bob.page.locator("#feed-events")).not_to_contain_text("spy")
    expect(page.locator("#feed-events")).not_to_contain_text("spy")

    save_screenshot(gm_page, "room-gm-direction.png", tmp_path)
    assert alice.errors == [] and bob.errors == [] and master.errors == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_rapid_actions_are_told_to_wait_and_none_is_dropped(
    browser: Any, campaign: Any, players: tuple[Any, Any]
) -> None:
    """A player sends actions faster than the DM answers, and faster than the socket's
    throttle allows: the page says "The DM is still answering your last actions", sends
    the refused ones again by itself, and every action reaches the log once."""
    from playwright.sync_api import expect

    server = room.Server(
        WS_THROTTLE_CONNECTION_BURST="4",
        WS_THROTTLE_CONNECTION_RATE="2",
        DM_FAKE_CHUNK_DELAY_SECONDS="0.05",
    )
    server.start()
    try:
        alice_user, _ = players
        alice = open_room(browser, server, alice_user, campaign, **PHONE)
        page = alice.page
        # What the server says to the page, from a fresh load on (to check both paths).
        frames: list[dict] = []
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived",
                lambda frame: frames.append(json.loads(frame if isinstance(frame, str) else "{}")),
            ),
        )
        page.reload()
        expect(page.locator("#room-status")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
        texts = [f"I take step {n}" for n in range(6)]
        page.evaluate(
            """texts => {
                const box = document.getElementById('action-text');
                for (const text of texts) {
                    box.value = text;
                    box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
                }
            }""",
            texts,
        )
        expect(page.locator("#notices")).to_contain_text(
            "The DM is still answering your last actions", timeout=WAIT_MS
        )
        actions = page.locator("#feed-events .entry-action .entry-text")
        expect(actions).to_have_count(6, timeout=WAIT_MS)
        assert actions.all_inner_texts() == texts
        expect(page.locator("#feed-pending .entry-pending")).to_have_count(0)
        stored = Event.objects.filter(campaign_id=campaign.id, type="player_action")
        assert [e.payload["text"] for e in stored.order_by("seq")] == texts
        # Both kinds of waiting happened: refused by the throttle (and sent again), and
        # taken behind unanswered ones.
        assert any(f.get("type") == "error" and f.get("code") == "rate_limited" for f in frames)
        assert any(f.get("type") == "server.ack" and f.get("waiting") for f in frames)
        assert alice.errors == []
    finally:
        server.stop()
