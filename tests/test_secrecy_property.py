"""Property (issue 16): whatever the DM model and the GM do, nothing a PLAYER can read
holds a hidden entity's name or data values, or a hidden flag's name or value.

Each example builds a campaign through the public seams (hidden entities made by the
DM's `create_entity` with `hidden: true`, hidden flags set by the GM's
`POST .../gm/values`), then runs random DM turns (through `/internal/tools/execute` or
`campaigns.tools.turn_commit`, as a DM turn does) made of random tool calls: patches
valid and invalid, into unknown ids and hidden ones, with bad pointers, moving and copying
out of hidden state, with values that are objects; rolls, entities, private narration,
audio cues, unknown tools; and random GM reverts. Every hidden name and value is a
distinctive random token (`ZQX` + hex), so a substring search over the JSON of what a
player reads is a sound check. Values a model writes where players look are other tokens
(`PUB` + hex): the model publishing a secret on purpose is not what is tested.

The rest of the table keeps secrets from that player too (issue 18): another player's
private rolls and the GM's (`POST .../rolls` with `private`, reason a secret token) and
the GM's secret directions to the DM (`POST .../directions` with `secret`); their public
twins carry public tokens. A GM's retry of the latest narration (`POST .../narrations/<seq>/
retry`, issue 18) undoes that turn with compensating GM patches: those that touch hidden
things stay GM-only like the turn's own.

Issue 19 adds the table's whispers (another player's whisper to the GM; its public twin a
whisper to the reader) and the DM's private narration to another player (its twin: one to
the reader), and three read paths: the reader's recap ("Previously on…", from the
summaries, which are made every few events here, and the events after them), their
`journal.md`, and the characters API.

Issue 20 adds the GM hiding things from the room (`POST .../gm/values` on
`/entities/<id>/hidden`, as the room's "Hide" button does): the public entity the players
had seen, a hidden one, or a made-up id, after which the GM writes a secret into the
entity. The players are told that an entity they knew left their view (a public
`entity_withdrawn` {entity_id}), and nothing else: not the secret written after, not the
id of an entity they never saw.

Issue 23 adds the DM's speech while it narrates: the reader's socket during a DM turn
whose streamed answer says secret things only where they belong (a private narration to
the other player, a hidden creature): every `narration.audio` it hears (and every delta)
is of the public narration, and each one's audio is served to the reader.

`PLAYER_READ_PATHS` is the registry of what a player can read. Every later issue that
adds a path players can read adds that path to it: one function `(world) -> list of
texts` that reads it as the player through its public seam (HTTP, WebSocket, page).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import selectors
from campaigns.models import Event
from campaigns.services import campaign_create, campaign_join
from campaigns.tools import turn_commit
from campaigns.whispers import whisper_send
from memory.npc_memory import npc_memories_extract
from memory.summaries import summaries_update
from tests.openai_server import Answer, OpenAIServer
from tests.reads import api_as
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "test-internal-secret-0123456789abcdef-xyz"
MAX_EXAMPLES = 50
# The slow readers (a fork, a socket) run on fewer examples, in a test of their own.
SLOW_EXAMPLES = 20


def _secret_token() -> str:
    return "ZQX" + secrets.token_hex(6)


def _public_token() -> str:
    return "PUB" + secrets.token_hex(6)


@dataclass
class World:
    """One campaign as the example built it, and what must stay hidden in it."""

    campaign: Any
    gm: Any
    player: Any
    hidden_ids: list[str]
    public_id: str
    character_id: str
    secrets: set[str] = field(default_factory=set)
    # Another player at the table, whose private rolls the reader must never see.
    other: Any = None
    # The secrets that other player may read (their own private rolls and whispers, and
    # the DM's private narrations to them).
    others: set[str] = field(default_factory=set)


# --- The player read paths ---------------------------------------------------------------


def _json(response: Any) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    return response.content.decode()


def read_events(world: World) -> list[str]:
    """GET .../events, whole and in pages, from several after_seq."""
    client = api_as(world.player)
    url = f"/api/campaigns/{world.campaign.id}/events"
    texts = [_json(client.get(url)), _json(client.get(url + "?limit=1000"))]
    seq = 0
    while True:  # pages of 3 to the end
        response = client.get(f"{url}?after_seq={seq}&limit=3")
        texts.append(_json(response))
        page = response.json()
        if not page:
            break
        seq = page[-1]["seq"]
    last = selectors.snapshot_get(campaign_id=world.campaign.id).version
    for after in (1, last // 2, max(last - 4, 0)):
        texts.append(_json(client.get(f"{url}?after_seq={after}&limit=1")))
    return texts


def read_snapshot(world: World) -> list[str]:
    return [_json(api_as(world.player).get(f"/api/campaigns/{world.campaign.id}/snapshot"))]


def read_campaign(world: World) -> list[str]:
    client = api_as(world.player)
    return [
        _json(client.get(f"/api/campaigns/{world.campaign.id}/")),
        _json(client.get("/api/campaigns/")),
    ]


def read_pages(world: World) -> list[str]:
    """The room page, the campaign list and the dice page, as the logged-in player."""
    client = Client()
    client.force_login(world.player)
    return [
        _json(client.get(path))
        for path in (
            f"/campaigns/{world.campaign.id}/",
            "/campaigns/",
            f"/campaigns/{world.campaign.id}/dice",
        )
    ]


def read_npc_memories(world: World) -> list[str]:
    npc_memories_extract(campaign_id=world.campaign.id)
    client = api_as(world.player)
    url = f"/api/campaigns/{world.campaign.id}/npc_memories"
    texts = [_json(client.get(url))]
    for entity_id in [*world.hidden_ids, world.public_id]:
        texts.append(_json(client.get(f"{url}?npc_id={entity_id}")))
    return texts


def read_retrieval(world: World) -> list[str]:
    """rag_search for the secrets themselves, and the documents list."""
    client = api_as(world.player)
    base = f"/api/campaigns/{world.campaign.id}"
    query = " ".join(sorted(world.secrets))[:400] or "ghoul"
    found = client.get(f"{base}/rag_search", {"q": query})
    _json(found)
    # The answer repeats the query (the secrets we asked for): only the results count.
    return [json.dumps(found.json()["results"]), _json(client.get(f"{base}/documents"))]


def read_gm_only_refusals(world: World) -> list[str]:
    """What a player gets back from the GM's reads (usage, budget): a refusal, nothing more."""
    client = api_as(world.player)
    texts = []
    for path in ("usage", "budget"):
        response = client.get(f"/api/campaigns/{world.campaign.id}/{path}")
        assert response.status_code == 403, (path, response.content[:300])
        texts.append(response.content.decode())
    return texts


