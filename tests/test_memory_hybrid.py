"""Hybrid retrieval (memory/retrieval.py): full text and vectors fused, with vectors on.
A paraphrased question finds what full text misses; GM-only lore stays out of players'
searches and reaches the prompt only marked secret; a campaign's vectors never score
another campaign's passages; rag_search reports both methods' scores; the turn's
query is the action in its scene."""

from __future__ import annotations

import json
import re
import uuid

import numpy as np
import pytest
from rest_framework.test import APIClient

from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from memory import embeddings
from memory.curation import document_update
from memory.documents import document_create
from memory.models import Document, Passage
from memory.retrieval import passages_search
from memory.selectors import scene_text, turn_memory_get
from memory.vectors import passages_embed, vector_ranked
from orchestrator.prompt import prompt_build
from orchestrator.selectors import turn_context_get, turn_owed
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

FERRY = """\
# The Black Ferry

## The Fare

The ferryman takes no money from anyone. Every traveller must give him a tale he has
never heard; a tale he already knows buys nothing.

## The Hound

A grey hound sleeps at the landing and growls at anyone who carries cold iron.

## The Isle of Bells

On the far bank stands a ruined chapel whose bells ring at low tide though no rope
hangs from them.
"""

SMUGGLERS = """\
# What the GM knows

## The Hidden Dock

Beneath the fish market, Auda Renn runs contraband: untaxed brandy, stolen relics and
poisons. Anyone who knocks three times on the eel-seller's trapdoor is let in.
"""

RULES = """\
# House rules

## Grappling

To grapple a creature, make a Strength (Athletics) check contested by the target's
Strength (Athletics) or Dexterity (Acrobatics). A grappled creature's speed becomes 0.

## Resting

A short rest lasts one hour. A long rest lasts eight hours and restores all hit points.

## Drowned Magic

Spells cast underwater with the fire descriptor fizzle harmlessly. Lightning spells arc
to every creature within 10 feet of the target.
"""

# Not one word of it is in the passage that answers it ("The Fare").
PARAPHRASE = "What do I have to pay the boatman?"


@pytest.fixture(autouse=True)
def _limits(settings):
    isolate_limits(settings)
    settings.MEMORY_EMBEDDINGS = "minilm"


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def indexed(campaign, gm, text: str, title: str, visibility: str = "all") -> Document:
    """A document uploaded and embedded, as the background task leaves it."""
    document = document_create(
        campaign_id=campaign.id, text=text, title=title, visibility=visibility, uploaded_by=gm
    ).document
    passages_embed(document_id=document.id)
    return document


def heading_of(passage_id: int) -> str:
    return Passage.objects.get(pk=passage_id).heading


def rag(user, campaign, q: str, **params) -> list[dict]:
    found = client_for(user).get(f"/api/campaigns/{campaign.id}/rag_search", {"q": q, **params})
    assert found.status_code == 200, found.content
    return found.json()["results"]


def lore_in_prompt(campaign) -> list[dict]:
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


def act(campaign, user, text: str) -> None:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)


# --- Meaning where words miss -------------------------------------------------------------------


def test_a_paraphrased_question_finds_its_passage_by_hybrid_where_full_text_misses(
    campaign, gm, alice
):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    fulltext = passages_search(campaign_id=campaign.id, query=PARAPHRASE, method="fulltext")
    assert not fulltext or not heading_of(fulltext[0].passage_id).endswith("The Fare")
    vector = passages_search(campaign_id=campaign.id, query=PARAPHRASE, method="vector")
    assert heading_of(vector[0].passage_id).endswith("The Fare")
    hybrid = passages_search(campaign_id=campaign.id, query=PARAPHRASE)
    assert heading_of(hybrid[0].passage_id).endswith("The Fare")

    # rag_search: the fused order, with each method's score (null where it found nothing).
    results = rag(alice, campaign, PARAPHRASE)
    best = results[0]
    assert best["heading"].endswith("The Fare") and "no money" in best["text"]
    assert best["fulltext_score"] is None and best["vector_score"] > 0.2
    assert 0 < best["score"] <= 1
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for r in results:
        assert set(r) >= {"score", "fulltext_score", "vector_score"}
        assert r["fulltext_score"] is not None or r["vector_score"] is not None
    # A passage both methods find says so: its words and its meaning.
    hound = rag(alice, campaign, "Does the hound at the landing bite?")[0]
    assert hound["heading"].endswith("The Hound")
    assert hound["fulltext_score"] > 0 and hound["vector_score"] > 0.2


