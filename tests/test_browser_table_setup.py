"""A table to sit down at, in a real browser (Debian's Chromium driven by Playwright,
against daphne sharing this test's database; the set-up is tests/test_browser_room.py's).
Issue 19 items 2 and 3, CONTRACTS §7 "Campaign setup", "X-card", "Recap and journal".

The issue's flow: a GM creates a campaign with a premise, a tone, lines and veils through
the create form; the DM's opening scene appears with no action; a player joins through the
join form, lands in the character form and makes a fighter by standard array (HP 12 and
AC 16 per the SRD, on the sheet); plays; leaves. The GM acts meanwhile. The clock moves an
hour: the player's stored last-seen time is moved back through the ORM (the server reads
the same database; RECAP_CARD_AWAY_SECONDS keeps its default of an hour, and the card is
shown to no one who was away less). The player comes back to "Previously on…" with the
GM's part and not the part they had seen, on a desktop and on a phone at once, and
downloads the journal (fetched in the page: the narrations and the rolls with their
results). Then the X-card, tapped by the player: the story shows the anonymous line, the
next narration leaves the scene, and tapping past the limit is refused in plain words. The
GM edits the setup from the room (errors next to the field), archives the campaign (the
player's input is disabled live; an action that was waiting for the connection is refused
in plain words) and brings it back.

Screenshots (a temporary folder; `docs/screenshots/` with RPGAI_SCREENSHOTS=docs):
setup-create-form.png, setup-opening-scene.png, recap-card-desktop.png,
recap-card-phone.png, x-card-phone.png, setup-archived.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db.models import F

from campaigns import selectors
from campaigns.models import Campaign, Event, Membership
from memory.recap import recap_get
from realtime.models import MemberLastSeen
from tests import test_browser_room as room
from tests.test_browser_characters import save_screenshot
from tests.test_browser_room import DESKTOP, PHONE, WAIT_MS, Player, assert_fits
from tests.ws import _session_cookie

# The room test's fixtures: Chromium and a daphne server on this test's database.
browser = room.browser
server = room.server

PREMISE = (
    "The lighthouse keepers of Gull Rock have gone silent, and the supply boat came back "
    "empty. The party is hired to find out why."
)
TONE = "eerie coastal mystery"
LINES = ["harm to children", "spiders"]
VEILS = ["torture"]
X_CARD_LINE = "Someone tapped the X-card: the story moves on."
ARCHIVED = "This campaign is archived: read only."


def visit(browser: Any, server: Any, user: Any, path: str, **options: Any) -> Player:
    """A browser context logged in as `user`, at `path` (no wait: pages differ)."""
    context = browser.new_context(base_url=server.base, **(options or DESKTOP))
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": _session_cookie(user), "url": server.base}]
    )
    page = context.new_page()
    player = Player(context, page)
    page.goto(path)
    return player


def live(player: Player) -> None:
    from playwright.sync_api import expect

    expect(player.page.locator("#room-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_MS / 1000) -> Any:
    """Poll the database (the server's writes land there) until `check` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events(campaign: Any, type_name: str) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign.id, type=type_name).order_by("seq"))


def unescaped(markdown: str) -> str:
    """The journal's text with its Markdown escapes undone and its spaces collapsed."""
    return " ".join(re.sub(r"\\(.)", r"\1", markdown).split())


def flat(text: str) -> str:
    return " ".join(text.split())


def act(player: Player, text: str) -> None:
    box = player.page.locator("#action-text")
    box.fill(text)
    box.press("Enter")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_setup_opening_recap_journal_x_card_and_archive(
    browser: Any, server: Any, gm: Any, make_user: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user = make_user("alice")

    # --- The GM creates the campaign with its setup, through the create form -------------
    master = visit(browser, server, gm, "/campaigns/")
    page = master.page
    page.locator("#create_name").fill("The Salt Road")
    page.locator("#create_display_name").fill("Mara")
    page.locator("#create_premise").fill(PREMISE)
    page.locator("#create_tone").fill(TONE)
    page.locator("#create_turn_mode").select_option("free")
    page.locator("#create_lines").fill("\n".join(LINES))
    page.locator("#create_veils").fill("\n".join(VEILS))
    # The whole page in one screen (a window as tall as the page: nothing scrolls).
    page.locator("#create_veils").blur()
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": height})
    save_screenshot(page, "setup-create-form.png", tmp_path)
    page.set_viewport_size(DESKTOP["viewport"])
    page.get_by_role("button", name="Create campaign").click()
    live(master)
    campaign_id = re.search(r"/campaigns/([0-9a-f-]{36})/", page.url).group(1)
    campaign = Campaign.objects.get(id=campaign_id)
    [created] = events(campaign, "campaign_created")
    assert (created.payload["premise"], created.payload["tone"]) == (PREMISE, TONE)
    assert (created.payload["lines"], created.payload["veils"]) == (LINES, VEILS)

    # The opening scene, with no action: one narration answering campaign_created.
    feed = page.locator("#feed-events")
    expect(feed.locator(".entry-dm")).to_have_count(1, timeout=WAIT_MS)
    expect(feed.locator(".entry-action")).to_have_count(0)
    [opening] = events(campaign, "dm_narration")
    assert opening.payload["through_seq"] == created.seq
    assert not events(campaign, "player_action")
    # The first line of the story has the premise; the table panel the whole setup.
    start = feed.locator(".entry-start")
    expect(start).to_contain_text("A 5e campaign begins.")
    expect(start.locator(".entry-premise")).to_have_text(PREMISE)
    expect(start.locator(".entry-tone")).to_have_text(f"Tone: {TONE}")
    setup = page.locator("#setup-view")
    expect(setup.locator(".setup-premise")).to_have_text(PREMISE, timeout=WAIT_MS)
    expect(setup.locator(".setup-tone")).to_have_text(TONE)
    expect(setup.locator(".setup-lines li")).to_have_text(LINES)
    expect(setup.locator(".setup-veils li")).to_have_text(VEILS)
    expect(page.locator("#setup-archived")).to_be_hidden()
    save_screenshot(page, "setup-opening-scene.png", tmp_path)
    invite_code = page.locator("#invite-code").text_content().strip()

    # --- A player joins through the join form and makes a fighter ---------------------------
    alice = visit(browser, server, alice_user, "/campaigns/")
    alice.page.locator("#join_invite_code").fill(invite_code)
    alice.page.locator("#join_display_name").fill("Alice")
    alice.page.get_by_role("button", name="Join campaign").click()
    live(alice)
    a = alice.page
    dialog = a.locator("#character-dialog")
    expect(dialog).to_be_visible(timeout=WAIT_MS)  # the join form lands in the character form
    # She sees the setup too (every member does), and the opening scene.
    expect(a.locator("#setup-view .setup-premise")).to_have_text(PREMISE, timeout=WAIT_MS)
    expect(a.locator("#setup-view .setup-lines li")).to_have_text(LINES)
    a.locator("#cf-name").fill("Brienne")
    a.locator("#cf-class").select_option("fighter")
    a.locator("#cf-ancestry").select_option("human")
    expect(a.locator("#cf-method-standard_array")).to_be_checked()
    a.locator("#cf-submit").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    sheet = a.locator("#sheet")
    expect(sheet.locator(".sheet-what")).to_have_text("Level 1 Human Fighter", timeout=WAIT_MS)
    expect(sheet.locator(".hp-text")).to_have_text("12 / 12")  # d10 + CON +2
    expect(sheet.locator(".sheet-ac")).to_have_text("AC 16")  # chain mail
    membership = Membership.objects.get(campaign_id=campaign.id, user=alice_user)
    made = selectors.snapshot_get(campaign_id=campaign.id).state["characters"]
    [brienne] = [c for c in made.values() if c["owner_user_id"] == str(alice_user.id)]
    assert (brienne["max_hp"], brienne["ac"], brienne["ability_method"]) == (
        12,
        16,
        "standard_array",
    )

    # --- She plays a little, then leaves ----------------------------------------------------
    act(alice, "I attack the goblin on the jetty")
    expect(a.locator("#feed-events .entry-dm")).to_have_count(2, timeout=WAIT_MS)
    act(alice, "I search the boathouse for the silver key")
    expect(a.locator("#feed-events .entry-dm")).to_have_count(3, timeout=WAIT_MS)
    assert events(campaign, "roll_result"), "her actions were rolled for"
    alice.context.close()
    left = wait_until(
        lambda: MemberLastSeen.objects.filter(campaign_id=campaign.id, user=alice_user).first(),
        "the last seen mark of her closed socket",
    )
    assert left.seq == selectors.snapshot_get(campaign_id=campaign.id).version

    # The GM acts meanwhile: a public direction, narrated now.
    page.locator("#gm-direct-text").fill("A bell tolls from the drowned chapel across the bay")
    page.locator("#gm-direct-send").click()
    expect(feed.locator(".entry-dm")).to_have_count(4, timeout=WAIT_MS)

    # Back a minute later, she would get no card (something to tell, but not away long).
    soon = recap_get(membership=membership, since_seq=None)
    assert "drowned chapel" in soon.text and soon.card is False
    # The clock moves an hour: her stored last-seen time goes back an hour and a minute.
    MemberLastSeen.objects.filter(pk=left.pk).update(at=F("at") - timedelta(hours=1, minutes=1))

    # --- She comes back, on her desktop and her phone: "Previously on…" ---------------------
    alice = visit(browser, server, alice_user, f"/campaigns/{campaign.id}/", **DESKTOP)
    phone = visit(browser, server, alice_user, f"/campaigns/{campaign.id}/", **PHONE)
    a = alice.page
    for player in (alice, phone):
        live(player)
        card = player.page.locator("#recap")
        expect(card).to_be_visible(timeout=WAIT_MS)
        expect(card.locator(".recap-title")).to_have_text("Previously on The Salt Road…")
        body = card.locator(".recap-body")
        expect(body).to_contain_text("drowned chapel")  # the GM's part
        expect(body).not_to_contain_text("silver key")  # not what she had seen
        expect(body).not_to_contain_text("goblin")
        expect(card.locator(".recap-away")).to_contain_text("you were away about an hour")
    save_screenshot(a, "recap-card-desktop.png", tmp_path)

    # The phone: the card and the X-card button fit, nothing scrolls sideways.
    p = phone.page
    assert_fits(p)
    expect(p.locator("#x-card")).to_be_visible()
    box = p.locator("#x-card").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    recap_box = p.locator("#recap").bounding_box()
    assert recap_box and recap_box["x"] + recap_box["width"] <= 390, recap_box
    save_screenshot(p, "recap-card-phone.png", tmp_path)
    p.locator("#recap .recap-back").click()
    expect(p.locator("#recap")).to_be_hidden()
    # The X-card's explanation on the phone, the first time it is tapped (then "Not now").
    p.locator("#x-card").click()
    explain = p.locator("#x-card-explain")
    expect(explain).to_be_visible()
    expect(explain).to_contain_text(
        "Tap to have the DM move away from the current scene. Nobody is told who tapped it."
    )
    assert_fits(p)
    save_screenshot(p, "x-card-phone.png", tmp_path)
    p.locator("#x-card-cancel").click()
    expect(explain).to_be_hidden()
    assert not events(campaign, "x_card")
    phone.context.close()

    # --- The journal, downloaded from the room ---------------------------------------------
    link = a.locator("#journal-link")
    expect(link).to_have_text("Download journal")
    href = link.get_attribute("href")
    assert href == f"/api/campaigns/{campaign.id}/journal.md"
    assert a.locator("#recap .recap-journal").get_attribute("href") == href
    got = a.evaluate(
        """async (url) => {
            const r = await fetch(url);
            return {status: r.status, type: r.headers.get('content-type'),
                    disposition: r.headers.get('content-disposition'), text: await r.text()};
        }""",
        href,
    )
    assert got["status"] == 200 and got["type"].startswith("text/markdown"), got
    assert "the-salt-road-journal.md" in got["disposition"]
    journal = unescaped(got["text"])
    assert journal.startswith("# The Salt Road")
    narrations = events(campaign, "dm_narration")
    assert len(narrations) == 4
    for narration in narrations:
        assert flat(narration.payload["text"]) in journal, narration.payload["text"]
    rolls = events(campaign, "roll_result")
    for roll in rolls:
        assert f"`{roll.payload['formula']}` → **{roll.payload['total']}**" in journal, roll.payload
    assert "**Brienne (Alice):** I attack the goblin on the jetty" in journal
    assert "*The GM:* A bell tolls from the drowned chapel across the bay" in journal
    a.locator("#recap .recap-close").click()
    expect(a.locator("#recap")).to_be_hidden()

    # --- The X-card, tapped by the player ----------------------------------------------------
    scene_before = selectors.snapshot_get(campaign_id=campaign.id).state.get("scene") or {}
    x_button = a.locator("#x-card")
    assert "Nobody is told who tapped it." in x_button.get_attribute("title")
    requests: list[str] = []  # the X-card goes over the socket: no HTTP request at all
    a.on("request", lambda request: requests.append(request.url))
    x_button.click()
    expect(a.locator("#x-card-explain")).to_be_visible()  # her first tap in this browser
    a.locator("#x-card-confirm").click()
    for reader in (a, page):
        line = reader.locator("#feed-events .entry-xcard")
        expect(line).to_have_count(1, timeout=WAIT_MS)
        expect(line).to_have_text(f"✕ {X_CARD_LINE}")
    expect(a.locator('.notice[data-key="x-card"]')).to_contain_text("X-card tapped")
    [tapped] = events(campaign, "x_card")
    assert tapped.actor_kind == "system" and tapped.actor_user_id is None
    assert tapped.payload == {}
    # The next narration leaves the scene: a new place, told after the X-card's line.
    steered = wait_until(
        lambda: [n for n in events(campaign, "dm_narration") if n.seq > tapped.seq],
        "the narration after the X-card",
    )[0]
    assert steered.payload["through_seq"] >= tapped.seq
    scene_after = selectors.snapshot_get(campaign_id=campaign.id).state.get("scene") or {}
    assert scene_after.get("location") and scene_after.get("location") != scene_before.get(
        "location"
    )
    last_dm = a.locator("#feed-events .entry-dm").last
    expect(last_dm).to_have_attribute("data-seq", str(steered.seq), timeout=WAIT_MS)
    expect(last_dm).to_contain_text(flat(steered.payload["text"])[:60])
    for reader in (a, page):
        expect(reader.locator("#feed-events .entry-xcard")).not_to_contain_text("Alice")

    # Tapped again and again: past the limit (3 a minute a campaign) it is refused, in plain
    # words. (A fixed window may turn over between taps: tap until it refuses.)
    notice = a.locator('.notice[data-key="x-card"]')
    refused = False
    for _ in range(6):
        before = len(events(campaign, "x_card"))
        expect(x_button).to_be_enabled(timeout=WAIT_MS)
        x_button.click()
        expect(a.locator("#x-card-explain")).to_be_hidden()  # explained once is enough
        expect(x_button).to_be_enabled(timeout=WAIT_MS)  # answered
        if "moments ago" in (notice.text_content() or ""):
            refused = True
            assert len(events(campaign, "x_card")) == before
            break
        wait_until(lambda b=before: len(events(campaign, "x_card")) == b + 1, "the tap's event")
    assert refused, "the X-card was never refused"
    expect(notice).to_contain_text(
        "The X-card was tapped moments ago and the DM is already moving the story on. "
        "You can tap it again in"
    )
    assert "rate_limited" not in notice.text_content()
    assert not [url for url in requests if "x_card" in url], requests
    # Every tap was answered (the turns coalesce) before the GM goes on.
    wait_until(
        lambda: (
            max(n.payload["through_seq"] for n in events(campaign, "dm_narration"))
            >= events(campaign, "x_card")[-1].seq
        ),
        "the narration after the last tap",
    )
    expect(a.locator(".entry-streaming")).to_have_count(0, timeout=WAIT_MS)
    notice.get_by_role("button", name="Dismiss this notice").click()

    # --- The GM edits the setup from the room ------------------------------------------------
    page.locator("#setup-edit").click()
    gm_form = page.locator("#setup-form")
    expect(gm_form).to_be_visible()
    # Too many lines: said next to the field, before anything is sent.
    page.locator("#setup-lines").fill("\n".join(f"line {n}" for n in range(21)))
    page.locator("#setup-save").click()
    expect(page.locator("#setup-lines-error")).to_have_text(
        "At most 20 lines, one per line (you wrote 21)."
    )
    expect(page.locator("#setup-lines")).to_have_attribute("aria-invalid", "true")
    page.locator("#setup-lines").fill("\n".join([*LINES, "drowning"]))
    # The server's refusal, next to its field (the box's own limit taken away first).
    page.locator("#setup-tone").evaluate("node => node.removeAttribute('maxlength')")
    page.locator("#setup-tone").fill("x" * 201)
    page.locator("#setup-save").click()
    expect(page.locator("#setup-tone-error")).to_have_text(
        "At most 200 characters (this has 201).", timeout=WAIT_MS
    )
    expect(page.locator("#setup-lines-error")).to_be_hidden()
    assert not events(campaign, "campaign_updated")
    new_premise = "The keepers were taken by the sea; the party sails to bring them home."
    page.locator("#setup-tone").fill(TONE)
    page.locator("#setup-premise").fill(new_premise)
    page.locator("#setup-name").fill("The Salt Road Home")
    page.locator("#setup-save").click()
    expect(gm_form).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#setup-archive-status")).to_have_text(
        "Saved: the name, the premise, the lines. The DM keeps to it from its next turn.",
        timeout=WAIT_MS,
    )
    # Every member sees it at once: the panel, and a line in the story.
    expect(a.locator("#setup-view .setup-premise")).to_have_text(new_premise, timeout=WAIT_MS)
    expect(a.locator("#setup-view .setup-lines li")).to_have_text([*LINES, "drowning"])
    expect(a.locator("#feed-events .entry-setup").last).to_have_text(
        "The GM renamed the campaign “The Salt Road Home” and changed the premise and the lines."
    )
    expect(a.locator(".room-title h1")).to_have_text("The Salt Road Home")
    expect(a).to_have_title("The Salt Road Home · rpgai")
    [update] = events(campaign, "campaign_updated")
    assert update.payload["changes"] == {
        "name": "The Salt Road Home",
        "premise": new_premise,
        "lines": [*LINES, "drowning"],
    }

    # --- The GM archives the campaign: read only, live --------------------------------------
    page.on("dialog", lambda dialog: dialog.accept())
    box = a.locator("#action-text")
    expect(box).to_be_enabled()
    page.locator("#setup-archive").click()
    expect(box).to_be_disabled(timeout=WAIT_MS)
    expect(a.locator("#x-card")).to_be_disabled()
    expect(a.locator("#send-action")).to_be_disabled()
    expect(a.locator('[data-banner="archived"]')).to_contain_text(ARCHIVED)
    expect(a.locator("#setup-archived")).to_be_visible()
    expect(a.locator("#feed-events .entry-setup").last).to_have_text(
        "The GM archived the campaign: it is read only now."
    )
    expect(page.locator('[data-banner="archived"]')).to_contain_text(ARCHIVED)
    expect(page.locator("#gm-direct-form")).to_have_class(re.compile("gm-form-archived"))
    a.locator("#feed").evaluate("node => { node.scrollTop = node.scrollHeight; }")
    save_screenshot(a, "setup-archived.png", tmp_path)
    assert Campaign.objects.get(id=campaign.id).archived

    # Back in play: enabled again, live.
    page.locator("#unarchive-banner").click()
    expect(box).to_be_enabled(timeout=WAIT_MS)
    expect(a.locator("#x-card")).to_be_enabled()
    expect(a.locator('[data-banner="archived"]')).to_have_count(0)
    expect(a.locator("#feed-events .entry-setup").last).to_have_text(
        "The GM brought the campaign back into play."
    )

    # An action that was waiting for the connection when the campaign was archived: the
    # server refuses it (code `archived`), and the page says so in plain words.
    alice.context.set_offline(True)
    a.evaluate("window.rpgaiRoom.dropConnection()")
    expect(a.locator("#room-status")).not_to_have_attribute("data-state", "live", timeout=WAIT_MS)
    act(alice, "I light the signal fire")
    expect(a.locator("#feed-pending .entry-pending")).to_contain_text("I light the signal fire")
    page.locator("#setup-archive").click()
    wait_until(lambda: Campaign.objects.get(id=campaign.id).archived, "the archive")
    alice.context.set_offline(False)
    a.evaluate("window.dispatchEvent(new Event('online'))")
    live(alice)
    pending = a.locator("#feed-pending .entry-pending")
    expect(pending).to_contain_text(f"Not sent: {ARCHIVED}", timeout=WAIT_MS)
    expect(box).to_be_disabled()
    assert not [e for e in events(campaign, "player_action") if "signal fire" in e.payload["text"]]
    for player in (master, alice):
        assert player.errors == [], player.errors