def read_fork(world: World) -> list[str]:
    """A fork the GM makes at the last seq has the same members: the player reads it."""
    last = selectors.snapshot_get(campaign_id=world.campaign.id).version
    response = api_as(world.gm).post(
        f"/api/campaigns/{world.campaign.id}/fork", {"at_seq": last}, format="json"
    )
    assert response.status_code == 201, response.content[:300]
    fork = selectors.campaign_get(campaign_id=response.json()["id"])
    forked = World(
        fork, world.gm, world.player, world.hidden_ids, world.public_id, world.character_id
    )
    return [*read_events(forked), *read_snapshot(forked)]


def read_socket_catch_up(world: World) -> list[str]:
    """client.hello over the WebSocket, from 0 and from the middle of the log."""

    async def hello(last_seq: int) -> str:
        room = Room(world.campaign.id, world.player)
        connected, _ = await room.open()
        assert connected
        try:
            return json.dumps(await room.hello(last_seq))
        finally:
            await room.close()

    last = selectors.snapshot_get(campaign_id=world.campaign.id).version
    # On a thread of its own: asgiref remembers the calling loop on the thread that runs
    # the consumer's database calls, and this test's later broadcasts must not find a
    # stopped loop there.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return [pool.submit(asyncio.run, hello(seq)).result() for seq in (0, last // 2)]


_piper_warm: list[bool] = []