def test_exact_words_still_count_in_hybrid(campaign, gm, alice):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    found = rag(alice, campaign, "cold iron")
    assert found[0]["heading"].endswith("The Hound") and found[0]["fulltext_score"] > 0
    assert rag(alice, campaign, "the of and") == []  # no searchable word: nothing


def test_with_embeddings_off_hybrid_is_full_text(campaign, gm, settings):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    settings.MEMORY_EMBEDDINGS = "off"
    hybrid = passages_search(campaign_id=campaign.id, query="the hound at the landing")
    fulltext = passages_search(
        campaign_id=campaign.id, query="the hound at the landing", method="fulltext"
    )
    assert hybrid == fulltext and hybrid
    assert all(h.vector_score is None for h in hybrid)
    assert passages_search(campaign_id=campaign.id, query=PARAPHRASE, method="vector") == []


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        passages_search(campaign_id=uuid.uuid4(), query="anything", method="bm25")


# --- GM-only lore ------------------------------------------------------------------------------


def test_gm_only_lore_never_reaches_players_and_reaches_the_prompt_only_marked(campaign, gm, alice):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    indexed(campaign, gm, SMUGGLERS, "Secrets", visibility=Document.Visibility.GM)
    question = "Who sells smuggled liquor?"
    # The GM's search finds it by meaning alone (no word is shared)...
    gm_results = rag(gm, campaign, question)
    assert gm_results[0]["heading"].endswith("The Hidden Dock")
    assert gm_results[0]["fulltext_score"] is None
    # ...a player's never, whatever the method, however it is asked.
    for q in (question, "Auda Renn contraband brandy relics poisons", "the hidden dock"):
        for result in rag(alice, campaign, q, limit=20):
            assert "Auda" not in result["text"] and result["document_title"] != "Secrets"
        for method in ("hybrid", "vector", "fulltext"):
            hits = passages_search(campaign_id=campaign.id, query=q, limit=20, method=method)
            assert all(not h.gm_only and "Auda" not in h.text for h in hits)

    # Below the search, the vector ranking itself leaves the document out for players.
    secret_ids = set(Passage.objects.filter(document__title="Secrets").values_list("id", flat=True))
    query = embeddings.embedder().embed([question])[0]
    for gm_view in (False, True):
        ranked = vector_ranked(
            campaign_id=campaign.id,
            query_vector=query,
            model_id=embeddings.MiniLmEmbedder.model_id,
            limit=100,
            include_gm_only=gm_view,
            min_similarity=-1.0,
        )
        assert bool(secret_ids & {pid for pid, _ in ranked}) is gm_view

    # The DM's prompt gets it, marked secret; the player-readable lore is not marked.
    act(campaign, alice, "I look for someone who sells smuggled liquor")
    lore = lore_in_prompt(campaign)
    secret = [item for item in lore if "Auda" in item["text"]]
    assert secret and all("secret" in item and "never" in item["secret"] for item in secret)
    act(campaign, alice, "I offer the ferryman a coin for the crossing")
    for item in lore_in_prompt(campaign):
        assert ("secret" in item) == ("Auda" in item["text"])


def test_hiding_an_indexed_document_takes_it_out_of_players_searches_at_once(campaign, gm, alice):
    document = indexed(campaign, gm, FERRY, "The Black Ferry")
    assert rag(alice, campaign, PARAPHRASE)[0]["heading"].endswith("The Fare")  # matrix held
    document_update(campaign_id=campaign.id, document_id=document.id, visibility="gm")
    assert rag(alice, campaign, PARAPHRASE) == []
    assert rag(gm, campaign, PARAPHRASE)[0]["heading"].endswith("The Fare")


# --- One campaign's vectors ----------------------------------------------------------------------


