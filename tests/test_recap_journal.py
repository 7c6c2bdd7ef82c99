"""Recap and journal (issue 19 items 3 and 4, CONTRACTS §7): "Previously on…" for a member
who comes back, from the summaries and the events after them, only what that member may
see; `journal.md`, the story so far as that member may read it; the last seen seq kept
when a member's last socket to the room closes.

Every secret in these tests is a distinctive token (`ZQX…`), so that a substring search is
a sound check; what the reader should see carries other tokens (`PUB…`, `OLD…`, `NEW…`).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async as sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns import selectors
from campaigns.events import NewEvent
from campaigns.services import events_append
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from memory.summaries import summaries_update
from orchestrator.receivers import turns_deferred
from realtime.services import member_last_seen_get
from rpgai.asgi import application
from tests.auth_tools import access_for
from tests.reads import api_as
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)


def token(kind: str) -> str:
    return kind + secrets.token_hex(5)


def latest_seq(campaign: Any) -> int:
    return selectors.snapshot_get(campaign_id=campaign.id).version


def narrate(campaign: Any, text: str, *, calls: list | None = None, through_seq: int = 0) -> None:
    """A DM turn as the orchestrator commits one: its tool calls, then the narration."""
    result = turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration=text,
        options=["Go on"],
        tool_calls=calls or [],
        through_seq=through_seq,
    )
    assert not result.rejections, result.rejections


def visit(campaign: Any, *users: Any) -> None:
    """Each user opens the room over a real WebSocket, catches up, and leaves."""

    async def go() -> None:
        for user in users:
            room = Room(campaign.id, user)
            connected, _ = await room.open()
            assert connected
            await room.hello(0)
            await room.close()

    # On a thread of its own (as tests/test_secrecy_property.py does): asgiref remembers
    # the loop on the thread that runs the consumer's database calls.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, go()).result()


def recap(user: Any, campaign: Any, **params: Any) -> dict[str, Any]:
    response = api_as(user).get(f"/api/campaigns/{campaign.id}/recap", params)
    assert response.status_code == 200, response.content[:400]
    return response.json()


def journal(user: Any, campaign: Any) -> str:
    response = api_as(user).get(f"/api/campaigns/{campaign.id}/journal.md")
    assert response.status_code == 200, response.content[:400]
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    return b"".join(response.streaming_content).decode()


def later(seconds: int) -> Any:
    """The clock moved `seconds` ahead (timezone.now, which the recap reads)."""
    return mock.patch(
        "django.utils.timezone.now", return_value=timezone.now() + timedelta(seconds=seconds)
    )


@pytest.fixture
def table(campaign: Any, gm: Any, alice: Any, bob: Any) -> dict[str, Any]:
    return {"campaign": campaign, "gm": gm, "alice": alice, "bob": bob}


def play_while_alice_is_away(campaign: Any, gm: Any, alice: Any, bob: Any, act: Any) -> dict:
    """What the table does after Alice left: public things she must be told (`public`),
    things only Bob or the GMs may know (`secret`), and a narration the GM retracted."""
    public = {k: token("NEW") for k in ("act", "narr", "roll", "mine", "direction")}
    secret = {k: token("ZQX") for k in ("bobs", "hidden", "whisper", "private_roll", "gm_dir")}
    retracted = token("ZQX")
    action = act(campaign, bob, f"I pry open the chest {public['act']}")
    narrate(
        campaign,
        f"The lid gives way {public['narr']}.",
        through_seq=action.seq,
        calls=[
            {"name": "roll", "args": {"formula": "1d20+3", "reason": public["roll"]}},
            {"name": "narrate_private", "args": {"to": str(alice.id), "text": public["mine"]}},
            {"name": "narrate_private", "args": {"to": str(bob.id), "text": secret["bobs"]}},
            {
                "name": "create_entity",
                "args": {"kind": "creature", "name": secret["hidden"], "hidden": True},
            },
        ],
    )
    bob_m = selectors.membership_get(campaign_id=campaign.id, user_id=bob.id)
    whisper_send(membership=bob_m, to="gm", text=secret["whisper"])
    base = f"/api/campaigns/{campaign.id}"
    roll = api_as(bob).post(
        f"{base}/rolls",
        {"formula": "1d20", "reason": secret["private_roll"], "dc": 10, "private": True},
        format="json",
    )
    assert roll.status_code == 201, roll.content
    for text, is_secret in ((secret["gm_dir"], True), (public["direction"], False)):
        response = api_as(gm).post(
            f"{base}/directions", {"text": text, "secret": is_secret, "now": False}, format="json"
        )
        assert response.status_code == 201, response.content
    # A narration the GM takes back: the DM answers again (the fake DM, inline).
    action = act(campaign, bob, "I read the runes")
    narrate(campaign, f"The runes say {retracted}.", through_seq=action.seq)
    narration = selectors.events_of_type_after(campaign_id=campaign.id, event_type="dm_narration")
    response = api_as(gm).post(f"{base}/narrations/{narration[-1].seq}/retry")
    assert response.status_code == 202, response.content
    return {"public": public, "secret": secret, "retracted": retracted}


# --- Recap -------------------------------------------------------------------------------


def test_a_player_back_after_an_hour_is_told_what_happened_since_they_left(table, act):
    campaign, gm, alice, bob = table["campaign"], table["gm"], table["alice"], table["bob"]
    old_act, old_narr = token("OLD"), token("OLD")
    action = act(campaign, alice, f"I light the lantern {old_act}")
    narrate(campaign, f"Shadows flee {old_narr}.", through_seq=action.seq)
    visit(campaign, alice)  # Alice saw all that, then closed the room
    left_at = latest_seq(campaign)
    assert member_last_seen_get(campaign_id=campaign.id, user_id=alice.id).seq == left_at

    world = play_while_alice_is_away(campaign, gm, alice, bob, act)

    soon = recap(alice, campaign)
    assert soon["card"] is False  # back within the hour: no card
    assert soon["away_seconds"] < 3600
    with later(2 * 3600):
        back = recap(alice, campaign)
    assert back["card"] is True
    assert back["away_seconds"] >= 2 * 3600
    assert back["since_seq"] == left_at and back["from_seq"] == left_at + 1
    assert back["to_seq"] == latest_seq(campaign)
    assert back["events"] > 0
    text = back["text"]
    assert text.startswith("Previously on The Sunken Crown")
    assert len(text) <= 2400
    for shown in world["public"].values():
        assert shown in text, (shown, text)
    # Not what Alice saw before she left; nothing kept from her.
    for hidden in (old_act, old_narr, world["retracted"], *world["secret"].values()):
        assert hidden not in text, (hidden, text)


def test_the_recap_tells_each_member_their_own_secrets_only(table, act):
    campaign, gm, alice, bob = table["campaign"], table["gm"], table["alice"], table["bob"]
    world = play_while_alice_is_away(campaign, gm, alice, bob, act)
    bobs = recap(bob, campaign, since_seq=0)["text"]
    for mine in ("bobs", "whisper", "private_roll"):
        assert world["secret"][mine] in bobs, (mine, bobs)
    assert world["public"]["mine"] not in bobs  # Alice's private narration
    assert world["secret"]["hidden"] not in bobs and world["secret"]["gm_dir"] not in bobs
    gms = recap(gm, campaign, since_seq=0)["text"]
    for seen in ("bobs", "whisper", "private_roll", "hidden"):
        assert world["secret"][seen] in gms, (seen, gms)
    # A secret direction is an instruction to the DM, not the story; a retracted
    # narration is no longer the story: neither is told, to anyone.
    assert world["secret"]["gm_dir"] not in gms
    assert world["retracted"] not in gms and world["retracted"] not in bobs


def test_since_seq_bounds_the_recap_and_bad_values_are_refused(table, act):
    campaign, alice = table["campaign"], table["alice"]
    first, second = token("PUB"), token("PUB")
    action = act(campaign, alice, f"I knock {first}")
    narrate(campaign, "A voice answers.", through_seq=action.seq)
    middle = latest_seq(campaign)
    action = act(campaign, alice, f"I enter {second}")
    narrate(campaign, "The door opens.", through_seq=action.seq)

    whole = recap(alice, campaign)  # never left the room: from the start
    assert whole["since_seq"] == 0 and whole["last_seen_at"] is None and whole["card"] is False
    assert first in whole["text"] and second in whole["text"]
    after = recap(alice, campaign, since_seq=middle)
    assert second in after["text"] and first not in after["text"]
    assert after["from_seq"] == middle + 1
    beyond = recap(alice, campaign, since_seq=10_000)
    assert beyond["text"] == "" and beyond["events"] == 0 and beyond["card"] is False
    for bad in ("-1", "abc", "1.5"):
        response = api_as(alice).get(f"/api/campaigns/{campaign.id}/recap", {"since_seq": bad})
        assert response.status_code == 400, response.content
        assert "since_seq" in response.json()["detail"] or "since_seq" in str(response.json())


def test_the_recap_draws_on_the_summaries_made_since_the_member_left(table, act, settings):
    """With summaries due every few turns, the recap of a long absence is made of the
    summaries that lie wholly after the member left, then the events after the last
    summary; nothing of what they saw before."""
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 60
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 40
    campaign, alice, bob = table["campaign"], table["alice"], table["bob"]
    seen_before = []
    for n in range(4):
        seen_before.append(token("OLD"))
        action = act(campaign, bob, f"I search room {n} and find {seen_before[-1]}")
        narrate(campaign, f"Room {n} is dusty and quiet, with cobwebs.", through_seq=action.seq)
    visit(campaign, alice)
    since = latest_seq(campaign)
    for n in range(12):
        action = act(campaign, bob, f"I walk the hall of Mirrors {n} {token('NEW')}")
        narrate(campaign, f"Mirror {n} shows Captain Vell {token('NEW')}.", through_seq=action.seq)
    summaries_update(campaign_id=campaign.id)
    told = selectors.events_of_type_after(campaign_id=campaign.id, event_type="summary_created")
    assert [s for s in told if s.payload["from_seq"] > since], "summaries were made after"
    with later(3 * 3600):
        back = recap(alice, campaign)
    assert back["card"] is True
    assert back["summaries"] >= 1
    assert "Since then:" in back["text"] or back["text"].count("\n\n") >= 2
    assert "Vell" in back["text"]
    for old in seen_before:
        assert old not in back["text"]
    assert len(back["text"]) <= 2400


def test_a_long_absence_gives_a_short_recap(table, act):
    campaign, alice = table["campaign"], table["alice"]
    for n in range(40):
        action = act(campaign, alice, f"I take step {n} down the endless stair")
        narrate(campaign, "The stair winds on. " * 30 + f"Step {n}.", through_seq=action.seq)
    text = recap(alice, campaign)["text"]
    assert 200 < len(text) <= 2400
    assert text.count("\n\n") <= 4  # a few paragraphs


def test_a_summary_written_before_the_gm_retracted_its_narration_is_not_shown(table, act):
    """A summary cannot be edited: when the GM retries a narration that a summary already
    told, that summary leaves the recap and the journal, and its span is told from the
    events (without the retracted words)."""
    campaign, gm, alice = table["campaign"], table["gm"], table["alice"]
    retracted = token("ZQX")
    action = act(campaign, alice, "I read the old map")
    narrate(campaign, f"The map shows {retracted}.", through_seq=action.seq)
    narration = latest_seq(campaign)
    with turns_deferred():
        events_append(
            campaign_id=campaign.id,
            events=[
                NewEvent(
                    "summary_created",
                    {"from_seq": 1, "to_seq": narration, "text": f"Alice saw {retracted}."},
                    "system",
                )
            ],
        )
    response = api_as(gm).post(f"/api/campaigns/{campaign.id}/narrations/{narration}/retry")
    assert response.status_code == 202, response.content
    back = recap(alice, campaign, since_seq=0)
    assert back["summaries"] == 0
    assert "I read the old map" in back["text"] and retracted not in back["text"]
    text = journal(alice, campaign)
    assert "## Chapter 1" in text and "## Chapter 2" in text
    assert "In short" not in text and retracted not in text


# --- Last seen ------------------------------------------------------------------------------


async def test_last_seen_is_kept_when_the_last_socket_closes_not_before(campaign, alice, gm):
    """Two tabs: closing one keeps nothing; closing the last keeps the campaign's latest
    seq and the time. Coming back and leaving again moves it on."""
    tab1, tab2 = Room(campaign.id, alice), Room(campaign.id, alice)
    for tab in (tab1, tab2):
        connected, _ = await tab.open()
        assert connected
        await tab.hello(0)
    await tab1.close()
    assert (
        await sync_to_async(member_last_seen_get)(campaign_id=campaign.id, user_id=alice.id) is None
    )

    gm_m = await sync_to_async(selectors.membership_get)(campaign_id=campaign.id, user_id=gm.id)
    await sync_to_async(whisper_send)(membership=gm_m, to="gm", text="a note to self")
    before = timezone.now()
    await tab2.close()
    seen = await sync_to_async(member_last_seen_get)(campaign_id=campaign.id, user_id=alice.id)
    version = (await sync_to_async(selectors.snapshot_get)(campaign_id=campaign.id)).version
    assert seen is not None and seen.seq == version
    assert seen.at >= before

    # The GM's own socket does not count as Alice's; a new visit moves her mark on.
    gm_room = Room(campaign.id, gm)
    await gm_room.open()
    await gm_room.hello(0)
    await sync_to_async(whisper_send)(membership=gm_m, to="gm", text="another note")
    again = Room(campaign.id, alice)
    await again.open()
    await again.hello(0)
    await again.close()
    moved = await sync_to_async(member_last_seen_get)(campaign_id=campaign.id, user_id=alice.id)
    assert moved.seq == version + 1
    assert await sync_to_async(member_last_seen_get)(campaign_id=campaign.id, user_id=gm.id) is None
    await gm_room.close()
    gm_seen = await sync_to_async(member_last_seen_get)(campaign_id=campaign.id, user_id=gm.id)
    assert gm_seen is not None and gm_seen.seq == version + 1


# --- Journal ------------------------------------------------------------------------------


def test_the_journal_tells_the_story_with_rolls_and_chapters(table, act, settings):
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 60
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 40
    campaign, gm, alice, bob = table["campaign"], table["gm"], table["alice"], table["bob"]
    first = token("PUB")
    action = act(campaign, alice, f"I open the door {first}")
    narrate(
        campaign,
        f"It creaks open onto a dark hall {first}.",
        through_seq=action.seq,
        calls=[{"name": "roll", "args": {"formula": "1d20+5", "reason": "the stuck door"}}],
    )
    roll = api_as(alice).post(
        f"/api/campaigns/{campaign.id}/rolls",
        {"formula": "1d20+2", "reason": "spotting traps", "dc": 12},
        format="json",
    )
    assert roll.status_code == 201, roll.content
    for n in range(8):
        action = act(campaign, bob, f"I follow the hall, step {n}")
        narrate(
            campaign, f"The hall goes on past statue {n} of Queen Orla.", through_seq=action.seq
        )
    world = play_while_alice_is_away(campaign, gm, alice, bob, act)
    summaries_update(campaign_id=campaign.id)

    text = journal(alice, campaign)
    assert text.startswith("# The Sunken Crown\n")
    assert "**Alice:** I open the door " + first in text
    assert f"It creaks open onto a dark hall {first}." in text
    # Rolls with their results: the DM's and Alice's, with DC and success.
    rolls = [
        e.payload
        for e in selectors.events_of_type_after(campaign_id=campaign.id, event_type="roll_result")
    ]
    stuck = next(r for r in rolls if r["formula"] == "1d20+5")
    assert f"*The DM rolls for the stuck door:* `1d20+5` \u2192 **{stuck['total']}**" in text
    traps = next(r for r in rolls if r["formula"] == "1d20+2")
    outcome = "success" if traps["success"] else "failure"
    assert re.search(
        rf"\*Alice rolls for spotting traps:\* `1d20\+2` \u2192 \*\*{traps['total']}\*\* "
        rf"\(1d20 \(\d+\) \+ 2 = {traps['total']}\), DC 12: {outcome}",
        text,
    ), text
    # Chapters where the summaries fall, each with its summary.
    summaries = [
        s
        for s in selectors.events_of_type_after(
            campaign_id=campaign.id, event_type="summary_created"
        )
        if s.payload["layer"] == 0
    ]
    assert len(summaries) >= 2
    headings = re.findall(r"^## Chapter (\d+)", text, flags=re.M)
    assert headings == [str(n) for n in range(1, len(summaries) + 2)]
    assert text.count("> *In short:*") == len(summaries)
    # Alice's own private narration, marked so; nobody else's secrets; no retracted words.
    assert "*(To you alone)* " + world["public"]["mine"] in text
    assert world["public"]["direction"] in text
    for hidden in (world["retracted"], *world["secret"].values()):
        assert hidden not in text, hidden

    bobs = journal(bob, campaign)
    assert world["secret"]["whisper"] in bobs and world["secret"]["private_roll"] in bobs
    assert "*(private)*" in bobs
    assert world["public"]["mine"] not in bobs
    gms = journal(gm, campaign)
    assert world["secret"]["hidden"] in gms and "hidden from the players" in gms
    assert "*(To Alice alone)* " + world["public"]["mine"] in gms
    assert world["secret"]["gm_dir"] not in gms and world["retracted"] not in gms


def test_the_journal_names_the_party_and_who_plays_whom(table, act):
    campaign, alice = table["campaign"], table["alice"]
    response = api_as(alice).post(
        f"/api/campaigns/{campaign.id}/characters",
        {
            "name": "Brienne",
            "class": "fighter",
            "ancestry": "human",
            "ability_method": "standard_array",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    act(campaign, alice, "I draw my sword")
    text = journal(alice, campaign)
    assert "- Brienne (Human Fighter, played by Alice)" in text
    assert "*Alice plays Brienne, a level 1 Human Fighter.*" in text
    assert "**Brienne (Alice):** I draw my sword" in text


def test_the_journal_is_a_markdown_download_named_after_the_campaign(table):
    campaign, alice = table["campaign"], table["alice"]
    response = api_as(alice).get(
        f"/api/campaigns/{campaign.id}/journal.md", HTTP_ACCEPT="text/markdown"
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == ('attachment; filename="the-sunken-crown-journal.md"')
    assert response["Cache-Control"] == "private, no-store"


def test_what_players_type_cannot_shape_the_journal(table, act):
    campaign, alice = table["campaign"], table["alice"]
    act(campaign, alice, "# Chapter 99\n> quoted <script>alert(1)</script> **loud** [x](http://e)")
    text = journal(alice, campaign)
    assert not re.search(r"^#+ Chapter 99", text, flags=re.M)
    assert "<script>" not in text
    assert r"\<script\>" in text and r"\*\*loud\*\*" in text


def test_the_journal_of_a_long_campaign_is_read_in_pages(table, settings):
    """5,000 events: the journal is read a page of events per query (a bounded number
    of queries), and every action and narration is in it."""
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 4000
    campaign, alice = table["campaign"], table["alice"]
    character_id = next(
        cid
        for cid, c in selectors.snapshot_get(campaign_id=campaign.id).state["characters"].items()
        if c["owner_user_id"] == str(alice.id)
    )
    with turns_deferred():
        for batch in range(10):
            events = []
            for n in range(250):
                i = batch * 250 + n
                events.append(
                    NewEvent(
                        "player_action",
                        {
                            "action_id": str(uuid.uuid4()),
                            "text": f"Action {i}",
                            "character_id": character_id,
                        },
                        "player",
                        alice.id,
                    )
                )
                events.append(
                    NewEvent(
                        "dm_narration",
                        {
                            "turn_id": str(uuid.uuid4()),
                            "text": f"Narration {i}.",
                            "options": ["Go on"],
                        },
                        "dm",
                    )
                )
            events_append(campaign_id=campaign.id, events=events)
    summaries_update(campaign_id=campaign.id)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        text = journal(alice, campaign)
    took = time.perf_counter() - started
    print(f"journal of {latest_seq(campaign)} events: {took:.2f} s, {len(queries)} queries")
    assert len(queries) < 40, [q["sql"][:120] for q in queries]
    assert all(f":** Action {i}\n" in text for i in (0, 1250, 2499))
    assert len(re.findall(r"^\*\*.+:\*\* Action \d+$", text, flags=re.M)) == 2500
    assert len(re.findall(r"^Narration \d+\.$", text, flags=re.M)) == 2500


async def _asgi_get(path: str, user: Any) -> tuple[int, dict[bytes, bytes], list[bytes]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {await sync_to_async(access_for)(user)}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(20)
    parts = []
    while True:
        message = await app.receive_output(20)
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await app.wait(5)
    return start["status"], {k.lower(): v for k, v in start["headers"]}, parts


async def test_the_journal_streams_page_by_page_through_the_asgi_server(campaign, alice):
    """Through the real ASGI application (daphne's path), the journal goes out in parts,
    a page of events each, not as one body read whole first."""

    def fill() -> None:
        with turns_deferred():
            events = [
                NewEvent(
                    "dm_narration",
                    {"turn_id": str(uuid.uuid4()), "text": f"Verse {i}.", "options": ["On"]},
                    "dm",
                )
                for i in range(1200)
            ]
            events_append(campaign_id=campaign.id, events=events)

    await sync_to_async(fill)()
    status, headers, parts = await _asgi_get(f"/api/campaigns/{campaign.id}/journal.md", alice)
    assert status == 200
    assert headers[b"content-type"] == b"text/markdown; charset=utf-8"
    assert len([p for p in parts if p]) >= 4  # head, 3 pages of 500, tail
    body = b"".join(parts).decode()
    assert "Verse 0." in body and "Verse 1199." in body


# --- Who may read them ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["recap", "journal.md"])
def test_outsiders_are_refused(table, make_user, path):
    campaign = table["campaign"]
    outsider = make_user("mallory")
    response = api_as(outsider).get(f"/api/campaigns/{campaign.id}/{path}")
    assert response.status_code == 403
    assert response.json()["code"] == "not_a_member"
    response = api_as(outsider).get(f"/api/campaigns/{uuid.uuid4()}/{path}")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    response = APIClient().get(f"/api/campaigns/{campaign.id}/{path}")
    assert response.status_code == 401
    if path != "journal.md":
        return
    # The journal's error is JSON even to a client that asks for Markdown only.
    response = api_as(outsider).get(
        f"/api/campaigns/{campaign.id}/{path}", HTTP_ACCEPT="text/markdown"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_a_member"