def read_speech_stream(world: World) -> list[str]:
    """The reader's socket while the DM narrates (issue 23): the reader acts, the model
    streams an answer whose narration is public and whose `narrate_private` (to the other
    player) and hidden creature are secret; what the socket gets (`narration.audio`,
    deltas, events) and the audio each `narration.audio` names, as the reader."""
    from llm.openai_adapter import output_shapes_forget
    from rpgai.tasks import wait_idle

    private, hidden = _secret_token(), _secret_token()
    world.secrets |= {private, hidden}
    world.others.add(private)  # the other player's own private narration
    answer = {
        "narration": f"The wind howls at the shutters. {_public_token()} waits by the door.",
        "tool_calls": [
            {"name": "narrate_private", "args": {"to": str(world.other.id), "text": private}},
            {
                "name": "create_entity",
                "args": {"kind": "creature", "name": hidden, "data": {}, "hidden": True},
            },
        ],
        "options": ["Go on"],
    }
    speech = importlib.util.find_spec("piper") is not None
    if speech and not _piper_warm:
        from voice.engines import engine_get

        engine_get("piper").warm_up()  # once, as a voice worker does when it starts
        _piper_warm.append(True)

    async def play() -> list[dict[str, Any]]:
        room = Room(world.campaign.id, world.player)
        connected, _ = await room.open()
        assert connected
        try:
            await room.hello()
            await room.send(
                {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I wait"}
            )
            seen = await room.recv_until(
                lambda m: (
                    m["type"] == "event" and m["event"]["type"] in ("dm_narration", "turn_failed")
                ),
                timeout=30,
            )
            await wait_idle(timeout=30)
            while not await room.comm.receive_nothing(timeout=0.3):
                seen.append(await room.recv())
            return seen
        finally:
            await room.close()

    media = tempfile.mkdtemp(prefix="rpgai-secrecy-")
    try:
        with OpenAIServer() as server:
            output_shapes_forget(base_url=server.url, model="test-model")
            # Streamed over about 2.5 s: the first sentence is spoken before it ends.
            server.script(Answer(answer, chunk_chars=8, delay=0.05))
            with override_settings(
                DM_MODEL_PROVIDER="openai",
                DM_MODEL="test-model",
                OPENAI_BASE_URL=server.url,
                OPENAI_API_KEY="sk-test",
                TTS_PROVIDER="piper" if speech else "none",
                VOICE_STREAM=True,
                VOICE_PRELOAD=False,
                MEDIA_ROOT=media,
            ):
                with ThreadPoolExecutor(max_workers=1) as pool:  # see read_socket_catch_up
                    seen = pool.submit(asyncio.run, play()).result()
                heard = [m for m in seen if m["type"] == "narration.audio"]
                if speech:
                    assert heard, "the narration was spoken as it streamed"
                client = api_as(world.player)
                for message in heard:
                    audio = client.get(message["url"])
                    assert audio.status_code == 200, (audio.status_code, message)
                    assert audio.content[:4] == b"RIFF"
    finally:
        shutil.rmtree(media, ignore_errors=True)
    return [json.dumps(seen)]


def read_recap(world: World) -> list[str]:
    """GET .../recap: since the reader last left (never: from the start), from 0, and
    from the middle of the log; after the summaries due are made."""
    summaries_update(campaign_id=world.campaign.id)
    client = api_as(world.player)
    url = f"/api/campaigns/{world.campaign.id}/recap"
    last = selectors.snapshot_get(campaign_id=world.campaign.id).version
    return [
        _json(client.get(url)),
        _json(client.get(url, {"since_seq": 0})),
        _json(client.get(url, {"since_seq": last // 2})),
    ]


def read_journal(world: World) -> list[str]:
    """GET .../journal.md: the whole story as the reader may read it."""
    summaries_update(campaign_id=world.campaign.id)
    response = api_as(world.player).get(f"/api/campaigns/{world.campaign.id}/journal.md")
    assert response.status_code == 200, response.status_code
    return [b"".join(response.streaming_content).decode()]


def read_characters(world: World) -> list[str]:
    return [_json(api_as(world.player).get(f"/api/campaigns/{world.campaign.id}/characters"))]


PLAYER_READ_PATHS: list[Callable[[World], list[str]]] = [
    read_events,
    read_snapshot,
    read_campaign,
    read_pages,
    read_npc_memories,
    read_retrieval,
    read_gm_only_refusals,
    read_fork,
    read_socket_catch_up,
    read_recap,
    read_journal,
    read_characters,
    read_speech_stream,
]
# Readers that cost a fork, a WebSocket or a DM turn per example: on SLOW_EXAMPLES only.
SLOW_READ_PATHS = frozenset({read_fork, read_socket_catch_up, read_speech_stream})


# --- Building a world ---------------------------------------------------------------------


def _execute(world: World, calls: list[dict[str, Any]], *, via_http: bool) -> None:
    narration = f"The torches gutter. {_public_token()}"
    if via_http:
        response = Client().post(
            "/internal/tools/execute",
            json.dumps(
                {
                    "campaign_id": str(world.campaign.id),
                    "narration": narration,
                    "options": ["Go on"],
                    "tool_calls": calls,
                }
            ),
            content_type="application/json",
            HTTP_X_INTERNAL_SECRET=SECRET,
        )
        assert response.status_code == 201, response.content[:500]
    else:
        turn_commit(
            campaign_id=world.campaign.id,
            turn_id=str(uuid.uuid4()),
            narration=narration,
            options=["Go on"],
            tool_calls=calls,
            through_seq=0,
        )


def _entities(world: World) -> dict[str, Any]:
    return selectors.snapshot_get(campaign_id=world.campaign.id).state["entities"]


def _world(hidden_count: int, flag_count: int) -> World:
    users = get_user_model().objects
    gm = users.create_user(username=f"gm-{uuid.uuid4().hex[:10]}", password="pw-Secret-123")
    player = users.create_user(username=f"pl-{uuid.uuid4().hex[:10]}", password="pw-Secret-123")
    campaign = campaign_create(name="The Sunken Crown", edition="5e", creator=gm)
    campaign_join(invite_code=campaign.invite_code, user=player, display_name="Alice")
    other = users.create_user(username=f"ot-{uuid.uuid4().hex[:10]}", password="pw-Secret-123")
    campaign_join(invite_code=campaign.invite_code, user=other, display_name="Bob")
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    character_id = next(
        cid for cid, c in state["characters"].items() if c["owner_user_id"] == str(player.id)
    )
    world = World(campaign, gm, player, [], "", character_id, other=other)
    calls = [
        {
            "name": "create_entity",
            "args": {"kind": "npc", "name": "Innkeeper Mott", "data": {"mood": _public_token()}},
        }
    ]
    for _ in range(hidden_count):
        name, value, nested = _secret_token(), _secret_token(), _secret_token()
        world.secrets |= {name, value, nested}
        calls.append(
            {
                "name": "create_entity",
                "args": {
                    "kind": "creature",
                    "name": name,
                    "data": {"lair": value, "deep": {"list": [nested, 7]}},
                    "hidden": True,
                },
            }
        )
    _execute(world, calls, via_http=True)
    for entity_id, entity in _entities(world).items():
        if entity.get("hidden"):
            world.hidden_ids.append(entity_id)
        else:
            world.public_id = entity_id
    gm_client = api_as(gm)
    for _ in range(flag_count):
        name, value = _secret_token(), _secret_token()
        world.secrets |= {name, value}
        response = gm_client.post(
            f"/api/campaigns/{campaign.id}/gm/values",
            {"path": f"/hidden/flags/{name}", "value": {"note": value}},
            format="json",
        )
        assert response.status_code == 201, response.content[:300]
    return world


# --- Random calls ---------------------------------------------------------------------------

# A pointer is drawn as a kind, then made concrete against the world (`_pointer`).
POINTER_KINDS = (
    "hidden_data",
    "hidden_data_new",
    "hidden_deep",
    "hidden_name",
    "hidden_whole",
    "unknown_entity",
    "unknown_entity_whole",
    "public_data",
    "public_name",
    "hidden_flag",
    "hidden_flag_new",
    "hidden_flags",
    "hidden_root",
    "flags_new",
    "flags_deep",
    "scene",
    "hp",
    "inventory_end",
    "inventory_far",
    "entities_root",
    "root",
    "no_slash",
    "tilde",
)
# What is drawn: the made-up id (issue 16's finding) and plain public paths more often.
POINTER_DRAWS = (*POINTER_KINDS, "unknown_entity", "unknown_entity", "public_data", "flags_new")
GUESSED_KINDS = ("unknown_entity", "unknown_entity_whole", "hidden_data", "hidden_whole")
# Pointers into hidden state: only there may a patch write a new secret value.
HIDDEN_KINDS = frozenset(
    {
        "hidden_data",
        "hidden_data_new",
        "hidden_deep",
        "hidden_name",
        "hidden_whole",
        "hidden_flag",
        "hidden_flag_new",
        "hidden_flags",
        "hidden_root",
    }
)


def _pointer(world: World, kind: str, pick: int) -> str:
    hidden = (
        world.hidden_ids[pick % len(world.hidden_ids)] if world.hidden_ids else str(uuid.uuid4())
    )
    flags = sorted(
        (selectors.snapshot_get(campaign_id=world.campaign.id).state.get("hidden") or {}).get(
            "flags"
        )
        or {"none": 0}
    )
    if kind == "hidden_flag_new":  # a new hidden flag's name is a secret too
        name = _secret_token()
        world.secrets.add(name)
        return f"/hidden/flags/{name}"
    return {
        "hidden_data": f"/entities/{hidden}/data/lair",
        "hidden_data_new": f"/entities/{hidden}/data/k{pick}",
        "hidden_deep": f"/entities/{hidden}/data/deep/list/{pick % 3}",
        "hidden_name": f"/entities/{hidden}/name",
        "hidden_whole": f"/entities/{hidden}",
        "unknown_entity": f"/entities/{uuid.uuid4()}/data/mood",
        "unknown_entity_whole": f"/entities/{uuid.uuid4()}",
        "public_data": f"/entities/{world.public_id}/data/mood",
        "public_name": f"/entities/{world.public_id}/name",
        "hidden_flag": f"/hidden/flags/{flags[pick % len(flags)]}",
        "hidden_flags": "/hidden/flags",
        "hidden_root": "/hidden",
        "flags_new": f"/flags/f{pick}",
        "flags_deep": f"/flags/f{pick}/deeper/still",
        "scene": "/scene/location",
        "hp": f"/characters/{world.character_id}/hp",
        "inventory_end": f"/characters/{world.character_id}/inventory/-",
        "inventory_far": f"/characters/{world.character_id}/inventory/{pick}",
        "entities_root": "/entities",
        "root": "",
        "no_slash": "entities/x",
        "tilde": f"/entities/{hidden}/data/~2",
    }[kind]


@st.composite
def operations(draw: Any) -> dict[str, Any]:
    op = draw(st.sampled_from(("add", "remove", "replace", "move", "copy", "test")))
    operation: dict[str, Any] = {
        "op": op,
        "path": draw(st.sampled_from(POINTER_DRAWS)),
        "pick": draw(st.integers(0, 5)),
    }
    if op in ("move", "copy"):
        operation["from"] = draw(st.sampled_from(POINTER_DRAWS))
    if op in ("add", "replace", "test") or draw(st.booleans()):
        operation["value"] = draw(
            st.sampled_from(("token", "int", "object", "list", "secret", "none"))
        )
    return operation


@st.composite
def tool_calls(draw: Any) -> dict[str, Any]:
    name = draw(
        st.sampled_from(
            (
                "apply_state_patch",
                "apply_state_patch",
                "guess",
                "guess",
                "roll",
                "create_entity",
                "narrate_private",
                "trigger_audio",
                "unknown",
            )
        )
    )
    if name == "apply_state_patch":
        return {"name": name, "ops": draw(st.lists(operations(), min_size=1, max_size=3))}
    if name == "guess":  # one operation at an id the model made up, or a hidden one
        operation = draw(operations())
        operation["path"] = draw(st.sampled_from(GUESSED_KINDS))
        return {"name": "apply_state_patch", "ops": [operation]}
    return {"name": name, "variant": draw(st.integers(0, 3))}


def _value(world: World, kind: str, path_kind: str) -> Any:
    if kind == "secret" and path_kind in HIDDEN_KINDS:
        token = _secret_token()
        world.secrets.add(token)
        return {"note": token}
    return {
        "token": _public_token(),
        "int": 3,
        "object": {"a": _public_token(), "b": [1, {"c": _public_token()}]},
        "list": [_public_token()],
        "secret": _public_token(),  # only hidden paths get new secrets
        "none": None,
    }[kind]


def _concrete(world: World, call: dict[str, Any]) -> dict[str, Any]:
    name = call["name"]
    if name == "apply_state_patch":
        patches = []
        for drawn in call["ops"]:
            operation = {"op": drawn["op"], "path": _pointer(world, drawn["path"], drawn["pick"])}
            if "from" in drawn:
                operation["from"] = _pointer(world, drawn["from"], drawn["pick"] + 1)
            if "value" in drawn:
                operation["value"] = _value(world, drawn["value"], drawn["path"])
            patches.append(operation)
        return {"name": name, "args": {"reason": _public_token(), "patches": patches}}
    variant = call["variant"]
    if name == "roll":
        formula = ("1d20+2", "2d6", "nonsense(", "1d20")[variant]
        args: dict[str, Any] = {"formula": formula, "reason": _public_token()}
        if variant == 3:
            args["private_to"] = str(world.player.id)
        return {"name": name, "args": args}
    if name == "create_entity":
        if variant == 0:  # a hidden one: new secrets
            secret_name, secret_value = _secret_token(), _secret_token()
            world.secrets |= {secret_name, secret_value}
            return {
                "name": name,
                "args": {
                    "kind": "npc",
                    "name": secret_name,
                    "data": {"x": secret_value},
                    "hidden": True,
                },
            }
        if variant == 1:  # the same kind and name as a hidden one: refused
            entities = _entities(world)
            hidden = [e for e in entities.values() if e.get("hidden")]
            if hidden:
                return {
                    "name": name,
                    "args": {"kind": hidden[0]["kind"], "name": hidden[0]["name"]},
                }
        if variant == 2:
            return {"name": name, "args": {"kind": "dragon-god", "name": _public_token()}}
        return {"name": name, "args": {"kind": "item", "name": _public_token(), "data": {}}}
    if name == "narrate_private":
        to = str(world.player.id) if variant < 2 else str(uuid.uuid4())
        return {"name": name, "args": {"to": to, "text": _public_token()}}
    if name == "trigger_audio":
        cue = ("thunder", _public_token(), "rain", "")[variant]
        return {"name": name, "args": {"cue": cue, "volume": (0.5, 2, 1, "x")[variant]}}
    return {"name": _public_token(), "args": {"x": variant}}


def _gm_revert(world: World, pick: int) -> None:
    """The GM undoes a random event (refusals are the GM's own 4xx: not checked here)."""
    last = selectors.snapshot_get(campaign_id=world.campaign.id).version
    api_as(world.gm).post(
        f"/api/campaigns/{world.campaign.id}/gm/reverts",
        {"seq": 1 + pick % last},
        format="json",
    )


def _gm_retry(world: World) -> None:
    """The GM asks the DM for another answer to the latest narration: its turn's changes
    are undone by compensating patches (a refusal, 409, is the GM's own: not checked)."""
    narration = (
        Event.objects.filter(campaign_id=world.campaign.id, type="dm_narration")
        .order_by("-seq")
        .first()
    )
    if narration is None:
        return
    response = api_as(world.gm).post(
        f"/api/campaigns/{world.campaign.id}/narrations/{narration.seq}/retry"
    )
    assert response.status_code in (202, 409), response.content[:300]


# What the rest of the table does beside the DM's turns: (kind, variant).
TABLE_MOVES = ("other_roll", "gm_roll", "direction", "whisper", "private_narration")


def _table_move(world: World, kind: str, secret: bool) -> None:
    """Another player's or the GM's roll, a GM direction, another player's whisper, or the
    DM's private narration: with a secret token when it is private / secret (the reader
    must never see it), else a public one (a whisper and a private narration to the
    reader themselves)."""
    token = _secret_token() if secret else _public_token()
    if secret:
        world.secrets.add(token)
        if kind in ("other_roll", "whisper", "private_narration"):
            world.others.add(token)
    base = f"/api/campaigns/{world.campaign.id}"
    if kind == "whisper":
        membership = selectors.membership_get(campaign_id=world.campaign.id, user_id=world.other.id)
        whisper_send(membership=membership, to="gm" if secret else str(world.player.id), text=token)
        return
    if kind == "private_narration":
        to = world.other if secret else world.player
        turn_commit(
            campaign_id=world.campaign.id,
            turn_id=str(uuid.uuid4()),
            narration=f"The wind turns. {_public_token()}",
            options=["Go on"],
            tool_calls=[{"name": "narrate_private", "args": {"to": str(to.id), "text": token}}],
            through_seq=0,
        )
        return
    if kind == "direction":
        response = api_as(world.gm).post(
            f"{base}/directions",
            {"text": f"The bell tolls. {token}", "secret": secret, "now": len(token) % 2 == 0},
            format="json",
        )
    else:
        roller = world.other if kind == "other_roll" else world.gm
        response = api_as(roller).post(
            f"{base}/rolls",
            {"formula": "1d20+1", "reason": token, "dc": 12, "private": secret},
            format="json",
        )
    assert response.status_code == 201, response.content[:300]


# What the GM hides from the room (issue 20): the entity the players know, a hidden one, or
# an id that is no entity's.
HIDE_TARGETS = ("public", "hidden", "unknown")


def _gm_hide(world: World, which: str) -> None:
    """The GM hides an entity, as the room's "Hide" button does, then writes a secret into
    it (GM-only from then on). A refusal (an unknown id, an entity a turn removed) is the
    GM's own 4xx: then nothing secret is written."""
    entity_id = {
        "public": world.public_id,
        "hidden": world.hidden_ids[0] if world.hidden_ids else str(uuid.uuid4()),
        "unknown": str(uuid.uuid4()),
    }[which]
    url = f"/api/campaigns/{world.campaign.id}/gm/values"
    gm = api_as(world.gm)
    gm.post(url, {"path": f"/entities/{entity_id}/hidden", "value": True}, format="json")
    entity = _entities(world).get(entity_id)
    if not isinstance(entity, dict) or entity.get("hidden") is not True:
        return
    token = _secret_token()
    response = gm.post(
        url, {"path": f"/entities/{entity_id}/data/hide_note", "value": token}, format="json"
    )
    if response.status_code == 201:
        world.secrets.add(token)


def _withdrawn_ids(world: World) -> set[str]:
    events = Event.objects.filter(campaign_id=world.campaign.id, type="entity_withdrawn")
    return {e.payload["entity_id"] for e in events}


def _leaks(world: World, readers: list[Callable[[World], list[str]]]) -> list[tuple[str, str]]:
    found = []
    for reader in readers:
        for text in reader(world):
            for secret in world.secrets:
                if secret in text:
                    at = text.index(secret)
                    found.append((reader.__name__, text[max(0, at - 300) : at + 100]))
    return found


@pytest.fixture(autouse=True)
def _internal_secret(settings: Any) -> None:
    settings.INTERNAL_TOOLS_SECRET = SECRET
    settings.RATELIMIT_ENABLE = False
    # Summaries every few events: the recap and the journal draw on them.
    settings.MEMORY_SUMMARY_CHUNK_TOKENS = 40
    settings.MEMORY_SUMMARY_KEEP_TOKENS = 20


WORLDS = st.fixed_dictionaries(
    {
        "hidden_count": st.integers(1, 2),
        "flag_count": st.integers(0, 2),
        "turns": st.lists(
            st.tuples(st.booleans(), st.lists(tool_calls(), min_size=1, max_size=5)),
            min_size=1,
            max_size=3,
        ),
        "reverts": st.lists(st.integers(0, 50), max_size=2),
        "retry": st.booleans(),
        "table": st.lists(st.tuples(st.sampled_from(TABLE_MOVES), st.booleans()), max_size=3),
        "hides": st.lists(st.sampled_from(HIDE_TARGETS), max_size=2),
    }
)


def _played(drawn: dict[str, Any]) -> World:
    """A world with hidden things, after the drawn DM turns and GM reverts."""
    world = _world(drawn["hidden_count"], drawn["flag_count"])
    for via_http, calls in drawn["turns"]:
        _execute(world, [_concrete(world, call) for call in calls], via_http=via_http)
    if drawn["retry"]:
        _gm_retry(world)
    for kind, secret in drawn["table"]:
        _table_move(world, kind, secret)
    for pick in drawn["reverts"]:
        _gm_revert(world, pick)
    for which in drawn["hides"]:
        _gm_hide(world, which)
    return world


SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=MAX_EXAMPLES, **SETTINGS)
@given(drawn=WORLDS)
def test_no_player_read_path_shows_hidden_state(drawn: dict[str, Any]) -> None:
    world = _played(drawn)
    readers = [r for r in PLAYER_READ_PATHS if r not in SLOW_READ_PATHS]
    assert _leaks(world, readers) == []
    # Only an entity the players knew is ever withdrawn from their view.
    assert _withdrawn_ids(world) <= {world.public_id}


@settings(max_examples=SLOW_EXAMPLES, **SETTINGS)
@given(drawn=WORLDS)
def test_no_slow_player_read_path_shows_hidden_state(drawn: dict[str, Any]) -> None:
    world = _played(drawn)
    assert _leaks(world, [r for r in PLAYER_READ_PATHS if r in SLOW_READ_PATHS]) == []


def test_a_rejected_patch_into_an_unknown_id_shows_the_players_nothing() -> None:
    """The finding's repro: `add /entities/<unknown uuid>/data/mood` once printed the whole
    of /entities, hidden ones included, in a state_patch_rejected seen by everyone."""
    world = _world(1, 1)
    _execute(
        world,
        [
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": "the mood shifts",
                    "patches": [
                        {"op": "add", "path": f"/entities/{uuid.uuid4()}/data/mood", "value": 1}
                    ],
                },
            }
        ],
        via_http=True,
    )
    assert _leaks(world, PLAYER_READ_PATHS) == []
    gm_events = api_as(world.gm).get(f"/api/campaigns/{world.campaign.id}/events").json()
    [rejected] = [e for e in gm_events if e["type"] == "state_patch_rejected"]
    assert rejected["visibility"] == {"kind": "gm"}
    assert rejected["payload"]["error"].endswith("the path does not exist")
    assert not any(secret in json.dumps(gm_events[-3:]) for secret in world.secrets)


def test_private_rolls_and_secret_directions_reach_no_other_player() -> None:
    """Every secret move of the rest of the table at once, on every read path: another
    player's and the GM's private rolls, the GM's secret direction, another player's
    whisper to the GM and the DM's private narration to them. Their public twins reach
    the reader (the check is not vacuous), in the journal too."""
    world = _world(1, 0)
    public = _public_token()
    response = api_as(world.gm).post(
        f"/api/campaigns/{world.campaign.id}/directions", {"text": public}, format="json"
    )
    assert response.status_code == 201
    for kind in TABLE_MOVES:
        _table_move(world, kind, secret=True)
    for kind in ("whisper", "private_narration"):
        before = set(world.secrets)
        _table_move(world, kind, secret=False)
        assert world.secrets == before
    whispered = Event.objects.filter(campaign_id=world.campaign.id, type="whisper")
    twins = {e.payload["text"] for e in whispered if e.payload["text"].startswith("PUB")}
    assert len(twins) == 2
    assert _leaks(world, PLAYER_READ_PATHS) == []
    assert public in " ".join(read_events(world))
    journal = " ".join(read_journal(world))
    assert public in journal and all(twin in journal for twin in twins)
    # The roller (whisperer, the one told) and the GM do see them.
    mine = api_as(world.other).get(f"/api/campaigns/{world.campaign.id}/events?limit=1000")
    gm_view = api_as(world.gm).get(f"/api/campaigns/{world.campaign.id}/events?limit=1000")
    assert {token for token in world.secrets if token in mine.content.decode()} == world.others
    # Their roll, whisper and private narration, and the private narration of the DM turn
    # read_speech_stream plays.
    assert len(world.others) == 4
    assert all(token in gm_view.content.decode() for token in world.secrets)


def test_a_retried_turn_that_touched_hidden_things_is_undone_out_of_the_players_sight() -> None:
    """A DM turn makes a hidden creature, writes a hidden flag and takes the player's HP;
    the GM retries it. The HP comes back where the player sees it, and the undoing of the
    hidden things (their names and values in the compensating patches) reaches the GMs
    only, on every read path."""
    world = _world(1, 1)
    hidden_name, hidden_value, flag, flag_value = (_secret_token() for _ in range(4))
    world.secrets |= {hidden_name, hidden_value, flag, flag_value}
    hp = selectors.snapshot_get(campaign_id=world.campaign.id).state["characters"][
        world.character_id
    ]["hp"]
    _execute(
        world,
        [
            {
                "name": "create_entity",
                "args": {
                    "kind": "creature",
                    "name": hidden_name,
                    "data": {"lair": hidden_value},
                    "hidden": True,
                },
            },
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": _public_token(),
                    "patches": [
                        {"op": "add", "path": f"/hidden/flags/{flag}", "value": flag_value}
                    ],
                },
            },
            {
                "name": "apply_state_patch",
                "args": {
                    "reason": _public_token(),
                    "patches": [
                        {
                            "op": "replace",
                            "path": f"/characters/{world.character_id}/hp",
                            "value": hp - 3,
                        }
                    ],
                },
            },
        ],
        via_http=True,
    )
    narration = Event.objects.filter(campaign_id=world.campaign.id, type="dm_narration").last()
    response = api_as(world.gm).post(
        f"/api/campaigns/{world.campaign.id}/narrations/{narration.seq}/retry"
    )
    assert response.status_code == 202, response.content[:300]
    retracted, *compensation = response.json()["events"]
    assert retracted["visibility"] == {"kind": "all"}
    assert compensation, "the turn's changes were undone"
    undone = json.dumps(compensation)
    assert hidden_name in undone or hidden_value in undone or flag in undone
    assert all(
        e["visibility"] == {"kind": "gm"}
        for e in compensation
        if any(token in json.dumps(e) for token in world.secrets)
    )
    state = selectors.snapshot_get(campaign_id=world.campaign.id).state
    assert state["characters"][world.character_id]["hp"] == hp
    assert flag not in (state.get("hidden") or {}).get("flags", {})
    assert _leaks(world, PLAYER_READ_PATHS) == []
    # The player reads their HP restored.
    player_state = api_as(world.player).get(f"/api/campaigns/{world.campaign.id}/snapshot")
    assert player_state.json()["state"]["characters"][world.character_id]["hp"] == hp


def test_hiding_the_entity_the_players_know_withdraws_it_and_keeps_what_follows_secret() -> None:
    """The GM hides the entity the players had met, then a hidden one and a made-up id, and
    writes secrets into what is hidden: every player read path has the withdrawal (the id
    they knew) and none has a secret, nor the hidden entity's id."""
    world = _world(1, 0)
    known = world.public_id
    for which in HIDE_TARGETS:
        _gm_hide(world, which)
    assert len(world.secrets) == 5  # the hidden one's name, data and deep value, two notes
    assert _leaks(world, PLAYER_READ_PATHS) == []
    assert _withdrawn_ids(world) == {known}
    events = " ".join(read_events(world))
    assert '"entity_withdrawn"' in events and known in events
    assert world.hidden_ids[0] not in events
    assert known not in " ".join(read_snapshot(world))
