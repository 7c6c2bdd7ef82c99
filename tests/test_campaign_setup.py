"""Campaign setup (CONTRACTS §7): premise, tone, turn mode, lines and veils on creation,
every member sees them; the DM narrates an opening scene by itself, exactly once; the GM
changes the setup or archives the campaign (`PATCH /api/campaigns/<id>/`); an archived
campaign is read-only and leaves the list; lines and veils reach the DM's prompt as rules."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from campaigns import services
from campaigns.events import FoldedEvent, fold_all
from campaigns.models import Campaign, Event, Snapshot
from campaigns.services import campaign_create, snapshots_rebuild
from orchestrator.receivers import turns_deferred
from orchestrator.services import aturn_run, turn_run, turns_run_pending
from orchestrator.tasks import run_turn
from tests.processes import celery_worker
from tests.reads import api_as, events_seen_by, snapshot_seen_by
from tests.ws import Room

pytestmark = pytest.mark.django_db(transaction=True)

SETUP = {
    "premise": "A lighthouse keeper vanished on the night the black ship came to Gull Rock.",
    "tone": "eerie coastal mystery",
    "turn_mode": "rounds",
    "lines": ["harm to animals", "  spiders  "],
    "veils": ["drowning"],
}


@pytest.fixture
def alice(make_user):
    """A user who joins the campaign the test makes (this module's campaigns are its own)."""
    return make_user("alice")


def narrations(campaign_id: Any) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign_id, type="dm_narration").order_by("seq"))


