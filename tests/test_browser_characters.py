"""Characters in the room, in a real browser (Debian's Chromium driven by Playwright,
against daphne; the set-up is tests/test_browser_room.py's). CONTRACTS §7 "Characters".

A player who joined has a blank sheet: the room offers the creation form (a banner, the
sheet's button, or at once from …/#make-character). Alice makes a fighter by standard array
and sees on her sheet the HP and AC the SRD gives (12 and 16); Bob reads her sheet from the
party; Alice edits her backstory; the GM's correction (level 2, HP 5) reaches Alice's sheet
live. On a phone Bob's point buy over 27 points is refused before anything is sent, he rolls
his abilities with the campaign's dice (shown as dice), and a second roll from another
window is refused with the server's words; nothing scrolls sideways and the panel button
never covers the HP number. A campaign of another edition gets the rules-light form.

Screenshots (a temporary folder; `docs/screenshots/` with RPGAI_SCREENSHOTS=docs):
characters-create-desktop.png, characters-sheet-desktop.png, characters-gm-edit.png,
characters-point-buy-phone.png, characters-rolled-phone.png, characters-sheet-phone.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from campaigns import selectors
from campaigns.models import Event
from campaigns.services import campaign_create, campaign_join
from tests import test_browser_room as room
from tests.processes import ROOT
from tests.test_browser_room import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Player,
    assert_fits,
    character_id_of,
    in_thread,
    open_room,
)
from tests.ws import _session_cookie

# The room test's fixtures: Chromium, a daphne server, the campaign, Alice and Bob.
browser = room.browser
server = room.server
campaign = room.campaign
players = room.players

SCREENSHOTS = ROOT / "docs" / "screenshots"


def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    # Finished flashes only (a changed sheet glows for a moment).
    page.wait_for_function(
        """() => document.getAnimations().every(
            a => a.playState !== 'running' || a.effect?.getTiming().iterations === Infinity
        )"""
    )
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("RPGAI_SCREENSHOTS") == "docs":
        SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / name)
    return path


def open_at(browser: Any, server: Any, user: Any, path: str, **options: Any) -> Player:
    """open_room, at any path of the site (a fragment such as #make-character included)."""
    from playwright.sync_api import expect

    context = browser.new_context(base_url=server.base, **(options or DESKTOP))
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": _session_cookie(user), "url": server.base}]
    )
    page = context.new_page()
    player = Player(context, page)
    page.goto(path)
    expect(page.locator("#room-status")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return player


def count(campaign: Any, type_name: str) -> int:
    return Event.objects.filter(campaign_id=campaign.id, type=type_name).count()


def sheet_of(campaign: Any, user: Any) -> dict[str, Any]:
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    return state["characters"][character_id_of(campaign, user)]


def assert_apart(page: Any, first: str, second: str) -> None:
    """Two elements' boxes do not overlap, and both are inside the viewport's width."""
    boxes = page.evaluate(
        """([a, b]) => [a, b].map(s => {
            const r = document.querySelector(s).getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width};
        })""",
        [first, second],
    )
    x, y = boxes
    width = page.evaluate("innerWidth")
    apart = (
        x["right"] <= y["left"]
        or y["right"] <= x["left"]
        or x["bottom"] <= y["top"]
        or y["bottom"] <= x["top"]
    )
    inside = max(x["right"], y["right"]) <= width and x["width"] > 0 and y["width"] > 0
    assert apart and inside, (first, second, boxes, width)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_fighter_by_standard_array_the_owners_story_and_the_gms_correction(
    browser: Any, server: Any, campaign: Any, gm: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    bob = open_room(browser, server, bob_user, campaign, **PHONE)
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    page = alice.page

    # A blank sheet: the room offers the form, and the sheet has the same button.
    banner = page.locator('[data-banner="character"]')
    expect(banner).to_contain_text("Your character is a blank sheet.", timeout=WAIT_MS)
    expect(page.locator("#sheet .sheet-make-button")).to_have_text("Make your character")
    expect(master.page.locator('[data-banner="character"]')).to_have_count(0)
    banner.get_by_role("button", name="Make your character").click()
    dialog = page.locator("#character-dialog")
    expect(dialog).to_be_visible()
    # The SRD 5.1 lists, from the server, and the licence's credit.
    classes = page.locator("#cf-class option")
    expect(classes).to_have_count(12)
    expect(page.locator("#cf-ancestry option")).to_have_count(9)
    expect(dialog.locator(".cf-credit")).to_contain_text("System Reference Document 5.1")
    expect(dialog.locator(".cf-credit a")).to_have_attribute(
        "href", "https://creativecommons.org/licenses/by/4.0/legalcode"
    )
    expect(page.locator("#cf-name")).to_have_value("Alice")  # the placeholder's name

    page.locator("#cf-name").fill("Brienne")
    page.locator("#cf-class").select_option("wizard")
    # The standard array is placed for the class: a wizard's 15 goes to INT.
    expect(page.locator("#cf-std-int")).to_have_value("15")
    page.locator("#cf-class").select_option("fighter")
    expect(page.locator("#cf-std-str")).to_have_value("15")
    expect(page.locator("#cf-std-con")).to_have_value("14")
    expect(page.locator("#cf-ancestry")).to_have_value("human")
    # The preview: a human fighter has CON 15 (+2): HP 10 + 2; chain mail: AC 16.
    expect(page.locator('#cf-preview [data-preview="hp"]')).to_have_text("12")
    expect(page.locator('#cf-preview [data-preview="ac"]')).to_have_text("16")
    expect(page.locator("#cf-preview")).to_contain_text("Proficiency +2")
    # Reordering swaps: DEX takes the 15, STR gets DEX's 13; the class default puts it back.
    page.locator("#cf-std-dex").select_option("15")
    expect(page.locator("#cf-std-str")).to_have_value("13")
    page.locator("#cf-reset").click()
    expect(page.locator("#cf-std-str")).to_have_value("15")
    expect(page.locator("#cf-std-dex")).to_have_value("13")
    page.locator("#cf-backstory").fill("A knight without a lord.")
    save_screenshot(page, "characters-create-desktop.png", tmp_path)
    page.locator("#cf-submit").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)

    # The server's sheet: SRD numbers, on Alice's sheet.
    made = sheet_of(campaign, alice_user)
    assert (made["class"], made["ancestry"], made["ability_method"]) == (
        "fighter",
        "human",
        "standard_array",
    )
    assert made["abilities"] == {"str": 16, "dex": 14, "con": 15, "int": 9, "wis": 13, "cha": 11}
    assert (made["max_hp"], made["hp"], made["ac"], made["proficiency_bonus"]) == (12, 12, 16, 2)
    sheet = page.locator("#sheet")
    expect(sheet.locator(".sheet-name")).to_have_text("Brienne", timeout=WAIT_MS)
    expect(sheet.locator(".sheet-what")).to_have_text("Level 1 Human Fighter")
    expect(sheet.locator(".hp-text")).to_have_text("12 / 12")
    expect(sheet.locator(".sheet-ac")).to_have_text("AC 16")
    expect(sheet.locator('[data-ability="str"] .sheet-ability-score')).to_have_text("16")
    expect(sheet.locator('[data-ability="str"] .sheet-ability-mod')).to_have_text("+3")
    minus = "\u2212"  # the sheet writes a minus sign, not a hyphen
    expect(sheet.locator('[data-ability="int"] .sheet-ability-mod')).to_have_text(f"{minus}1")
    expect(sheet.locator(".sheet-ability.save")).to_have_count(2)  # STR and CON
    expect(sheet.locator(".sheet-proficiency")).to_have_text("Proficiency +2")
    expect(sheet.locator(".sheet-backstory")).to_have_text("A knight without a lord.")
    expect(banner).to_have_count(0)
    expect(page.locator("#feed-events")).to_contain_text("You made Brienne, level 1 Human Fighter")
    expect(page.locator("#phone-hp")).to_contain_text("AC 16")

    # Bob (on a phone) reads her sheet from the party.
    bob.page.locator("#panel-toggle").click()
    member = bob.page.locator(f'#party li[data-character-id="{made_id(campaign, alice_user)}"]')
    expect(member.locator(".party-what")).to_have_text("Level 1 Human Fighter", timeout=WAIT_MS)
    member.locator(".party-sheet > summary").click()
    expect(member.locator(".sheet-backstory")).to_have_text("A knight without a lord.")
    expect(member.locator(".sheet-edit")).to_have_count(0)  # not his to change
    assert_fits(bob.page)

    # The owner edits her name and backstory (and nothing else is offered her).
    page.locator("#sheet .sheet-edit").click()
    editor = page.locator("#sheet .sheet-editor")
    expect(editor.locator("input[name=level], input[name=hp]")).to_have_count(0)
    editor.locator("textarea[name=backstory]").fill("Sworn to find the lost heir.")
    editor.get_by_role("button", name="Save").click()
    expect(sheet.locator(".sheet-backstory")).to_have_text(
        "Sworn to find the lost heir.", timeout=WAIT_MS
    )
    expect(member.locator(".sheet-backstory")).to_have_text(
        "Sworn to find the lost heir.", timeout=WAIT_MS
    )
    [story] = Event.objects.filter(campaign_id=campaign.id, type="character_updated")
    assert story.payload["changes"] == {"backstory": "Sworn to find the lost heir."}
    assert story.actor_kind == "player"

    # The GM corrects her sheet from the party: level 2 and HP 5. Alice sees it live.
    gm_page = master.page
    gm_member = gm_page.locator(f'#party li[data-character-id="{made_id(campaign, alice_user)}"]')
    gm_member.locator(".party-sheet > summary").click()
    gm_member.locator(".sheet-edit").click()
    gm_editor = gm_member.locator(".sheet-editor")
    expect(gm_editor.locator("select[name=class]")).to_have_value("fighter")
    gm_editor.locator("input[name=level]").fill("2")
    gm_editor.locator("input[name=hp]").fill("5")
    save_screenshot(gm_page, "characters-gm-edit.png", tmp_path)
    gm_editor.get_by_role("button", name="Save").click()
    # A level-2 fighter: 12 + (6 + 2) = 20 max HP; the GM set HP 5.
    expect(sheet.locator(".sheet-what")).to_have_text("Level 2 Human Fighter", timeout=WAIT_MS)
    expect(sheet.locator(".hp-text")).to_have_text("5 / 20", timeout=WAIT_MS)
    expect(page.locator("#phone-hp .hp-text")).to_have_text("5 / 20")
    expect(gm_member.locator(".party-what")).to_have_text("Level 2 Human Fighter")
    expect(page.locator("#feed-events .entry-system").last).to_contain_text(
        "changed Brienne's sheet: level 2, HP 5", timeout=WAIT_MS
    )
    correction = (
        Event.objects.filter(campaign_id=campaign.id, type="character_updated")
        .order_by("seq")
        .last()
    )
    assert correction.actor_kind == "gm"
    assert correction.payload["changes"]["level"] == 2 and correction.payload["changes"]["hp"] == 5
    assert sheet_of(campaign, alice_user)["max_hp"] == 20
    save_screenshot(page, "characters-sheet-desktop.png", tmp_path)
    assert alice.errors == [] and bob.errors == [] and master.errors == []


def made_id(campaign: Any, user: Any) -> str:
    return character_id_of(campaign, user)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_on_a_phone_point_buy_is_held_to_27_and_the_roll_happens_once(
    browser: Any, server: Any, campaign: Any, gm: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    _, bob_user = players
    # From the join form's address the form opens at once; another window of his is open.
    bob = open_at(browser, server, bob_user, f"/campaigns/{campaign.id}/#make-character", **PHONE)
    other = open_room(browser, server, bob_user, campaign, **DESKTOP)
    page = bob.page
    dialog = page.locator("#character-dialog")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    assert "#" not in page.url  # a reload does not open it again
    assert_fits(page)

    # Point buy: a live counter, and no step into debt.
    page.locator("label[for=cf-method-point_buy]").click()
    points = page.locator("#cf-points")
    expect(points).to_have_text("0 of 27 points spent, 27 left.")
    for _ in range(7):
        page.locator("#cf-pb-str-up").click()
    expect(page.locator("#cf-pb-str")).to_have_value("15")
    expect(page.locator("#cf-pb-str-up")).to_be_disabled()  # 15 is the most
    expect(points).to_have_text("9 of 27 points spent, 18 left.")
    # Typed past the budget: said at once, refused before anything is sent.
    for ability in ("dex", "con", "int", "wis", "cha"):
        page.locator(f"#cf-pb-{ability}").fill("15")
    expect(points).to_have_text("54 of 27 points: 27 over. Lower a score.")
    expect(points).to_have_attribute("data-state", "over")
    expect(page.locator("#cf-pb-wis-up")).to_be_disabled()
    assert_fits(page)
    page.locator("#cf-submit").click()
    error = page.locator("#cf-abilities-error")
    expect(error).to_have_text(
        "These scores cost 54 points; point buy has 27. Lower a score by 27 points' worth first."
    )
    expect(page.locator("#cf-scores")).to_have_attribute("aria-invalid", "true")
    save_screenshot(page, "characters-point-buy-phone.png", tmp_path)
    assert count(campaign, "character_created") == 0

    # Rolled instead: the server rolls 4d6 six times, in front of the table, shown as dice.
    other.page.locator("#make-character").click()  # the other window's form, still open
    other.page.locator("label[for=cf-method-roll]").click()
    page.locator("#cf-name").fill("Pip")
    page.locator("#cf-class").select_option("rogue")
    page.locator("#cf-ancestry").select_option("halfling")
    page.locator("label[for=cf-method-roll]").click()
    expect(page.locator("#cf-preview")).to_contain_text("after the dice")
    expect(page.locator("#cf-submit")).to_have_text("Roll the dice and make my character")
    page.locator("#cf-submit").dblclick()  # an impatient double tap sends once
    result = page.locator("#cf-result")
    expect(result).to_contain_text("The dice have spoken", timeout=WAIT_MS)
    expect(result.locator(".cf-roll")).to_have_count(6, timeout=WAIT_MS)
    expect(result.locator(".cf-roll .die")).to_have_count(24)
    expect(result.locator(".cf-roll .die.dropped")).to_have_count(6)
    rolls = list(Event.objects.filter(campaign_id=campaign.id, type="roll_result").order_by("seq"))
    assert len(rolls) == 6 and all(r.payload["formula"] == "4d6kh3" for r in rolls)
    totals = [r.payload["total"] for r in rolls]
    expect(result.locator(".cf-roll-total")).to_have_text([f"= {t}" for t in totals])
    made = sheet_of(campaign, bob_user)
    assert made["ability_method"] == "roll" and made["class"] == "rogue"
    # Highest total to DEX (a rogue's first ability), +2 for a lightfoot halfling.
    assert made["abilities"]["dex"] == max(totals) + 2
    expect(result.locator(".cf-result-derived")).to_contain_text(
        f"HP {made['max_hp']} · AC {made['ac']}"
    )
    assert_fits(page)
    save_screenshot(page, "characters-rolled-phone.png", tmp_path)
    result.get_by_role("button", name="To the table").click()
    expect(dialog).to_be_hidden()

    # The other window rolls again: the server refuses, in words, and no die is cast.
    other.page.locator("#cf-name").fill("Pip")
    other.page.locator("#cf-submit").click()
    refusal = other.page.locator("#cf-submit-error")
    expect(refusal).to_contain_text("Your character is made already", timeout=WAIT_MS)
    assert count(campaign, "roll_result") == 6 and count(campaign, "character_created") == 1

    # The sheet on the phone: readable, nothing sideways, the HP number never under the button
    # (a long name and three-digit hit points, as the GM sets them, included).
    expect(page.locator("#phone-hp .hp-text")).to_have_text(
        f"{made['hp']} / {made['max_hp']}", timeout=WAIT_MS
    )
    assert_apart(page, "#phone-hp .hp-text", "#panel-toggle")
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    status = master.page.evaluate(
        """async ([url, changes]) => (await fetch(url, {
            method: "PATCH",
            headers: {
                "Content-Type": "application/json",
                "X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content,
            },
            body: JSON.stringify(changes),
        })).status""",
        [
            f"/api/campaigns/{campaign.id}/characters/{character_id_of(campaign, bob_user)}",
            {"name": "Peregrin Pipwhistle of Tuckborough", "max_hp": 120, "hp": 120},
        ],
    )
    assert status == 200
    expect(page.locator("#phone-hp .hp-text")).to_have_text("120 / 120", timeout=WAIT_MS)
    assert_apart(page, "#phone-hp .hp-text", "#panel-toggle")
    page.locator("#panel-toggle").click()
    sheet = page.locator("#sheet")
    expect(sheet.locator(".sheet-name")).to_have_text("Peregrin Pipwhistle of Tuckborough")
    expect(sheet.locator(".sheet-what")).to_have_text("Level 1 Lightfoot Rogue")
    expect(sheet.locator(".sheet-ability")).to_have_count(6)
    expect(sheet.locator('[data-ability="dex"] .sheet-ability-score')).to_have_text(
        str(made["abilities"]["dex"])
    )
    assert_apart(page, "#phone-hp .hp-text", "#panel-toggle")  # now "Story"
    assert_fits(page)
    expect(page.locator(".srd-credit a[rel~=license]")).to_have_attribute(
        "href", "https://creativecommons.org/licenses/by/4.0/legalcode"
    )
    save_screenshot(page, "characters-sheet-phone.png", tmp_path)
    assert bob.errors == [] and other.errors == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_another_edition_gets_the_rules_light_form(
    browser: Any, server: Any, gm: Any, make_user: Any
) -> None:
    from playwright.sync_api import expect

    other = in_thread(lambda: campaign_create(name="Dead Stars", edition="Mothership", creator=gm))
    carol = make_user("carol")
    in_thread(
        lambda: campaign_join(invite_code=other.invite_code, user=carol, display_name="Carol")
    )
    player = open_at(browser, server, carol, f"/campaigns/{other.id}/#make-character", **PHONE)
    page = player.page
    expect(page.locator("#character-dialog")).to_be_visible(timeout=WAIT_MS)
    # Free words for class and ancestry; no SRD, no point buy, no credit to give.
    expect(page.locator("#cf-class")).to_have_attribute("type", "text")
    expect(page.locator("#cf-method-point_buy")).to_have_count(0)
    expect(page.locator(".cf-credit, .srd-credit")).to_have_count(0)
    page.locator("#cf-name").fill("Ripley")
    page.locator("#cf-class").fill("Teamster")
    page.locator("#cf-ancestry").fill("Human")
    page.locator("label[for=cf-light-abilities]").click()
    page.locator("#cf-light-str").fill("14")
    page.locator("#cf-backstory").fill("Hauls ore between dead stars.")
    assert_fits(page)
    page.locator("#cf-submit").click()
    expect(page.locator("#character-dialog")).to_be_hidden(timeout=WAIT_MS)
    page.locator("#panel-toggle").click()
    sheet = page.locator("#sheet")
    expect(sheet.locator(".sheet-what")).to_have_text("Level 1 Human Teamster", timeout=WAIT_MS)
    expect(sheet.locator('[data-ability="str"] .sheet-ability-mod')).to_have_text("+2")
    expect(sheet.locator(".sheet-backstory")).to_have_text("Hauls ore between dead stars.")
    made = sheet_of(other, carol)
    assert made["sheet"] == "light" and made["abilities"]["str"] == 14
    assert (made["hp"], made["ac"]) == (10, 12)  # as the placeholder had them
    assert player.errors == []
