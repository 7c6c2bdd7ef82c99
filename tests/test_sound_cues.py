"""The DM's sound cues ship with the project (issue 20): every cue of settings.AUDIO_CUES
but "silence" has a sound file of our own, made by tools/make_cues.py (CC0).

Checked objectively, since nobody listens here: each file is mono 16-bit PCM WAV of a
sensible length, peak-normalized to about -3 dBFS, unclipped, starting and ending at
silence; the generator writes exactly the committed bytes (so they are provably ours);
the app serves each URL with an audio media type, in development (whitenoise's finders)
and as collected for production (hashed, compressed); the fake DM's fight cue reaches
the room with a URL that is served; and in Chromium the room plays it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
import wave
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.test import Client, RequestFactory, override_settings

from tests import test_browser_room as room
from tests.processes import ROOT
from tests.test_browser_room import DESKTOP, WAIT_MS, Server, open_room
from tests.ws import Room, events_of

# The browser test's fixtures (Chromium, a daphne server, Alice and Bob at the table), and
# its campaign, made off Playwright's thread; the socket test uses the same.
browser = room.browser
server = room.server
players = room.players
campaign = room.campaign

CUES_DIR = ROOT / "campaigns" / "static" / "campaigns" / "cues"
GENERATOR = ROOT / "tools" / "make_cues.py"
RATE = 22_050
FULL_SCALE = 32768
# The cue that is the room going quiet: it has no file on purpose.
SILENT = {"silence"}


def cues_with_sound() -> dict[str, str]:
    return {name: url for name, url in settings.AUDIO_CUES.items() if name not in SILENT}


def file_of(url: str) -> Path:
    assert url.startswith("/static/campaigns/cues/"), url
    return CUES_DIR / url.removeprefix("/static/campaigns/cues/")


def samples_of(path: Path) -> tuple[Any, Any]:
    import numpy as np

    with wave.open(str(path), "rb") as audio:
        params = audio.getparams()
        frames = audio.readframes(params.nframes)
    return params, np.frombuffer(frames, dtype="<i2").astype(float)


def body_of(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


# --- the catalog and the files --------------------------------------------------------------


def test_every_cue_but_silence_has_the_url_of_a_shipped_file() -> None:
    assert set(settings.AUDIO_CUES) >= {
        *("battle_start", "victory", "defeat", "door_creak", "thunder", "rain"),
        *("sword_clash", "spell_cast", "monster_roar", "footsteps", "tavern", "treasure"),
    }
    for name in SILENT:
        assert settings.AUDIO_CUES[name] is None
    urls = cues_with_sound()
    for name, url in urls.items():
        assert url == f"/static/campaigns/cues/{name}.wav"
        assert file_of(url).is_file(), f"{name}: {file_of(url)} is missing"
    # No file ships that no cue plays.
    assert {p.stem for p in CUES_DIR.glob("*.wav")} == set(urls)
    licence = (CUES_DIR / "LICENSE.md").read_text()
    assert "CC0" in licence and "tools/make_cues.py" in licence


@pytest.mark.parametrize("name", sorted(settings.AUDIO_CUES.keys() - SILENT))
def test_each_file_is_short_normalized_unclipped_audio_that_starts_and_ends_silent(
    name: str,
) -> None:
    import numpy as np

    params, x = samples_of(file_of(settings.AUDIO_CUES[name]))
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, RATE)
    assert params.comptype == "NONE"
    assert 0.5 <= params.nframes / RATE <= 5.0
    peak = np.max(np.abs(x))
    assert -3.5 <= 20 * np.log10(peak / FULL_SCALE) <= -2.5
    # Unclipped: well below full scale, and the peak is a single point, not a flat top.
    assert peak < 0.75 * FULL_SCALE
    assert np.count_nonzero(np.abs(x) >= peak - 1) <= 4
    # No click at either end: it fades in from and out to silence.
    edge = 0.01 * FULL_SCALE
    assert np.all(np.abs(x[:5]) <= edge) and np.all(np.abs(x[-5:]) <= edge)
    # Not silence: the sound carries (RMS above -30 dBFS) ...
    assert 20 * np.log10(np.sqrt(np.mean(x**2)) / FULL_SCALE) > -30
    # ... and no long dead stretch in the middle (no 0.3 s run below -60 dBFS).
    quiet = np.abs(x) < FULL_SCALE * 10 ** (-60 / 20)
    run = longest = 0
    for q in quiet[RATE // 10 : -RATE // 10]:
        run = run + 1 if q else 0
        longest = max(longest, run)
    assert longest < 0.3 * RATE


def test_the_cues_stay_small() -> None:
    total = sum(p.stat().st_size for p in CUES_DIR.glob("*.wav"))
    assert total < 1_200_000


def test_the_generator_writes_exactly_the_committed_files(tmp_path: Path) -> None:
    """The committed sounds are what our own program makes: same bytes, every one."""
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    made = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*.wav")}
    committed = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in CUES_DIR.glob("*.wav")}
    assert made == committed
    # And its --check says so.
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_generator_check_notices_a_changed_file(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path), "thunder"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    data = bytearray((tmp_path / "thunder.wav").read_bytes())
    data[5000] ^= 1
    (tmp_path / "thunder.wav").write_bytes(bytes(data))
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--out", str(tmp_path), "thunder"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1 and "thunder" in check.stderr


# --- served by the app --------------------------------------------------------------------


def test_the_app_serves_every_cue_as_audio(client: Client) -> None:
    """As `make run` serves them: whitenoise, from the apps' static folders."""
    for url in cues_with_sound().values():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"] == "audio/wav"
        assert body_of(response) == file_of(url).read_bytes()


