"""The fake DM model: deterministic, keyless, answers what the players did, uses the tools,
streams, and reports token usage counted with the tokenizer. With nothing configured it
plays a varied, tool-using session."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest
from asgiref.sync import async_to_sync

from campaigns.selectors import events_after, membership_get, snapshot_get
from campaigns.services import player_action_submit
from llm.adapters import ModelRequest, adapter_for
from llm.tokens import count_message_tokens, count_tokens
from orchestrator.fake import fake_answer, fake_reply
from orchestrator.prompt import ActionInTurn, TurnContext, prompt_build
from orchestrator.schema import answer_parse
from orchestrator.services import turns_run_pending


def context(*actions: tuple[str, str], state: dict | None = None, through: int = 9) -> TurnContext:
    state = state or {"scene": {"location": "the crypt"}, "characters": {}, "entities": {}}
    return TurnContext(
        campaign_id=str(uuid.uuid4()),
        edition="5e",
        state=state,
        actions=[
            ActionInTurn(
                seq=i + 1, who=who, user_id=None, character_id=None, character_name=None, text=text
            )
            for i, (who, text) in enumerate(actions)
        ],
        through_seq=through,
    )


def answer_to(ctx: TurnContext):
    prompt = prompt_build(context=ctx, budget=4000)
    reply = async_to_sync(adapter_for(provider="fake").complete)(
        ModelRequest(messages=prompt.messages, max_tokens=500, fake_reply=fake_reply(ctx))
    )
    return reply, answer_parse(reply.text), prompt


class Collect:
    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.restarts = 0

    async def feed(self, chunk: str) -> None:
        self.chunks.append(chunk)

    def restart(self) -> None:
        self.restarts += 1


def test_the_same_turn_always_gets_the_same_answer():
    ctx = context(("Alice", "I open the door"))
    assert answer_to(ctx)[0].text == answer_to(ctx)[0].text


def test_the_answer_names_every_actor_and_what_they_did_with_three_to_six_options():
    _, answer, _ = answer_to(context(("Alice", "I light a torch"), ("Bob", "I wait by the stairs")))
    assert "Alice" in answer.narration and "Bob" in answer.narration
    # Their own words, quoted, anchor the answer.
    assert "“I light a torch.”" in answer.narration
    assert "“I wait by the stairs.”" in answer.narration
    assert 3 <= len(answer.options) <= 6


def test_answers_vary_with_what_the_players_do():
    texts = [
        "I open the door",
        "I sing a song",
        "I climb the wall",
        "I drink the potion",
        "I read the letter",
        "I wait",
        "I light a torch",
        "I call for help",
    ]
    narrations = {answer_to(context(("Alice", t)))[1].narration for t in texts}
    assert len(narrations) == len(texts)
    openings = {n.split("Alice")[0] for n in narrations}
    assert len(openings) > 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I attack the goblin", "attack"),
        ("I sneak past the guard", "stealth"),
        ("I search the chest", "investigation"),
    ],
)
def test_attacks_sneaking_and_searching_get_a_roll(text: str, reason: str):
    _, answer, _ = answer_to(context(("Alice", text)))
    rolls = [c for c in answer.tool_calls_as_dicts() if c["name"] == "roll"]
    assert len(rolls) == 1 and reason in rolls[0]["args"]["reason"]
    assert rolls[0]["args"]["formula"].startswith("1d20")
    # The narration never states a number for the roll it asked for.
    assert not any(ch.isdigit() for ch in answer.narration)


@pytest.mark.parametrize(
    "text",
    [
        "I check the door for traps",
        "I listen at the door",
        "I eavesdrop on the guards",
        "I make a perception check",
        "I search the corridor for traps",
    ],
)
def test_a_trap_search_or_listening_is_a_secret_roll_and_words_for_that_player_alone(text):
    user_id = str(uuid.uuid4())
    ctx = context(("Alice", text))
    ctx = replace(ctx, actions=[replace(ctx.actions[0], user_id=user_id)])
    _, first, _ = answer_to(ctx)
    # First the secret roll alone, then the words for Alice as the dice decided.
    [roll] = first.tool_calls_as_dicts()
    assert first.asks_for_rolls and roll["name"] == "roll"
    assert roll["args"]["private_to"] == user_id and "perception" in roll["args"]["reason"]
    for total, success in ((19, True), (3, False)):
        result = {**roll["args"], "total": total, "success": success}
        answer = answer_parse(json.dumps(fake_answer(ctx, [result])))
        [private] = answer.tool_calls_as_dicts()
        assert private["name"] == "narrate_private" and private["args"]["to"] == user_id
        assert ("nothing out of the ordinary" in private["args"]["text"]) is not success
        # What only Alice noticed, and her total, stay out of the public narration.
        assert private["args"]["text"] not in answer.narration
        assert f"{total} against" not in answer.narration
        assert "Alice" in answer.narration


@pytest.mark.parametrize(
    "text", ["I open the trapdoor", "Alice searches the bar for hidden coins", "Rest and listen"]
)
def test_other_actions_stay_public(text):
    ctx = context(("Alice", text))
    ctx = replace(ctx, actions=[replace(ctx.actions[0], user_id=str(uuid.uuid4()))])
    calls = answer_to(ctx)[1].tool_calls_as_dicts()
    assert all(c["name"] != "narrate_private" for c in calls)
    assert all("private_to" not in c["args"] for c in calls)


def test_usage_is_counted_with_the_tokenizer():
    reply, _, prompt = answer_to(context(("Alice", "I attack the goblin")))
    assert reply.usage.provider == "fake" and reply.usage.purpose == "dm_turn"
    assert reply.usage.input_tokens == count_message_tokens(prompt.messages) > 100
    assert reply.usage.output_tokens == count_tokens(reply.text) > 10
    assert not reply.usage.estimated


def test_it_streams_the_answer_in_chunks():
    ctx = context(("Alice", "I look around"))
    prompt = prompt_build(context=ctx, budget=4000)
    sink = Collect()
    reply = async_to_sync(adapter_for(provider="fake").stream)(
        ModelRequest(messages=prompt.messages, max_tokens=500, fake_reply=fake_reply(ctx)), sink
    )
    assert len(sink.chunks) > 5
    assert "".join(sink.chunks) == reply.text
    json.loads(reply.text)


# --- A session with nothing configured --------------------------------------------------------


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def play(campaign, user, text: str) -> list:
    membership = membership_get(campaign_id=campaign.id, user_id=user.id)
    action = player_action_submit(membership=membership, action_id=uuid.uuid4(), text=text)
    assert turns_run_pending(campaign_id=campaign.id) == 1
    return events_after(campaign_id=campaign.id, after_seq=action.seq)


@pytest.mark.django_db
def test_a_session_with_the_fake_model_uses_the_tools(campaign, alice):
    attack = play(campaign, alice, "I attack the goblin with my sword")
    assert [e.type for e in attack][-1] == "dm_narration"
    assert {"roll_requested", "roll_result"} <= {e.type for e in attack}
    assert attack[-1].payload["fallback"] is False
    assert "I attack the goblin with my sword" in attack[-1].payload["text"]

    take = play(campaign, alice, "I pick up the rusty key")
    assert "state_patch_applied" in [e.type for e in take]
    state = snapshot_get(campaign_id=campaign.id).state
    [character] = [c for c in state["characters"].values() if c["name"] == "Alice"]
    assert "rusty key" in character["inventory"]

    meet = play(campaign, alice, "I greet the old innkeeper")
    assert "entity_created" in [e.type for e in meet]
    npcs = snapshot_get(campaign_id=campaign.id).state["entities"].values()
    assert any(n["data"].get("description") == "the old innkeeper" for n in npcs)

    # Meeting the same person again creates no second one.
    again = play(campaign, alice, "I greet the old innkeeper")
    assert "entity_created" not in [e.type for e in again]

    narrations = [e.payload["text"] for e in (attack[-1], take[-1], meet[-1], again[-1])]
    assert len(set(narrations)) == 4
    for narration in (attack[-1], take[-1], meet[-1]):
        assert not narration.payload.get("tool_errors")


# `manage.py play` (the terminal client) is tested in tests/test_terminal_client.py.