def create_over_api(user: Any, **fields: Any) -> dict[str, Any]:
    response = api_as(user).post("/api/campaigns/", {"name": "Gull Rock", **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def no_drift(campaign_id: Any) -> bool:
    _, drifts = snapshots_rebuild(campaign_id=campaign_id, fix=False)
    return drifts == []


# --- Creation and the opening scene -----------------------------------------------------------


def test_create_with_setup_opens_with_one_dm_narration_and_no_action(gm, make_user):
    created = create_over_api(gm, **SETUP)
    assert {k: created[k] for k in SETUP} == {
        **SETUP,
        "lines": ["harm to animals", "spiders"],  # each one trimmed
    }
    campaign_id = created["id"]
    assert Campaign.objects.get(id=campaign_id).turn_mode == "rounds"

    events = list(Event.objects.filter(campaign_id=campaign_id).order_by("seq"))
    first = events[0]
    assert first.type == "campaign_created"
    assert first.payload["premise"] == SETUP["premise"]
    assert first.payload["lines"] == ["harm to animals", "spiders"]
    assert first.payload["veils"] == ["drowning"] and first.payload["opening"] is True
    # The DM narrated the opening by itself, right after the creation: one narration,
    # no player action before it, answering the campaign's creation.
    [opening] = narrations(campaign_id)
    assert not any(e.type == "player_action" for e in events if e.seq < opening.seq)
    assert opening.payload["through_seq"] == first.seq
    assert opening.actor_kind == "dm" and not opening.payload["fallback"]
    # The fake DM writes it from the premise and the tone, not a canned line.
    assert SETUP["premise"] in opening.payload["text"]
    assert "eerie coastal mystery" in opening.payload["text"]
    assert "campaign begins" not in opening.payload["text"]

    # A redelivered turn task, or another turn asked for, narrates nothing more.
    assert run_turn.run(campaign_id=campaign_id) == 0
    assert run_turn.run(campaign_id=campaign_id) == 0
    assert turn_run(campaign_id=campaign_id) is None
    assert [n.seq for n in narrations(campaign_id)] == [opening.seq]
    assert no_drift(campaign_id)

    # Every member sees the setup: the snapshot's `campaign`, and the campaign's detail.
    player = make_user("pia")
    code = Campaign.objects.get(id=campaign_id).invite_code
    joined = api_as(player).post(
        f"/api/campaigns/{campaign_id}/join", {"invite_code": code}, format="json"
    )
    assert joined.status_code == 200
    campaign_state = snapshot_seen_by(Campaign(id=campaign_id), player)["state"]["campaign"]
    assert campaign_state["premise"] == SETUP["premise"]
    assert campaign_state["tone"] == SETUP["tone"]
    assert campaign_state["lines"] == ["harm to animals", "spiders"]
    assert campaign_state["veils"] == ["drowning"]
    detail = api_as(player).get(f"/api/campaigns/{campaign_id}/").json()
    assert detail["premise"] == SETUP["premise"] and detail["veils"] == ["drowning"]
    assert "invite_code" not in detail
    # The opening is the player's to read too.
    assert opening.seq in {e["seq"] for e in events_seen_by(Campaign(id=campaign_id), player)}


def test_the_opening_is_narrated_once_when_the_turn_task_comes_twice(gm):
    with turns_deferred():  # the turn is run by hand below: twice, as a redelivery would
        campaign = campaign_create(name="Gull Rock", creator=gm, opening=True, **SETUP)
    assert narrations(campaign.id) == []
    assert run_turn.run(campaign_id=str(campaign.id)) == 1
    assert run_turn.run(campaign_id=str(campaign.id)) == 0
    assert len(narrations(campaign.id)) == 1


def test_the_opening_is_narrated_once_when_two_turns_race(gm):
    with turns_deferred():
        campaign = campaign_create(name="Gull Rock", creator=gm, opening=True, **SETUP)

    async def race() -> list[Any]:
        # Two turns at once, past the lock (as two workers that each think they hold it):
        # the log's own check at commit lets one narration in.
        return await asyncio.gather(
            aturn_run(campaign_id=campaign.id), aturn_run(campaign_id=campaign.id)
        )

    outcomes = async_to_sync(race)()
    assert sum(outcome is not None for outcome in outcomes) == 1
    [opening] = narrations(campaign.id)
    assert opening.payload["through_seq"] == 1
    assert turns_run_pending(campaign_id=campaign.id) == 0
    assert len(narrations(campaign.id)) == 1


@pytest.mark.services
@pytest.mark.celery_worker
def test_a_worker_narrates_the_opening_once_however_often_the_task_comes(gm):
    """On Redis and a real Celery worker (threads: several turn tasks at once): the task
    delivered three times, as a redelivery after a lost ack would, gives one opening."""
    queue = f"turns-{uuid.uuid4().hex[:8]}"  # nothing left over from other runs
    with turns_deferred():
        campaign = campaign_create(name="Gull Rock", creator=gm, opening=True, **SETUP)
    with celery_worker(queue, TTS_PROVIDER="none"):
        for _ in range(3):
            run_turn.apply_async(kwargs={"campaign_id": str(campaign.id)}, queue=queue)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not narrations(campaign.id):
            time.sleep(0.2)
        time.sleep(1.5)  # a duplicate would show up now
    [opening] = narrations(campaign.id)
    assert opening.payload["through_seq"] == 1
    assert SETUP["premise"] in opening.payload["text"]


def test_a_campaign_without_a_premise_still_opens(gm):
    created = create_over_api(gm)
    assert created["premise"] == "" and created["lines"] == [] and created["turn_mode"] == "free"
    [opening] = narrations(created["id"])
    assert "Gull Rock" in opening.payload["text"]


def test_a_fork_gets_no_second_opening(gm):
    campaign_id = create_over_api(gm, **SETUP)["id"]
    [opening] = narrations(campaign_id)
    last = Snapshot.objects.get(campaign_id=campaign_id).version
    response = api_as(gm).post(
        f"/api/campaigns/{campaign_id}/fork", {"at_seq": last}, format="json"
    )
    assert response.status_code == 201, response.content
    fork_id = response.json()["id"]
    # The fork holds the copy of the opening and nothing more (its turn request after the
    # copy found nothing owed).
    [copied] = narrations(fork_id)
    assert copied.payload["text"] == opening.payload["text"]
    assert run_turn.run(campaign_id=fork_id) == 0
    assert len(narrations(fork_id)) == 1
    assert (
        Snapshot.objects.get(campaign_id=fork_id).state["campaign"]["premise"] == (SETUP["premise"])
    )


def test_old_campaign_created_events_stay_valid_and_fold_as_before(gm):
    old = {"name": "Old Keep", "edition": "5e"}
    state = fold_all([FoldedEvent(1, "campaign_created", old, "gm", None)])
    assert state["campaign"] == old  # no setup keys are made up for old logs
    assert state["turn"] == {"last_action_seq": 0, "answered_through_seq": 0}  # no opening
    line = json.dumps(
        {
            "seq": 1,
            "type": "campaign_created",
            "payload": old,
            "actor": {"kind": "gm", "user_id": None},
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    imported = services.campaign_import(lines=[line], owner=gm)
    assert no_drift(imported.id)
    assert narrations(imported.id) == []
    detail = api_as(gm).get(f"/api/campaigns/{imported.id}/").json()
    assert detail["premise"] == "" and detail["lines"] == [] and detail["veils"] == []


@pytest.mark.parametrize(
    "fields",
    [
        {"premise": "x" * 2001},
        {"tone": "y" * 201},
        {"turn_mode": "chaos"},
        {"lines": "no violence"},
        {"lines": ["ok"] * 10 + [f"item {n}" for n in range(11)]},
        {"veils": ["z" * 201]},
        {"lines": [1, 2]},
        {"veils": [None]},
        {"premise": "nul \x00 here"},
        {"lines": ["\ud800"]},
    ],
)
def test_bad_setup_is_a_clear_400(gm, fields):
    # Sent as JSON text, escapes and all (a lone surrogate is a valid JSON escape).
    body = json.dumps({"name": "Bad", **fields})
    response = api_as(gm).post("/api/campaigns/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"detail", "code"} and body["detail"]
    assert not Campaign.objects.exists()


def test_blank_lines_and_repeats_are_dropped(gm):
    created = create_over_api(gm, lines=["gore", "", "  ", "gore"], veils=[])
    assert created["lines"] == ["gore"]


# --- The DM's prompt --------------------------------------------------------------------------


def _system_and_user(request: Any) -> tuple[str, str]:
    messages = request.body["messages"]
    system = next(m["content"] for m in messages if m["role"] == "system")
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    return system, user


def test_lines_and_veils_reach_the_prompt_as_rules(gm, alice, openai_server, act):
    with turns_deferred():
        campaign = campaign_create(name="Gull Rock", creator=gm, opening=True, **SETUP)
    assert turn_run(campaign_id=campaign.id) is not None
    [request] = openai_server.requests
    system, user = _system_and_user(request)
    # The rules the DM keeps, in the system prompt, with this table's lines and veils.
    assert "Lines: never include this content" in system
    assert "Veils: keep this content offscreen, fade to black" in system
    for item in ("harm to animals", "spiders", "drowning"):
        assert item in system
    assert '"lines: never include":["harm to animals","spiders"]' in system
    assert '"veils: keep offscreen, fade to black":["drowning"]' in system
    # The premise and tone, and a request for the opening scene, in the turn's message.
    assert SETUP["premise"] in user and SETUP["tone"] in user
    assert "Narrate its opening scene yourself" in user
    assert "PLAYER ACTIONS" not in user

    # They stay rules for every turn after it, and the opening is not asked for again.
    services.campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
    act(campaign, alice, "I knock on the lighthouse door")
    assert turn_run(campaign_id=campaign.id) is not None
    system, user = _system_and_user(openai_server.requests[-1])
    assert '"veils: keep offscreen, fade to black":["drowning"]' in system
    assert "opening scene" not in user and "I knock on the lighthouse door" in user

    # A GM's change of the setup is in the next prompt.
    response = api_as(gm).patch(
        f"/api/campaigns/{campaign.id}/", {"lines": ["fire"], "veils": []}, format="json"
    )
    assert response.status_code == 200, response.content
    act(campaign, alice, "I climb the stairs")
    turn_run(campaign_id=campaign.id)
    system, _ = _system_and_user(openai_server.requests[-1])
    assert '"lines: never include":["fire"]' in system and "spiders" not in system


def test_no_safety_rule_without_lines_or_veils(gm, alice, openai_server, act):
    with turns_deferred():
        campaign = campaign_create(name="Plain", creator=gm, opening=True)
    turn_run(campaign_id=campaign.id)
    system, user = _system_and_user(openai_server.requests[-1])
    assert "Lines: never include" not in system
    assert "gave no premise" in user


# --- PATCH: the GM changes the setup ----------------------------------------------------------


def test_the_gm_changes_the_setup_and_a_player_may_not(gm, make_user):
    campaign_id = create_over_api(gm, **SETUP)["id"]
    player = make_user("pia")
    code = Campaign.objects.get(id=campaign_id).invite_code
    api_as(player).post(f"/api/campaigns/{campaign_id}/join", {"invite_code": code}, format="json")
    url = f"/api/campaigns/{campaign_id}/"
    change = {
        "name": "Gull Rock, Again",
        "premise": "The keeper is back, and changed.",
        "tone": "quiet dread",
        "lines": ["spiders"],
        "veils": ["drowning", "fire"],
    }
    response = api_as(gm).patch(url, {**change, "premise": SETUP["premise"]}, format="json")
    assert response.status_code == 200, response.content
    [updated] = Event.objects.filter(campaign_id=campaign_id, type="campaign_updated")
    # Only what changed is in the event (the premise was the same).
    assert updated.payload == {
        "changes": {k: v for k, v in change.items() if k != "premise"},
    }
    assert updated.actor_kind == "gm" and updated.actor_user_id == gm.id
    assert response.json()["name"] == "Gull Rock, Again"
    assert Campaign.objects.get(id=campaign_id).name == "Gull Rock, Again"
    state = snapshot_seen_by(Campaign(id=campaign_id), player)["state"]["campaign"]
    assert state["lines"] == ["spiders"] and state["veils"] == ["drowning", "fire"]
    assert state["name"] == "Gull Rock, Again"
    # The same values again change nothing: no event.
    again = api_as(gm).patch(url, {"tone": "quiet dread"}, format="json")
    assert again.status_code == 200
    assert Event.objects.filter(campaign_id=campaign_id, type="campaign_updated").count() == 1

    version = Snapshot.objects.get(campaign_id=campaign_id).version
    refused = api_as(player).patch(url, {"tone": "slapstick"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "gm_only"
    outsider = api_as(make_user()).patch(url, {"tone": "slapstick"}, format="json")
    assert outsider.status_code == 403
    assert Client().patch(url, "{}", content_type="application/json").status_code in (401, 403)
    for body in (
        {"turn_mode": "free"},
        {"colour": "red"},
        {},
        {"archived": "yes"},
        {"lines": "spiders"},
        {"premise": "p" * 2001},
        {"name": ""},
        ["tone"],
    ):
        bad = api_as(gm).patch(url, body, format="json")
        assert bad.status_code == 400, (body, bad.content)
        assert set(bad.json()) == {"detail", "code"}
    assert "PUT" in str(api_as(gm).patch(url, {"turn_mode": "free"}, format="json").json())
    assert Snapshot.objects.get(campaign_id=campaign_id).version == version
    assert no_drift(campaign_id)


# --- Archived campaigns -----------------------------------------------------------------------


def test_an_archived_campaign_is_read_only_and_leaves_the_list(gm, make_user, act):
    campaign_id = create_over_api(gm, **{**SETUP, "turn_mode": "free"})["id"]
    campaign = Campaign.objects.get(id=campaign_id)
    player = make_user("pia")
    services.campaign_join(invite_code=campaign.invite_code, user=player, display_name="Pia")
    waiting = act(campaign, player, "I light the lamp")  # owed a turn when archived

    url = f"/api/campaigns/{campaign_id}/"
    response = api_as(gm).patch(url, {"archived": True}, format="json")
    assert response.status_code == 200 and response.json()["archived"] is True
    [archived] = Event.objects.filter(campaign_id=campaign_id, type="campaign_updated")
    assert archived.payload == {"changes": {"archived": True}}

    # No DM turn starts: the action made before stays owed, unanswered.
    assert turns_run_pending(campaign_id=campaign_id) == 0
    assert [n.payload["through_seq"] for n in narrations(campaign_id)] == [1]

    version = Snapshot.objects.get(campaign_id=campaign_id).version
    api = f"/api/campaigns/{campaign_id}"
    refusals = [
        api_as(player).post(
            f"{api}/actions", {"action_id": str(uuid.uuid4()), "text": "I run"}, format="json"
        ),
        api_as(player).post(f"{api}/rolls", {"formula": "1d20"}, format="json"),
        api_as(gm).post(f"{api}/directions", {"text": "A storm."}, format="json"),
        api_as(player).post(f"{api}/x_card"),
        api_as(gm).post(f"{api}/gm/values", {"path": "/flags/storm", "value": 1}, format="json"),
    ]
    for refused in refusals:
        assert refused.status_code == 409, refused.content
        assert refused.json()["code"] == "archived"
        assert "archived" in refused.json()["detail"]
    assert Snapshot.objects.get(campaign_id=campaign_id).version == version

    # Over the socket: a whisper and an action get an `error` with code `archived`.
    async def socket_refusals() -> list[dict[str, Any]]:
        room = Room(campaign_id, player)
        await room.open()
        await room.hello(0)
        errors = []
        for message in (
            {"type": "client.whisper", "to": "gm", "text": "psst"},
            {"type": "client.player_action", "action_id": str(uuid.uuid4()), "text": "I run"},
            {"type": "client.x_card"},
        ):
            await room.send(message)
            errors.append((await room.recv_until(lambda m: m["type"] == "error"))[-1])
        await room.close()
        return errors

    for error in async_to_sync(socket_refusals)():
        assert error["code"] == "archived" and "read-only" in error["detail"]

    # It leaves the campaign list (API and page) unless asked for.
    listed = api_as(player).get("/api/campaigns/").json()
    assert campaign_id not in {c["id"] for c in listed}
    everything = api_as(player).get("/api/campaigns/?archived=1").json()
    [entry] = [c for c in everything if c["id"] == campaign_id]
    assert entry["archived"] is True
    assert api_as(player).get("/api/campaigns/?archived=maybe").status_code == 400
    client = Client()
    client.force_login(player)
    page = client.get(reverse("campaign-list")).content.decode()
    assert "Gull Rock" not in page and "Show archived campaigns (1)" in page
    page = client.get(reverse("campaign-list") + "?archived=1").content.decode()
    assert "Gull Rock" in page and "Archived campaigns" in page
    # Its story can still be read.
    assert api_as(player).get(f"{api}/events").status_code == 200

    # The GM brings it back: play goes on, and what was owed is answered.
    response = api_as(gm).patch(url, {"archived": False}, format="json")
    assert response.status_code == 200 and response.json()["archived"] is False
    answered = narrations(campaign_id)[-1]
    assert answered.payload["through_seq"] == waiting.seq
    assert "I light the lamp" in answered.payload["text"]
    again = api_as(player).post(
        f"{api}/actions", {"action_id": str(uuid.uuid4()), "text": "I run"}, format="json"
    )
    assert again.status_code == 202
    assert campaign_id in {c["id"] for c in api_as(player).get("/api/campaigns/").json()}
    # A player may not archive or bring it back.
    assert api_as(player).patch(url, {"archived": True}, format="json").status_code == 403
    assert no_drift(campaign_id)


# --- The create page --------------------------------------------------------------------------


def test_the_create_page_takes_the_setup_and_opens_the_room(make_user):
    user = make_user("mara")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("campaign-list")).content.decode()
    for words in ('name="premise"', 'name="tone"', '<select name="turn_mode"', 'name="lines"'):
        assert words in page
    assert "never happen in the story" in page and "fades to black" in page
    response = client.post(
        reverse("campaign-create"),
        {
            "name": "Ashes",
            "edition": "5e",
            "display_name": "Mara",
            "premise": "The city burned; the party knows who lit it.",
            "tone": "tense",
            "turn_mode": "rounds",
            "lines": "spiders\n\n  harm to animals \nspiders",
            "veils": "torture",
        },
    )
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="Ashes")
    assert response.url == reverse("campaign-room", args=[campaign.id])
    assert campaign.turn_mode == "rounds"
    created = Event.objects.get(campaign=campaign, type="campaign_created")
    assert created.payload["lines"] == ["spiders", "harm to animals"]
    assert created.payload["veils"] == ["torture"]
    [opening] = narrations(campaign.id)
    assert "The city burned" in opening.payload["text"]


def test_the_create_page_explains_what_is_wrong(make_user):
    client = Client()
    client.force_login(make_user("mara"))
    response = client.post(
        reverse("campaign-create"),
        {
            "name": "Ashes",
            "edition": "5e",
            "turn_mode": "free",
            "lines": "\n".join(f"line {n}" for n in range(21)),
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "At most 20 lines" in html and "message-error" in html
    assert "line 20" in html  # what was typed is kept
    assert not Campaign.objects.exists()


# --- The demo ---------------------------------------------------------------------------------


def test_the_demo_opens_with_one_narration(settings):
    settings.DEBUG = True
    call_command("seed_demo", stdout=io.StringIO())
    campaign = Campaign.objects.get(name="The Sunken Crown")
    [opening] = narrations(campaign.id)
    assert "crown" in opening.payload["text"].lower()
    state = Snapshot.objects.get(campaign=campaign).state
    assert state["campaign"]["lines"] and state["campaign"]["veils"]
    call_command("seed_demo", stdout=io.StringIO())
    assert len(narrations(campaign.id)) == 1
