"""Lore and rules for retrieval: the GM uploads text or Markdown (multipart `file` or JSON
`title` + `text`), limited in type, size and rate; it is cut into passages along
headings and paragraphs; `rag_search` finds the right passage with its score and
source; each turn's prompt carries the best passages for its actions, naming them."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from campaigns.selectors import membership_get
from campaigns.services import player_action_submit
from memory.documents import passages_split
from memory.models import Document, Passage
from orchestrator.prompt import prompt_build
from orchestrator.selectors import turn_context_get, turn_owed
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

RULES = """\
# Rules of the Sunken Crown

House rules for this campaign. Everything not written here follows the Player's Handbook.

## Combat

### Grappling

To grapple a creature, use the Attack action to make a special melee attack: a
Strength (Athletics) check contested by the target's Strength (Athletics) or Dexterity
(Acrobatics) check. A grappled creature's speed becomes 0. The grappler can drag the
creature at half speed.

### Shoving

You can shove a creature to knock it prone or push it 5 feet away, with the same
contested check as grappling.

## Resting

A short rest lasts one hour. During it a character can spend Hit Dice to regain hit
points. A long rest lasts eight hours and restores all hit points.

## Drowned Magic

Spells cast underwater with the fire descriptor fizzle harmlessly. Lightning spells arc
to every creature within 10 feet of the target, friend or foe.
"""


@pytest.fixture(autouse=True)
def _limits(settings):
    isolate_limits(settings)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(user, campaign, text: str = RULES, name: str = "rules.md", **extra):
    body = {"file": SimpleUploadedFile(name, text.encode(), content_type="text/markdown")}
    body.update(extra)
    return client_for(user).post(
        f"/api/campaigns/{campaign.id}/documents", body, format="multipart"
    )


def search(user, campaign, q: str, **params):
    campaign_id = getattr(campaign, "id", campaign)
    return client_for(user).get(f"/api/campaigns/{campaign_id}/rag_search", {"q": q, **params})


# --- Upload -----------------------------------------------------------------------------------


def test_a_markdown_file_is_cut_along_headings_and_rag_search_finds_the_right_passage(
    campaign, gm, alice
):
    created = upload(gm, campaign, title="House rules")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["title"] == "House rules" and body["content_type"] == "text/markdown"
    assert body["filename"] == "rules.md" and body["passages"] == 5

    found = search(alice, campaign, "how do I grapple an ogre?")
    assert found.status_code == 200
    results = found.json()["results"]
    best = results[0]
    assert best["heading"] == "Rules of the Sunken Crown / Combat / Grappling"
    assert best["source"] == "House rules / Rules of the Sunken Crown / Combat / Grappling"
    assert "speed becomes 0" in best["text"]
    assert best["document_id"] == body["id"]
    assert 0 < best["score"] <= 1
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)

    rest = search(alice, campaign, "how long is a short rest", limit=1).json()["results"]
    assert len(rest) == 1 and rest[0]["heading"].endswith("Resting")
    assert (
        search(alice, campaign, "lightning underwater")
        .json()["results"][0]["heading"]
        .endswith("Drowned Magic")
    )
    assert search(alice, campaign, "the of and").json()["results"] == []
    assert search(alice, campaign, "xylophone").json()["results"] == []


def test_json_title_and_text_and_a_repeat_is_not_stored_twice(campaign, gm):
    url = f"/api/campaigns/{campaign.id}/documents"
    payload = {"title": "The Drowned Lantern", "text": "The innkeeper hides a map in the cellar."}
    first = client_for(gm).post(url, payload, format="json")
    assert first.status_code == 201 and first.json()["passages"] == 1
    again = client_for(gm).post(url, payload, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    listed = client_for(gm).get(url).json()
    assert [d["title"] for d in listed] == ["The Drowned Lantern"]


def test_players_may_not_upload_and_outsiders_may_not_search(campaign, alice, make_user):
    refused = upload(alice, campaign)
    assert refused.status_code == 403 and refused.json()["code"] == "gm_only"
    outsider = make_user("mallory")
    assert search(outsider, campaign, "grapple").status_code == 403
    assert APIClient().get(f"/api/campaigns/{campaign.id}/rag_search?q=x").status_code == 401
    missing = search(alice, uuid.uuid4(), "grapple")
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("name", "content", "content_type", "code"),
    [
        ("map.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png", "unsupported_type"),
        ("rules.pdf", b"%PDF-1.7 ...", "application/pdf", "unsupported_type"),
        ("notes.txt", b"binary\x00inside", "text/plain", "unsupported_type"),
        ("notes.txt", b"caf\xe9 latin-1", "text/plain", "invalid_encoding"),
        ("notes.md", b"   \n\n  \n", "text/markdown", "empty_document"),
        ("notes.exe", b"MZ text", "application/octet-stream", "unsupported_type"),
    ],
)
def test_what_is_not_text_gets_a_clear_400(campaign, gm, name, content, content_type, code):
    response = client_for(gm).post(
        f"/api/campaigns/{campaign.id}/documents",
        {"file": SimpleUploadedFile(name, content, content_type=content_type)},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert response.json()["detail"]


def test_bad_requests_are_400_not_500(campaign, gm, alice):
    url = f"/api/campaigns/{campaign.id}/documents"
    assert client_for(gm).post(url, {"title": "x"}, format="json").status_code == 400
    assert client_for(gm).post(url, [1, 2], format="json").status_code == 400
    assert client_for(gm).post(url, {}, format="multipart").status_code == 400
    bad_visibility = client_for(gm).post(
        url, {"title": "x", "text": "y", "visibility": "nobody"}, format="json"
    )
    assert bad_visibility.status_code == 400
    assert search(alice, campaign, "").status_code == 400
    assert search(alice, campaign, "x" * 501).status_code == 400
    assert search(alice, campaign, "grapple", limit=0).status_code == 400
    no_q = client_for(alice).get(f"/api/campaigns/{campaign.id}/rag_search")
    assert no_q.status_code == 400 and no_q.json()["code"]


def test_a_document_over_the_size_limit_is_413(campaign, gm, settings):
    settings.MEMORY_DOCUMENT_MAX_BYTES = 1000
    big = upload(gm, campaign, text="word " * 400, name="big.txt")
    assert big.status_code == 413, big.content
    assert big.json()["code"] == "too_large" and "1000 bytes" in big.json()["detail"]
    as_json = client_for(gm).post(
        f"/api/campaigns/{campaign.id}/documents",
        {"title": "big", "text": "word " * 400},
        format="json",
    )
    assert as_json.status_code == 413
    assert upload(gm, campaign, text="word " * 100, name="small.txt").status_code == 201


def test_a_document_of_60000_headings_is_refused_before_anything_is_stored(campaign, gm):
    """One 650 KB file of 60,000 one-line sections would have made 60,000 passages (and
    token counts) in one request: it is refused while being split, and leaves nothing."""
    text = "".join(f"# E{n}\nx\n" for n in range(60_000))
    assert len(text.encode()) < 1024 * 1024
    refused = upload(gm, campaign, text=text, name="glossary.md")
    assert refused.status_code == 400, refused.content[:300]
    body = refused.json()
    assert body["code"] == "too_many_passages"
    assert "more than 2,000 passages" in body["detail"] and "fewer headings" in body["detail"]
    assert not Document.objects.exists() and not Passage.objects.exists()
    as_json = client_for(gm).post(
        f"/api/campaigns/{campaign.id}/documents",
        {"title": "Glossary", "text": text},
        format="json",
    )
    assert as_json.status_code == 400 and as_json.json()["code"] == "too_many_passages"
    assert not Document.objects.exists() and not Passage.objects.exists()


def test_the_passage_limit_is_a_setting_and_a_document_at_it_is_stored(campaign, gm, settings):
    settings.MEMORY_DOCUMENT_MAX_PASSAGES = 5  # RULES makes exactly 5 passages
    stored = upload(gm, campaign)
    assert stored.status_code == 201 and stored.json()["passages"] == 5
    settings.MEMORY_DOCUMENT_MAX_PASSAGES = 4
    refused = upload(gm, campaign, text=RULES + "\n## Ships\n\nThey sink.\n", name="more.md")
    assert refused.status_code == 400 and refused.json()["code"] == "too_many_passages"
    assert "more than 4 passages" in refused.json()["detail"]
    assert Document.objects.count() == 1 and Passage.objects.count() == 5


def test_uploads_and_searches_are_rate_limited(campaign, gm, alice, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload_user": "2/h", "rag_search_user": "3/m"}
    assert upload(gm, campaign, text="one", name="a.txt").status_code == 201
    assert upload(gm, campaign, text="two", name="b.txt").status_code == 201
    limited = upload(gm, campaign, text="three", name="c.txt")
    assert limited.status_code == 429 and limited["Retry-After"]
    assert limited.json()["code"] == "rate_limited"
    for _ in range(3):
        assert search(alice, campaign, "one").status_code == 200
    assert search(alice, campaign, "one").status_code == 429


def test_gm_only_documents_are_kept_from_players_but_not_from_the_dm(campaign, gm, alice):
    secret = "## The Twist\n\nThe innkeeper is the lich Vorghast in disguise."
    assert upload(gm, campaign, text=secret, name="twist.md", visibility="gm").status_code == 201
    assert search(alice, campaign, "Vorghast lich").json()["results"] == []
    assert search(gm, campaign, "Vorghast lich").json()["results"][0]["heading"] == "The Twist"
    assert client_for(alice).get(f"/api/campaigns/{campaign.id}/documents").json() == []

    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    player_action_submit(
        membership=membership, action_id=uuid.uuid4(), text="I ask about the lich Vorghast"
    )
    [lore] = _lore(campaign)
    assert "in disguise" in lore["text"]
    # The DM is told the players have not read it, as with hidden entities.
    assert "GM-only lore" in lore["secret"]


# --- Passages in the prompt -------------------------------------------------------------------


def _lore(campaign) -> list[dict]:
    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    prompt = prompt_build(context=context, budget=6000, nonce="0123456789abcdef")
    user = prompt.messages[1]["content"]
    match = re.search(
        r"<<<0123456789abcdef BEGIN LORE>>>\n(.*?)\n<<<0123456789abcdef END LORE>>>",
        user,
        re.DOTALL,
    )
    return [json.loads(line) for line in match.group(1).split("\n")] if match else []


def test_each_turn_gets_the_best_passages_for_its_actions_naming_their_source(
    campaign, gm, alice, settings
):
    upload(gm, campaign, title="House rules")
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    player_action_submit(
        membership=membership, action_id=uuid.uuid4(), text="I try to grapple the ogre"
    )
    lore = _lore(campaign)
    assert lore[0]["source"] == "House rules / Rules of the Sunken Crown / Combat / Grappling"
    assert "contested" in lore[0]["text"] and lore[0]["score"] > 0
    # Within its token budget: a tiny budget leaves the passages out rather than the turn.
    settings.MEMORY_PROMPT_PASSAGE_TOKENS = 10
    assert _lore(campaign) == []


def test_an_action_that_matches_nothing_brings_no_lore(campaign, gm, alice):
    upload(gm, campaign)
    membership = membership_get(campaign_id=campaign.id, user_id=alice.id)
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text="I whistle a tune")
    assert _lore(campaign) == []


# --- Cutting text -------------------------------------------------------------------------------


def test_passages_follow_headings_and_paragraphs_and_never_pass_the_limit():
    text = (
        "Intro line.\n\nTitle\n=====\n\nFirst paragraph.\n\nSecond paragraph.\n\n"
        "Sub\n---\n\n" + ("A sentence that goes on. " * 30) + "\n\n```\n# not a heading\n```\n"
    )
    passages = passages_split(text, max_chars=200)
    assert passages[0].heading == "" and passages[0].text == "Intro line."
    assert passages[1].heading == "Title"
    assert passages[1].text == "First paragraph.\n\nSecond paragraph."
    assert all(p.heading == "Title / Sub" for p in passages[2:])
    assert all(len(p.text) <= 200 for p in passages)
    assert "# not a heading" in passages[-1].text
    assert passages_split("x" * 450, max_chars=200)[0].text == "x" * 200
