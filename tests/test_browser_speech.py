"""The DM speaks while it narrates, in a real browser (Debian's Chromium driven by
Playwright, against daphne with piper; the set-up is tests/test_browser_room.py's).

The fake DM streams its narration slowly. The page plays the first sentence's audio
(`narration.audio` segment 0) while the narration is still streaming, with that sentence
marked in the streaming text; when the narration commits, its `dm_audio_ready` events
point at the same audio, and the page plays each sentence once, in order.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

import pytest

from campaigns.models import Event
from tests import test_browser_room as room
from tests.test_browser_room import DESKTOP, ROOT, Server, _piper_missing, act, open_room
from voice.text import narration_segments

# The room test's fixtures: Chromium, Alice and Bob at the table.
browser = room.browser
campaign = room.campaign
players = room.players

# Every audio the page starts, and what the page showed at that moment: whether the
# narration was still streaming and which sentence the voice marked in it.
WATCH_PLAYING = """() => {
window.__played = [];
const play = HTMLMediaElement.prototype.play;
HTMLMediaElement.prototype.play = function (...args) {
  const media = this;
  media.addEventListener('playing', () => {
    const streaming = document.querySelector('.entry-streaming');
    const marked = streaming && streaming.querySelector('[data-voice-speaking]');
    window.__played.push({
      src: new URL(media.currentSrc || media.src, location.href).pathname,
      streaming: Boolean(streaming),
      playingIndex: streaming ? streaming.dataset.voicePlaying ?? null : null,
      marked: marked ? marked.textContent : null,
    });
  }, { once: true });
  return play.apply(this, args);
};
}"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_page_plays_the_first_sentence_while_the_narration_streams(
    browser: Any, campaign: Any, players: tuple[Any, Any]
) -> None:
    from playwright.sync_api import expect

    if reason := _piper_missing():
        pytest.skip(reason)
    prefix = f"browser-test-{uuid.uuid4().hex[:12]}"
    server = Server(
        TTS_PROVIDER="piper",
        VOICE_STREAM="1",
        VOICE_STORAGE_PREFIX=prefix,
        # A hosted model's pace: the narration streams for several seconds, and its first
        # sentence is whole long before its end (the voice loads as the action commits).
        DM_FAKE_CHUNK_DELAY_SECONDS="0.3",
    )
    server.start()
    try:
        alice = open_room(browser, server, players[0], campaign, **DESKTOP)
        page = alice.page
        page.evaluate(WATCH_PLAYING)

        act(alice, "I greet the innkeeper")
        # The first sentence plays while the narration is still streaming.
        page.wait_for_function("window.__played.length > 0", timeout=60_000)
        first = page.evaluate("window.__played[0]")
        assert first["streaming"], first
        assert first["playingIndex"] == "0", first

        narration_entry = page.locator('#feed-events [data-type="dm_narration"]').last
        expect(narration_entry).to_be_visible(timeout=60_000)
        [narration] = Event.objects.filter(campaign_id=campaign.id, type="dm_narration").order_by(
            "-seq"
        )[:1]
        planned = [p.text for p in narration_segments(narration.payload)]
        assert first["marked"] in (None, planned[0])  # marked when it lies in one text node

        # Committed once: every sentence plays once, in order, from the same audio.
        page.wait_for_function(f"window.__played.length >= {len(planned)}", timeout=60_000)
        page.wait_for_timeout(1500)  # nothing plays twice after the last one
        played = [p["src"] for p in page.evaluate("window.__played")]
        ready = [
            e.payload
            for e in Event.objects.filter(campaign_id=campaign.id, type="dm_audio_ready").order_by(
                "seq"
            )
        ]
        assert [r["url"] for r in ready] == played
        assert played[0] == first["src"]
        assert alice.errors == []
    finally:
        server.stop()
        shutil.rmtree(ROOT / "media" / prefix, ignore_errors=True)
