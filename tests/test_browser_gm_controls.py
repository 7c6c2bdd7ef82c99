"""The GM runs the room from the room (issue 20 items 2, 3 and 4; CONTRACTS §7 "GM controls",
"What players are told"), in a real browser: Debian's Chromium driven by Playwright, against
daphne sharing this test's database (the set-up is tests/test_browser_room.py's).

- The cap: the GM sets a tiny daily cap with hard stop in the room's budget panel (the fake
  DM's calls are priced by a prices file given to the server); a player acts; the DM stops;
  the GM's banner says so with the raise right there, the player's says it without a figure;
  the GM raises the cap in the banner; the waiting action is answered exactly once and the
  banner clears on both pages, the story saying "The DM is back."
- The invite code regenerated (the old one refused), a kick that bans (the character leaves
  the party on another player's page live, the ban list shows them, Unban), the GM role
  handed over (both pages switch roles, the new GM's typed draft kept), a player leaving
  (back at the campaign list).
- Plain words and live fixes: the counter warns at 1,900 characters and an action past
  2,000 is refused with its text kept; an entity the GM hides leaves the player's page
  live; a page reloaded mid-narration shows the whole text so far, then the rest, once;
  on a 390 x 844 phone the options wrap and the header covers neither the sheet nor its
  HP number; no page a player sees shows a dollar figure.

Screenshots (a temporary folder; `docs/screenshots/` with RPGAI_SCREENSHOTS=docs):
gm-controls-stopped.png, gm-controls-panel.png, gm-controls-player-stopped-phone.png,
gm-controls-bans.png, gm-controls-options-phone.png, gm-controls-sheet-phone.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from billing.models import ModelUsage
from campaigns.models import Campaign, Event, Membership
from campaigns.services import campaign_create, campaign_join
from tests import test_browser_room as room
from tests.test_browser_characters import save_screenshot
from tests.test_browser_room import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Player,
    act,
    assert_fits,
    character_id_of,
    in_thread,
    open_room,
)

browser = room.browser

# The fake DM's calls cost real money here (what a cap needs to bite): $20 and $80 per
# million tokens in and out, so a turn costs about a cent.
PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"
"""
# A dollar figure: "$0.42", "$2", "$ 5.00".
DOLLARS = re.compile(r"\$\s?\d")

# All the page's text, shown or not (the feed, the table, banners, notices, the composer,
# the panel a phone hides).
PAGE_TEXT = "() => document.body.textContent"


def no_money(player: Player) -> None:
    """CONTRACTS §7: a player's page shows no money figure, anywhere in its text."""
    text = player.page.evaluate(PAGE_TEXT)
    assert not DOLLARS.search(text), DOLLARS.search(text).group(0)


