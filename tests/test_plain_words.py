"""What players receive is in plain words (CONTRACTS §7 "What players are told", issue 20).

A campaign is played through everything that appends an event a player may see (every
event type registered, save the GM-only ones and those named in NOT_PLAYED with the
reason), and its rendered pages are read as a player reads them (the room, the list, the
join form after a bad code, the 403 and 404 pages). No text a player receives may hold:
- a raw schema path (`characters/65d5ef2c-…`, a JSON pointer such as `/characters/…/hp`);
- a UUID outside the fields that are ids (in the human words: `text`, `detail`, `error`,
  `reason`, names, options, ... and the visible text of a page);
- a money figure (`$` and digits, `USD`, or decimals such as 0.0178).
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.views.defaults import page_not_found, permission_denied

from billing.services import budget_set
from campaigns import services
from campaigns.events import EVENT_TYPES
from campaigns.selectors import membership_get, snapshot_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from memory.summaries import summaries_update
from orchestrator.receivers import turns_deferred
from orchestrator.services import turn_run
from tests.auth_tools import isolate_limits
from tests.reads import api_as, events_seen_by

pytestmark = pytest.mark.django_db

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
SCHEMA_ROOTS = "characters|entities|scene|flags|hidden|members|turn|campaign|dice|last_options"
SCHEMA_PATH = re.compile(
    rf"(?:\b(?:characters|entities)/[0-9a-f-]{{8,}})"  # characters/65d5ef2c-...
    rf"|(?:(?<![\w.:/])/(?:{SCHEMA_ROOTS})(?:/|\b))"  # /characters/..., /flags/x
    r"|(?:(?<![\w.:/])/(?:hp|max_hp|ac|inventory|conditions)\b)",  # .../hp
    re.I,
)
MONEY = re.compile(r"\$\s*\d|\bUSD\b|\b\d+\.\d{3,}\b|\b0\.\d{2}\b")

# Keys whose strings are words for people (every string beneath them is scanned).
HUMAN_KEYS = frozenset(
    {
        "text",
        "detail",
        "error",
        "plain",
        "reason",
        "name",
        "display_name",
        "description",
        "options",
        "premise",
        "tone",
        "backstory",
        "lines",
        "veils",
        "location",
        "inventory",
        "conditions",
        "notice",
    }
)

# Event types only GMs receive, whatever happens (checked: the player never gets one).
GM_ONLY_TYPES = frozenset(
    {"budget_refused", "budget_warning", "state_patch_rejected", "roll_dc_held"}
)
# Player-visible types this test does not produce, and why.
NOT_PLAYED = {
    # Spoken narration needs a speech engine (tests run with TTS off); its payload is a
    # url, a voice id and durations, no words (tests/test_voice_pipeline.py covers it).
    "dm_audio_ready",
}

PRICES = """
[models."fake-dm"]
input = "20.00"
output = "80.00"
"""


def problems_in(text: str) -> list[str]:
    found = []
    for name, pattern in (("uuid", UUID), ("schema path", SCHEMA_PATH), ("money", MONEY)):
        found += [f"{name}: {m.group(0)!r} in {text[:160]!r}" for m in pattern.finditer(text)]
    return found


def human_strings(value: Any, *, human: bool = False) -> list[str]:
    """Every string under a HUMAN_KEYS key, however deep (options, tool_errors' reasons,
    an entity's name and description, ...)."""
    if isinstance(value, str):
        return [value] if human else []
    if isinstance(value, list):
        return [s for item in value for s in human_strings(item, human=human)]
    if isinstance(value, dict):
        return [
            s
            for key, item in value.items()
            for s in human_strings(item, human=human or key in HUMAN_KEYS)
        ]
    return []


class _VisibleText(HTMLParser):
    """The text a person sees on a page: no tags, attributes, scripts or styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "template"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "template") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(" ".join(data.split()))


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return "\n".join(parser.parts)


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- A campaign played through every event a player may see ------------------------------------


class Table:
    def __init__(self, gm: Any, alice: Any, bob: Any, campaign: Any) -> None:
        self.gm, self.alice, self.bob, self.campaign = gm, alice, bob, campaign
        self.fork: Any = None

    @property
    def url(self) -> str:
        return f"/api/campaigns/{self.campaign.id}"

    def act(self, user: Any, text: str) -> int:
        membership = membership_get(campaign_id=self.campaign.id, user_id=user.id)
        with turns_deferred():
            event = player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
        return event.seq

    def play(self, user: Any, text: str) -> None:
        self.act(user, text)
        turn_run(campaign_id=self.campaign.id)

    def ok(self, response: Any, status: int = 200) -> Any:
        assert 200 <= response.status_code < 300, response.content
        return response

    def character_of(self, user: Any) -> str:
        characters = snapshot_get(campaign_id=self.campaign.id).state["characters"]
        return next(cid for cid, c in characters.items() if c.get("owner_user_id") == str(user.id))


@pytest.fixture
def table(gm: Any, make_user: Any, settings: Any, tmp_path: Any) -> Table:
    isolate_limits(settings)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    settings.PRICES_FILE = str(prices)
    settings.MODEL_CALLS_PER_USER_PER_MINUTE = 10_000
    settings.MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE = 10_000
    settings.BILLING_USER_DAILY_CAP_USD = ""
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 120
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 100
    settings.MEMORY_SUMMARY_MAX_TOKENS = 60

    with turns_deferred():
        campaign = campaign_create(
            name="The Sunken Crown",
            creator=gm,
            display_name="Mara",
            premise="A drowned city rises from the bay.",
            tone="eerie",
            lines=["harm to children"],
            veils=["torture"],
            opening=True,
        )
    budget_set(campaign_id=campaign.id, daily_cap_usd="5.00", hard_stop=True)
    turn_run(campaign_id=campaign.id)  # the opening scene
    alice, bob = make_user("alice"), make_user("bob")
    for user, name in ((alice, "Alice"), (bob, "Bob")):
        campaign_join(invite_code=campaign.invite_code, user=user, display_name=name)
    t = Table(gm, alice, bob, campaign)

    # Characters: made (one by the server's dice), and corrected by the GM.
    t.ok(
        api_as(alice).post(
            f"{t.url}/characters",
            {
                "name": "Brannoc",
                "class": "fighter",
                "ancestry": "human",
                "ability_method": "standard_array",
                "backstory": "A sailor who lost his ship.",
            },
            format="json",
        ),
        201,
    )
    t.ok(
        api_as(bob).post(
            f"{t.url}/characters",
            {"name": "Wren", "class": "rogue", "ancestry": "halfling", "ability_method": "roll"},
            format="json",
        ),
        201,
    )
    t.ok(api_as(gm).patch(f"{t.url}/characters/{t.character_of(bob)}", {"hp": 5}, format="json"))
    t.ok(api_as(gm).patch(f"{t.url}/", {"premise": "The bay gives back its dead."}, format="json"))

    # Play: a fight (two-step turn, a sound cue), a meeting (an entity), an item (a patch).
    t.play(alice, "I attack the drowned sailor with my cutlass")
    t.play(alice, "I greet the old harbourmaster")
    t.play(bob, "I pick up the brass lantern")
    # The GM hides an entity the players met: they are told only that it is withdrawn.
    met = next(
        i
        for i, e in snapshot_get(campaign_id=campaign.id).state["entities"].items()
        if not e.get("hidden")
    )
    t.ok(
        api_as(gm).post(
            f"{t.url}/gm/values", {"path": f"/entities/{met}/hidden", "value": True}, format="json"
        ),
        201,
    )
    t.ok(
        api_as(alice).post(
            f"{t.url}/rolls", {"formula": "1d20+2", "reason": "luck"}, format="json"
        ),
        201,
    )

    # A DM turn whose patch and tools are refused: plain words in the public narration,
    # the refused patch for the GMs alone.
    through = t.act(bob, "I hold the lantern high")
    turn_commit(
        campaign_id=campaign.id,
        turn_id=str(uuid.uuid4()),
        narration="The lantern flares and the water hisses.",
        options=["Go on", "Step back"],
        tool_calls=[
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "the heat burns",
                    "patches": [
                        {
                            "op": "replace",
                            "path": f"/characters/{t.character_of(bob)}/hp",
                            "value": 999,
                        }
                    ],
                },
            },
            {"name": "trigger_audio", "args": {"cue": "no-such-cue"}},
            {"name": "create_entity", "args": {"kind": "npc", "name": ""}},
            {
                "name": "roll",
                "args": {"formula": "1d20", "reason": "x", "private_to": str(uuid.uuid4())},
            },
        ],
        through_seq=through,
    )

    # The GM's hand: a direction, a value set, the dice seed revealed, a retry.
    t.ok(
        api_as(gm).post(
            f"{t.url}/directions", {"text": "Fog rolls in.", "now": False}, format="json"
        ),
        202,
    )
    t.ok(
        api_as(gm).post(
            f"{t.url}/gm/values",
            {"character_id": t.character_of(alice), "field": "hp", "value": 7},
            format="json",
        ),
        201,
    )
    t.ok(api_as(gm).post(f"{t.url}/gm/dice/reveal", {}, format="json"), 201)
    whisper_send(
        membership=membership_get(campaign_id=campaign.id, user_id=alice.id),
        to="gm",
        text="I do not trust the harbourmaster.",
    )
    t.play(alice, "I look out over the bay")
    latest = [e for e in events_seen_by(campaign, gm) if e["type"] == "dm_narration"][-1]
    t.ok(api_as(gm).post(f"{t.url}/narrations/{latest['seq']}/retry", {}, format="json"), 202)
    turn_run(campaign_id=campaign.id)
    with turns_deferred():
        t.ok(api_as(bob).post(f"{t.url}/x_card", {}, format="json"), 202)
    turn_run(campaign_id=campaign.id)

    # The budget stops the DM, a raise resumes it.
    budget_set(campaign_id=campaign.id, daily_cap_usd="0.0001", hard_stop=True)
    t.play(alice, "I wait for the tide")
    t.ok(api_as(gm).put(f"{t.url}/budget", {"daily_cap_usd": "5.00"}, format="json"))
    turn_run(campaign_id=campaign.id)

    summaries_update(campaign_id=campaign.id)

    # The GM role goes round and back; Bob leaves; the GM forks the campaign.
    t.ok(api_as(gm).post(f"{t.url}/gm_role", {"to": str(alice.id)}, format="json"))
    t.ok(api_as(alice).post(f"{t.url}/gm_role", {"to": str(gm.id)}, format="json"))
    t.ok(api_as(bob).post(f"{t.url}/leave"), 204)
    at = snapshot_get(campaign_id=campaign.id).version
    fork = t.ok(api_as(gm).post(f"{t.url}/fork", {"at_seq": at}, format="json"), 201)
    t.fork = fork.json()["id"]
    return t


def _player_events(t: Table) -> list[dict]:
    events = events_seen_by(t.campaign, t.alice)
    response = api_as(t.alice).get(f"/api/campaigns/{t.fork}/events?limit=1000")
    assert response.status_code == 200, response.content
    return events + response.json()


def test_every_event_a_player_receives_is_in_plain_words(table):
    events = _player_events(table)
    seen = {e["type"] for e in events}
    expected = set(EVENT_TYPES) - GM_ONLY_TYPES - set(NOT_PLAYED)
    # A new player-visible event type is scanned here too: play it above (or say why not).
    assert expected <= seen, f"not played: {sorted(expected - seen)}"
    assert not seen & GM_ONLY_TYPES, "a GM-only event reached a player"
    # The GM did get them: the scan is not vacuous.
    gm_seen = {e["type"] for e in events_seen_by(table.campaign, table.gm)}
    assert {"budget_refused", "state_patch_rejected"} <= gm_seen

    problems = []
    for event in events:
        for text in human_strings(event["payload"]):
            problems += [f"{event['type']} #{event['seq']}: {p}" for p in problems_in(text)]
    assert problems == []


def test_the_snapshot_and_the_campaign_a_player_reads_are_in_plain_words(table):
    for path in ("snapshot", "", "characters"):
        body = api_as(table.alice).get(f"{table.url}/{path}").json()
        problems = [p for text in human_strings(body) for p in problems_in(text)]
        assert problems == [], path
    for entry in api_as(table.alice).get("/api/campaigns/").json():
        assert problems_in(entry["whose_turn"]["text"]) == []


def test_the_pages_a_player_sees_are_in_plain_words(table, make_user, settings):
    settings.DEBUG = True  # the pages must be ours even so
    alice = client_for(table.alice)
    stranger = make_user("stranger")
    pages = {
        "room": alice.get(reverse("campaign-room", args=[table.campaign.id])),
        "list": alice.get(reverse("campaign-list")),
        "join with a bad code": client_for(stranger).post(
            reverse("campaign-join"), {"invite_code": "WRONG12345", "display_name": "Kit"}
        ),
        "not at this table": client_for(stranger).get(
            reverse("campaign-room", args=[table.campaign.id])
        ),
        "removed from the table": client_for(table.bob).get(
            reverse("campaign-room", args=[table.campaign.id])
        ),
    }
    services.member_kick(campaign_id=table.fork, user_id=table.alice.id, by_user=table.gm)
    pages["kicked"] = alice.get(reverse("campaign-room", args=[table.fork]))
    request = alice.get(reverse("campaign-list")).wsgi_request
    pages["403"] = permission_denied(request, Exception(f"secret {uuid.uuid4()}"))
    pages["404"] = page_not_found(request, Exception(f"/characters/{uuid.uuid4()}/hp"))

    assert pages["not at this table"].status_code == 404
    assert pages["kicked"].status_code == 403
    for name, response in pages.items():
        assert response.status_code in (200, 403, 404), name
        text = visible_text(response.content.decode())
        assert text, name
        assert problems_in(text) == [], name
