"""A campaign never retrieves another campaign's documents, summaries or NPC memories:
not through rag_search, not in a turn's prompt, whatever the words match."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from campaigns.selectors import membership_get
from campaigns.services import campaign_create, campaign_join, player_action_submit
from campaigns.tools import turn_commit
from memory.documents import document_create
from memory.npc_memory import npc_memories_extract
from memory.retrieval import passages_search
from memory.selectors import summaries_for_prompt
from memory.summaries import summaries_update
from orchestrator.prompt import prompt_build
from orchestrator.selectors import turn_context_get, turn_owed
from tests.auth_tools import isolate_limits

pytestmark = pytest.mark.django_db

SECRET_LORE = "# Vorghast\n\nThe lich Vorghast sleeps under the Drowned Lantern inn."


def play(campaign, user, texts: list[str], narration: str, tool_calls=None) -> None:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    for n, text in enumerate(texts):
        action = player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
        turn_commit(
            campaign_id=campaign.id,
            turn_id=str(uuid.uuid4()),
            narration=narration,
            options=["Go on"],
            tool_calls=(tool_calls or []) if n == 0 else [],
            through_seq=action.seq,
        )


def prompt_text(campaign) -> str:
    answered, through = turn_owed(campaign_id=campaign.id)
    context = turn_context_get(campaign_id=campaign.id, answered_seq=answered, through_seq=through)
    return "\n".join(m["content"] for m in prompt_build(context=context, budget=6000).messages)


def test_documents_summaries_and_npc_memories_stay_in_their_campaign(
    campaign, gm, make_user, settings
):
    isolate_limits(settings)
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 60
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 40
    alice = make_user("alice")
    campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    # Campaign A: lore about Vorghast, an innkeeper called Maren Holt, summaries.
    document_create(campaign_id=campaign.id, text=SECRET_LORE, title="Secrets", uploaded_by=gm)
    play(
        campaign,
        alice,
        ["I greet the innkeeper"] + [f"I ask the innkeeper about Vorghast ({n})" for n in range(8)],
        "Maren Holt, the innkeeper, whispers of the lich Vorghast in Saltmarsh.",
        tool_calls=[
            {
                "name": "create_entity",
                "args": {
                    "kind": "npc",
                    "name": "Maren Holt",
                    "data": {"description": "the innkeeper"},
                },
            }
        ],
    )
    assert summaries_update(campaign_id=campaign.id)
    assert npc_memories_extract(campaign_id=campaign.id)

    # Campaign B: another table, with an innkeeper of its own, asking the same things.
    other_gm, bob = make_user("othergm"), make_user("bob")
    other = campaign_create(
        name="Elsewhere", creator=other_gm, scene={"location": "The Drowned Lantern inn"}
    )
    campaign_join(invite_code=other.invite_code, user=bob, display_name="Bob")
    play(
        other,
        bob,
        ["I greet the innkeeper"],
        "The innkeeper, Tam, shrugs.",
        tool_calls=[
            {
                "name": "create_entity",
                "args": {"kind": "npc", "name": "Tam", "data": {"description": "the innkeeper"}},
            }
        ],
    )
    summaries_update(campaign_id=other.id)
    npc_memories_extract(campaign_id=other.id)
    membership = membership_get(campaign_id=other.id, user_id=bob.id)
    player_action_submit(
        membership=membership,
        action_id=uuid.uuid4(),
        text="I ask the innkeeper about the lich Vorghast and Maren Holt",
    )

    # Not through rag_search, for its players or its GM.
    for user in (bob, other_gm):
        client = APIClient()
        client.force_authenticate(user)
        found = client.get(f"/api/campaigns/{other.id}/rag_search", {"q": "Vorghast lich"})
        assert found.status_code == 200 and found.json()["results"] == []
        listed = client.get(f"/api/campaigns/{other.id}/documents")
        assert listed.json() == []
    assert passages_search(campaign_id=other.id, query="Vorghast", include_gm_only=True) == []
    assert passages_search(campaign_id=campaign.id, query="Vorghast")  # A still finds it
    # Not as summaries.
    assert summaries_for_prompt(campaign_id=other.id, budget=2000) == (0, [])
    assert summaries_for_prompt(campaign_id=campaign.id, budget=2000)[1]
    # Not in B's prompt: B's innkeeper is Tam, and nothing of A is there.
    text = prompt_text(other)
    assert '"npc":"Tam"' in text
    assert "Maren Holt" not in text.replace("about the lich Vorghast and Maren Holt", "")
    assert "sleeps under" not in text and "Saltmarsh" not in text and "Secrets" not in text
    # While A's own prompt has all three.
    membership_a = membership_get(campaign_id=campaign.id, user_id=alice.id)
    player_action_submit(
        membership=membership_a, action_id=uuid.uuid4(), text="I ask the innkeeper about Vorghast"
    )
    text_a = prompt_text(campaign)
    assert "sleeps under" in text_a and '"npc":"Maren Holt"' in text_a and "STORY SO FAR" in text_a


def test_a_document_of_one_campaign_cannot_be_uploaded_into_a_campaign_one_does_not_run(
    campaign, make_user, settings
):
    isolate_limits(settings)
    mallory = make_user("mallory")
    own = campaign_create(name="Mine", creator=mallory)
    client = APIClient()
    client.force_authenticate(mallory)
    response = client.post(
        f"/api/campaigns/{campaign.id}/documents",
        {"title": "Ledger", "text": "The forged ledger of Mallory."},
        format="json",
    )
    assert response.status_code == 403
    ok = client.post(
        f"/api/campaigns/{own.id}/documents", {"title": "x", "text": "y"}, format="json"
    )
    assert ok.status_code == 201
    assert passages_search(campaign_id=campaign.id, query="y x") == []