def test_a_campaigns_vectors_never_score_another_campaigns_passages(campaign, gm, alice, make_user):
    other_gm = make_user("othergm")
    other = campaign_create(name="Elsewhere", creator=other_gm)
    bob = make_user("bob")
    campaign_join(invite_code=other.invite_code, user=bob, display_name="Bob")
    # The same ferry lore in both campaigns, and rules in the first only.
    indexed(campaign, gm, RULES, "House rules")
    theirs = indexed(other, other_gm, FERRY, "The Black Ferry")
    mine = indexed(campaign, gm, FERRY, "The Black Ferry")
    mine_ids = set(Passage.objects.filter(campaign=campaign).values_list("id", flat=True))
    theirs_ids = set(Passage.objects.filter(campaign=other).values_list("id", flat=True))

    # Searched in both orders (each campaign's matrix held in turn by this process).
    for _ in range(2):
        for camp, own, user in ((campaign, mine_ids, alice), (other, theirs_ids, bob)):
            for method in ("vector", "hybrid"):
                hits = passages_search(
                    campaign_id=camp.id, query=PARAPHRASE, limit=20, method=method
                )
                assert hits and {h.passage_id for h in hits} <= own
            assert {r["passage_id"] for r in rag(user, camp, PARAPHRASE, limit=20)} <= own

    # Below the search: the matrix of a campaign holds its own passages only.
    query = embeddings.embedder().embed([PARAPHRASE])[0]
    ranked = vector_ranked(
        campaign_id=campaign.id,
        query_vector=query,
        model_id=embeddings.MiniLmEmbedder.model_id,
        limit=100,
        include_gm_only=True,
        min_similarity=-1.0,
    )
    assert {pid for pid, _ in ranked} == mine_ids
    # A campaign with no lore finds nothing, however near the others' vectors are.
    empty = campaign_create(name="Empty", creator=other_gm)
    assert passages_search(campaign_id=empty.id, query=PARAPHRASE, include_gm_only=True) == []
    # Removing the other campaign's document leaves this one's search as it was.
    Document.objects.filter(pk=theirs.pk).delete()
    assert passages_search(campaign_id=campaign.id, query=PARAPHRASE)[0].document_id == mine.id


def test_vectors_stored_are_those_of_the_passages_text(campaign, gm):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    model = embeddings.embedder()
    for heading, text, blob in Passage.objects.filter(campaign=campaign).values_list(
        "heading", "text", "embedding"
    ):
        stored = np.frombuffer(bytes(blob), dtype="<f4")
        assert np.allclose(stored, model.embed([f"{heading}\n{text}"])[0], atol=1e-5)


# --- The turn's query ----------------------------------------------------------------------------


def test_the_turns_query_is_the_action_in_its_scene(campaign, gm, alice):
    # The fixture's scene: "The Drowned Lantern inn", "Rain on the shutters."
    assert scene_text(campaign_state(campaign)) == "The Drowned Lantern inn. Rain on the shutters"
    indexed(campaign, gm, RULES, "House rules")
    # The scene's words ("Drowned") do not outrank the action's meaning.
    act(campaign, alice, "I try to grapple the ogre")
    lore = lore_in_prompt(campaign)
    assert lore[0]["source"] == "House rules / House rules / Grappling"
    # An action about nothing in the lore brings none, scene or not.
    act(campaign, alice, "I whistle a tune")
    memory = turn_memory_get(
        campaign_id=campaign.id,
        state=campaign_state(campaign),
        action_texts=["I whistle a tune"],
    )
    assert memory.passages == []


def test_the_scene_tips_an_ambiguous_action_towards_where_it_happens(campaign, gm):
    indexed(campaign, gm, FERRY, "The Black Ferry")
    state = campaign_state(campaign)
    at_the_ferry = {**state, "scene": {"location": "the ferry landing", "description": ""}}
    in_the_chapel = {
        **state,
        "scene": {"location": "the ruined chapel", "description": "Bells hang silent above."},
    }
    action = ["I ask what I owe"]
    ferry = turn_memory_get(campaign_id=campaign.id, state=at_the_ferry, action_texts=action)
    chapel = turn_memory_get(campaign_id=campaign.id, state=in_the_chapel, action_texts=action)
    assert ferry.passages and ferry.passages[0]["source"].endswith("The Fare")
    assert chapel.passages and chapel.passages[0]["source"].endswith("The Isle of Bells")


def campaign_state(campaign) -> dict:
    from campaigns.selectors import snapshot_get

    return snapshot_get(campaign_id=campaign.id).state


def test_a_campaign_with_nothing_embedded_embeds_no_query(campaign, gm, monkeypatch):
    """A turn in a campaign with no lore (or lore not indexed yet) searches by full text
    alone: its query is not embedded, and the process loads no model for it."""
    asked = []
    real_embedder = embeddings.embedder

    def embedder():
        asked.append(True)
        return real_embedder()

    monkeypatch.setattr(embeddings, "embedder", embedder)
    assert passages_search(campaign_id=campaign.id, query=PARAPHRASE) == []
    # Uploaded, not embedded yet: found by its words only, still no query embedded.
    document_create(campaign_id=campaign.id, text=FERRY, title="Ferry", uploaded_by=gm)
    hits = passages_search(campaign_id=campaign.id, query="the ferryman's fare")
    assert hits and all(hit.vector_score is None for hit in hits)
    assert asked == []
    # Once embedded, the query is.
    [document] = Document.objects.filter(campaign_id=campaign.id)
    passages_embed(document_id=document.id)
    hits = passages_search(campaign_id=campaign.id, query=PARAPHRASE)
    assert asked and heading_of(hits[0].passage_id).endswith("The Fare")