@pytest.fixture
def priced_server(tmp_path: Path) -> Iterator[room.Server]:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    server = room.Server(
        PRICES_FILE=str(prices),
        BILLING_USER_DAILY_CAP_USD="",  # only the campaign's cap
        BILLING_MAX_DAILY_CAP_USD="10.00",
        MODEL_CALLS_PER_USER_PER_MINUTE="10000",
        MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE="10000",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_server() -> Iterator[room.Server]:
    """The fake DM streams slowly: a narration takes several seconds to tell."""
    server = room.Server(DM_FAKE_CHUNK_DELAY_SECONDS="0.12", DM_DELTA_INTERVAL_SECONDS="0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def table(gm: Any, make_user: Any) -> tuple[Campaign, Any, Any]:
    """A campaign (no opening scene: it would spend the budget) with Alice and Bob."""
    campaign = in_thread(lambda: campaign_create(name="The Salt Vault", edition="5e", creator=gm))
    alice, bob = make_user("alice"), make_user("bob")
    for user, name in ((alice, "Alice"), (bob, "Bob")):
        in_thread(
            lambda user=user, name=name: campaign_join(
                invite_code=campaign.invite_code, user=user, display_name=name
            )
        )
    return campaign, alice, bob


def wait_until(check: Any, what: str, timeout: float = WAIT_MS / 1000) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = in_thread(check)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def of_type(campaign: Any, kind: str) -> list[Event]:
    return in_thread(
        lambda: list(Event.objects.filter(campaign_id=campaign.id, type=kind).order_by("seq"))
    )


def answers_to(campaign: Any, seq: int) -> list[Event]:
    """The narrations and failures that answered the action at `seq`."""
    found = of_type(campaign, "dm_narration") + of_type(campaign, "turn_failed")
    return sorted((e for e in found if e.payload.get("through_seq", 0) >= seq), key=lambda e: e.seq)


def accept_dialogs(player: Player) -> None:
    player.page.on("dialog", lambda dialog: dialog.accept())


# --- The cap: hit it, raise it in the room, answered once ------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_gm_raises_the_cap_in_the_room_and_the_waiting_action_is_answered_once(
    browser: Any, priced_server: room.Server, gm: Any, table: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    campaign, alice_user, _ = table
    master = open_room(browser, priced_server, gm, campaign, **DESKTOP)
    alice = open_room(browser, priced_server, alice_user, campaign, **PHONE)
    accept_dialogs(master)
    page = master.page

    # The GM's meter, in dollars and cents, and the cap set from the panel: 5 cents, hard stop.
    spend = page.locator("#gm-spend")
    expect(spend).to_have_text(re.compile(r"^\$0\.00 of \$\d+\.\d\d today"), timeout=WAIT_MS)
    page.locator("#gm-cap").fill("0.05")
    page.locator("#gm-hard-stop").check()
    page.locator("#gm-budget-save").click()
    expect(page.locator("#gm-budget-status")).to_have_text("Saved.", timeout=WAIT_MS)
    expect(spend).to_contain_text("$0.00 of $0.05 today. The DM stops at the cap.")
    # The table spent nearly all of it an hour ago.
    in_thread(
        lambda: ModelUsage.objects.create(
            campaign_id=campaign.id,
            provider="fake",
            model="fake-dm",
            purpose="dm_turn",
            cost_usd=Decimal("0.0499"),
            created_at=timezone.now() - timedelta(hours=1),
        )
    )

    # Alice acts; the DM stops for budget.
    act(alice, "I push open the vault door")
    action = wait_until(lambda: of_type(campaign, "player_action"), "Alice's action")[0]
    [failed] = wait_until(lambda: answers_to(campaign, action.seq), "the DM's answer")
    assert failed.type == "turn_failed" and failed.payload["code"] == "budget_exceeded"

    # The GM's banner: what happened, with the raise right there.
    banner = page.locator('[data-banner="turn"]')
    expect(banner).to_contain_text("The DM stopped: today's cap is reached.", timeout=WAIT_MS)
    expect(banner.locator("#raise-cap-button")).to_have_text("Raise the cap")
    expect(spend).to_contain_text("$0.05 today")
    page.locator("#gm-budget").scroll_into_view_if_needed()
    save_screenshot(page, "gm-controls-stopped.png", tmp_path)
    # Alice's: the same news, without a figure.
    alice_banner = alice.page.locator('[data-banner="turn"]')
    expect(alice_banner).to_contain_text(
        "The DM has stopped: today's budget is spent.", timeout=WAIT_MS
    )
    expect(alice.page.locator("#feed-events .entry-failed")).to_contain_text(
        "The DM stopped: today's budget is spent."
    )
    expect(alice.page.locator("#feed-events .entry-failed")).not_to_contain_text("budget_exceeded")
    expect(alice.page.locator("#gm-budget")).to_have_count(0)
    no_money(alice)
    save_screenshot(alice.page, "gm-controls-player-stopped-phone.png", tmp_path)

    # The GM raises the cap in the banner: the DM is back and answers once.
    banner.locator("#raise-cap").fill("5")
    banner.locator("#raise-cap-button").click()
    for player in (master, alice):
        feed = player.page.locator("#feed-events")
        expect(feed.locator(".entry-reopened")).to_have_text("The DM is back.", timeout=WAIT_MS)
        expect(feed.locator(".entry-dm")).to_have_count(1, timeout=WAIT_MS)
        expect(player.page.locator('[data-banner="turn"]')).to_have_count(0)
    answers = answers_to(campaign, action.seq)
    assert [a.type for a in answers] == ["turn_failed", "dm_narration"]
    assert len(of_type(campaign, "turn_reopened")) == 1
    expect(spend).to_contain_text("of $5.00 today", timeout=WAIT_MS)
    expect(page.locator("#gm-cap")).to_have_value("5.00")

    # Nothing more is answered later; the player's page never showed a figure.
    time.sleep(1)
    assert len(of_type(campaign, "dm_narration")) == 1
    no_money(alice)
    save_screenshot(page, "gm-controls-panel.png", tmp_path)
    assert master.errors == [] and alice.errors == []


# --- The invite code, kick and ban, the GM role, leaving -------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_code_kick_ban_unban_role_handover_and_leaving_from_the_room(
    browser: Any, gm: Any, table: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = room.Server()
    server.start()
    try:
        _code_kick_role_leave(browser, server, gm, table, tmp_path, expect)
    finally:
        server.stop()


def _code_kick_role_leave(browser, server, gm, table, tmp_path, expect) -> None:
    campaign, alice_user, bob_user = table
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    bob = open_room(browser, server, bob_user, campaign, **DESKTOP)
    for player in (master, alice, bob):
        accept_dialogs(player)
    page = master.page

    # A new invite code: shown (and copied from), the old one refused.
    old_code = page.locator("#invite-code").text_content().strip()
    page.locator("#rotate-invite").click()
    expect(page.locator("#invite-status")).to_contain_text("The old one no longer works")
    new_code = page.locator("#invite-code").text_content().strip()
    assert new_code and new_code != old_code
    expect(page.locator("#copy-invite")).to_have_attribute("data-copy", new_code)
    assert in_thread(lambda: Campaign.objects.get(id=campaign.id).invite_code) == new_code

    # Bob's character is in Alice's party; the GM removes Bob, who is banned.
    bob_character = character_id_of(campaign, bob_user)
    party = alice.page.locator("#party")
    expect(party.locator(f'li.party-member[data-character-id="{bob_character}"]')).to_have_count(
        1, timeout=WAIT_MS
    )
    page.get_by_role("button", name="Remove Bob from the campaign and ban them").click()
    expect(page.locator("#gm-members-status")).to_have_text("Bob was removed and banned.")
    expect(party.locator(f'li.party-member[data-character-id="{bob_character}"]')).to_have_count(
        0, timeout=WAIT_MS
    )
    expect(bob.page.locator('[data-banner="closed"]')).to_be_visible(timeout=WAIT_MS)
    bans = page.locator("#gm-bans")
    expect(bans.locator(".gm-ban")).to_have_text(re.compile("Bob"), timeout=WAIT_MS)
    expect(page.locator("#gm-members")).not_to_contain_text("Bob")
    # Banned: neither code lets him in (the API the join form uses).
    for code in (old_code, new_code):
        refused = bob.page.evaluate(
            """async ([id, code]) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch(`/api/campaigns/${id}/join`, {method: "POST",
                  headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
                  body: JSON.stringify({invite_code: code})});
                return [r.status, (await r.json()).code];
            }""",
            [str(campaign.id), code],
        )
        assert refused == [403, "banned"], refused
    bans.scroll_into_view_if_needed()
    save_screenshot(page, "gm-controls-bans.png", tmp_path)
    # Unban: the list empties, and he may join again (with the new code).
    bans.get_by_role("button", name="Unban Bob").click()
    expect(bans).to_contain_text("Nobody is banned.", timeout=WAIT_MS)
    expect(page.locator("#gm-members-status")).to_contain_text("Bob may join again")

    # Alice has typed something she has not sent; the GM hands her the GM role.
    alice.page.locator("#action-text").fill("I study the runes on the vault door")
    assert alice.page.locator("#gm-budget").count() == 0
    page.get_by_role("button", name="Hand the GM role to Alice").click()
    # Both pages switch roles: Alice's reloads with the GM's tools and her draft kept;
    # the former GM's becomes a player's.
    expect(alice.page.locator("#gm-budget")).to_be_visible(timeout=WAIT_MS)
    expect(alice.page.locator(".room-meta .badge-gm")).to_be_visible()
    expect(alice.page.locator("#action-text")).to_have_value("I study the runes on the vault door")
    expect(page.locator("#gm-budget")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(".room-meta .badge-player")).to_be_visible()
    expect(page.locator("#room-status")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    roles = in_thread(
        lambda: {m.user_id: m.role for m in Membership.objects.filter(campaign_id=campaign.id)}
    )
    assert roles[alice_user.id] == "gm" and roles[gm.id] == "player"
    expect(alice.page.locator("#feed-events")).to_contain_text(
        "handed the GM role to you", timeout=WAIT_MS
    )

    # The former GM, a player now, leaves: back at the campaign list.
    page.locator("#leave-campaign").click()
    page.wait_for_url(re.compile(r"/campaigns/$"), timeout=WAIT_MS)
    assert in_thread(
        lambda: not Membership.objects.filter(campaign_id=campaign.id, user=gm).exists()
    )
    expect(alice.page.locator(f'#gm-members [data-user-id="{gm.id}"]')).to_have_count(
        0, timeout=WAIT_MS
    )
    assert master.errors == [] and alice.errors == []


# --- Plain words, live removal, reload mid-narration, the phone ----------------------------------


LONG_OPTIONS = [
    "Follow the drowned bell-ringer down the sea stairs and into the flooded crypt below",
    "Bargain with the harbour master for a boat, offering the silver key as a pledge",
    "Search the lighthouse keeper's quarters for the logbook with its last entries",
    "Wait for the tide to turn",
    "Light the great lamp again and signal the ships beyond the reef",
    "Ask Grik what the keepers were afraid of, and why nobody came back",
    "Climb the outside of the tower",
    "Read the runes aloud",
]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_counter_hidden_entity_reload_mid_narration_and_the_phone(
    browser: Any, slow_server: room.Server, gm: Any, table: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    campaign, alice_user, bob_user = table
    server = slow_server
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    alice = open_room(browser, server, alice_user, campaign, **PHONE)
    bob = open_room(browser, server, bob_user, campaign, **DESKTOP)

    # --- The counter: warns at 1,900 characters, refuses past 2,000 with the text kept ------
    box = alice.page.locator("#action-text")
    count = alice.page.locator("#action-count")
    box.fill("a" * 1700)
    expect(count).to_have_text("1700 / 2000")
    box.fill("a" * 1900)
    expect(count).to_have_text("100 characters left")
    expect(count).to_have_class(re.compile(r"\bnear\b"))
    long_text = "b" * 2150
    box.fill(long_text)
    expect(count).to_have_text("150 characters over the limit")
    box.press("Enter")
    note = alice.page.locator("#composer-note")
    expect(note).to_contain_text("2,150 characters, 150 more than the 2,000")
    expect(note).to_contain_text("nothing was sent")
    expect(box).to_have_value(long_text)  # never cut
    box.fill("")
    assert of_type(campaign, "player_action") == []

    # --- The GM hides an entity: it leaves the players' pages at once -------------------------
    server.tools_execute(
        {
            "campaign_id": str(campaign.id),
            "narration": "A keeper in oilskins waves from the jetty.",
            "options": LONG_OPTIONS,
            "tool_calls": [
                {
                    "name": "create_entity",
                    "args": {"kind": "npc", "name": "Keeper Odo", "data": {"description": "wet"}},
                }
            ],
        }
    )
    for player in (alice, bob):
        expect(player.page.locator("#met")).to_contain_text("Keeper Odo", timeout=WAIT_MS)
    master.page.locator("#met").get_by_role(
        "button", name="Hide Keeper Odo from the players"
    ).click()
    for player in (alice, bob):
        expect(player.page.locator("#met")).not_to_contain_text("Keeper Odo", timeout=WAIT_MS)
    expect(master.page.locator("#met .met-hidden")).to_contain_text("Keeper Odo", timeout=WAIT_MS)
    [withdrawn] = of_type(campaign, "entity_withdrawn")
    assert withdrawn.visibility == {"kind": "all"} and set(withdrawn.payload) == {"entity_id"}

    # --- The phone (Alice, 390 x 844): the options wrap, nothing sideways, none cut off ------
    options = alice.page.locator("#options .option")
    expect(options).to_have_count(len(LONG_OPTIONS), timeout=WAIT_MS)
    boxes = alice.page.eval_on_selector_all(
        "#options .option",
        "nodes => nodes.map(n => { const r = n.getBoundingClientRect(); "
        "return {left: r.left, right: r.right, width: r.width}; })",
    )
    assert all(b["left"] >= 0 and b["right"] <= 390 for b in boxes), boxes
    assert alice.page.evaluate(
        "() => { const o = document.getElementById('options');"
        " return o.scrollWidth <= o.clientWidth; }"
    ), "the options scroll sideways"
    rows = {round(b["left"]) for b in boxes}
    assert len(boxes) > len(rows) or len(rows) > 1  # several rows, not one long line
    assert_fits(alice.page)
    save_screenshot(alice.page, "gm-controls-options-phone.png", tmp_path)
    # The header never covers the HP number, nor the sheet once the table is shown.
    hp = alice.page.locator("#phone-hp .hp-text")
    expect(hp).to_be_visible()
    assert not overlaps(alice, "#phone-hp .hp-text", "#panel-toggle")
    assert on_top(alice, "#phone-hp .hp-text")
    alice.page.locator("#panel-toggle").click()
    for selector in ("#sheet .sheet-name", "#sheet .hp-text", "#sheet .sheet-ac"):
        expect(alice.page.locator(selector).first).to_be_visible(timeout=WAIT_MS)
        assert on_top(alice, selector), f"{selector} is covered"
        for header in (".site-header", ".room-header", ".phone-bar"):
            assert not overlaps(alice, selector, header), (selector, header)
    save_screenshot(alice.page, "gm-controls-sheet-phone.png", tmp_path)
    # Scrolled, the table slides under nothing: its box starts below the bar.
    alice.page.locator("#room-side").evaluate("node => node.scrollTo(0, 120)")
    assert not overlaps(alice, "#room-side", ".phone-bar")
    alice.page.locator("#panel-toggle").click()
    no_money(alice)

    # --- A reload mid-narration shows the whole text so far, then the rest, once ----------------
    bob.page.add_init_script(WATCH_STREAM)
    act(alice, "I wade into the surf " + "and call out to the keeper, " * 8 + "then wait")
    bob.page.wait_for_function(STREAMED_40, timeout=WAIT_MS)
    before = bob.page.locator(".entry-streaming .entry-body").inner_text()
    # Still streaming: the narration that answers Alice is not in the log yet.
    assert len(of_type(campaign, "dm_narration")) == 1
    bob.page.reload()
    expect(bob.page.locator("#room-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    expect(bob.page.locator("#feed-events .entry-dm")).to_have_count(2, timeout=WAIT_MS)
    narration = plain(of_type(campaign, "dm_narration")[-1].payload["text"])
    shown = bob.page.evaluate("window.__streamTexts")
    deltas = bob.page.evaluate("window.__deltas")
    # The first thing the reloaded page showed was the text so far, from its start (not
    # "…" and a cut), at least what was shown before the reload.
    assert shown, "the reloaded page showed the narration streaming"
    assert not shown[0].startswith("…") and flat(shown[0]).startswith(flat(before)), shown[0]
    # Every text it showed was the narration's beginning: no piece twice, none skipped.
    for text in shown:
        assert flat(narration).startswith(flat(text)), (text, narration)
    # What came over the socket, from the text so far on, is the narration exactly once.
    assert deltas[0]["offset"] == 0, deltas[0]
    assert (
        "".join(d["text"] for d in deltas) == of_type(campaign, "dm_narration")[-1].payload["text"]
    )
    expect(bob.page.locator(".entry-streaming")).to_have_count(0)
    assert master.errors == [] and alice.errors == [] and bob.errors == []


STREAMED_40 = """() => (document.querySelector('.entry-streaming .entry-body')?.innerText || '')
    .length > 40"""

# Records, on this page, what a streaming narration shows (each change) and the
# narration.delta messages the socket brings.
WATCH_STREAM = """
window.__streamTexts = [];
window.__deltas = [];
new MutationObserver(() => {
  const body = document.querySelector('.entry-streaming .entry-body');
  const text = body ? body.innerText : '';
  const list = window.__streamTexts;
  if (text && list[list.length - 1] !== text) list.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', (m) => {
      try {
        const data = JSON.parse(m.data);
        if (data.type === 'narration.delta') window.__deltas.push(data);
      } catch (e) {}
    });
  }
};
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def plain(markdown: str) -> str:
    """The narration as the page shows it: the fake DM's emphasis marks are not text."""
    return re.sub(r"[*_]", "", markdown)


def overlaps(player: Player, a: str, b: str) -> bool:
    return player.page.evaluate(
        """([a, b]) => {
            const x = document.querySelector(a), y = document.querySelector(b);
            if (!x || !y || !x.offsetParent || !y.offsetParent) return false;
            const r = x.getBoundingClientRect(), s = y.getBoundingClientRect();
            return r.left < s.right && s.left < r.right && r.top < s.bottom && s.top < r.bottom;
        }""",
        [a, b],
    )


def on_top(player: Player, selector: str) -> bool:
    """The element is what a finger at its middle touches (nothing lies over it)."""
    return player.page.evaluate(
        """(selector) => {
            const node = document.querySelector(selector);
            const r = node.getBoundingClientRect();
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return Boolean(hit) && (node === hit || node.contains(hit));
        }""",
        selector,
    )