def test_collected_for_production_the_same_urls_are_served(tmp_path: Path) -> None:
    """As the image serves them (DEBUG off): collected, hashed and compressed by
    collectstatic, then whitenoise from STATIC_ROOT only; nginx just proxies."""
    from django.core.management import call_command
    from whitenoise.middleware import WhiteNoiseMiddleware

    production = {
        "DEBUG": False,
        "STATIC_ROOT": tmp_path,
        "WHITENOISE_USE_FINDERS": False,
        "WHITENOISE_AUTOREFRESH": False,
        "STORAGES": {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
        },
    }
    with override_settings(**production):
        call_command("collectstatic", interactive=False, verbosity=0)
        serve = WhiteNoiseMiddleware(lambda request: None)
        for url in cues_with_sound().values():
            for encoding in ("identity", "gzip, br"):
                response = serve(RequestFactory().get(url, HTTP_ACCEPT_ENCODING=encoding))
                assert response is not None and response.status_code == 200, url
                assert response["Content-Type"] == "audio/wav"
            # A media element asks for ranges; it gets the plain file's bytes.
            response = serve(RequestFactory().get(url, HTTP_RANGE="bytes=0-43"))
            assert response.status_code == 206
            assert body_of(response) == file_of(url).read_bytes()[:44]


# --- the fake DM's fight cue reaches the room ---------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_fake_dms_fight_cue_reaches_the_room_with_a_served_url(
    campaign: Any, make_user: Any, join: Any
) -> None:
    from rpgai.tasks import wait_idle

    alice = await sync_to_async(make_user)("alice")
    await sync_to_async(join)(alice, "Alice")
    me = Room(campaign.id, alice)
    await me.open()
    await me.hello(0)
    await me.send(
        {
            "type": "client.player_action",
            "action_id": str(uuid.uuid4()),
            "text": "I attack the goblin",
        }
    )
    seen = await me.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "audio_cue", timeout=15
    )
    [cue] = [e["payload"] for e in events_of(seen) if e["type"] == "audio_cue"]
    assert cue["cue"] in settings.AUDIO_CUES
    assert cue["url"] == settings.AUDIO_CUES[cue["cue"]] is not None
    await wait_idle()
    await me.close()

    response = await sync_to_async(lambda: Client().get(cue["url"]))()
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/wav"
    assert body_of(response) == file_of(cue["url"]).read_bytes()


# --- and the room plays it ----------------------------------------------------------------

# The room's cue player makes a detached `new Audio(url)`: record every media element that
# actually starts playing (its `playing` event), whatever made it.
WATCH_PLAYING = """
window.__playing = [];
const play = HTMLMediaElement.prototype.play;
HTMLMediaElement.prototype.play = function (...args) {
  this.addEventListener('playing', () => window.__playing.push(this.currentSrc), { once: true });
  return play.apply(this, args);
};
"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_room_plays_the_fight_cue_in_chromium(
    browser: Any, server: Server, campaign: Any, players: tuple[Any, Any]
) -> None:
    from playwright.sync_api import expect

    alice_user, _bob = players
    alice = open_room(browser, server, alice_user, campaign, **DESKTOP)
    alice.page.add_init_script(WATCH_PLAYING)
    alice.page.reload()
    expect(alice.page.locator("#room-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    # A user gesture (a click and typing) before any sound, as a real player's.
    alice.page.locator("#action-text").click()
    room.act(alice, "I attack the goblin")
    url = settings.AUDIO_CUES["battle_start"]
    alice.page.wait_for_function(
        "url => window.__playing.some(src => new URL(src).pathname === url)",
        arg=url,
        timeout=WAIT_MS,
    )
    assert alice.errors == []
