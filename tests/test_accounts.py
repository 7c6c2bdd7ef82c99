"""Accounts (issue 20, item 5): password reset by email with Django's own views, the
account's email, and deleting an account: it leaves every campaign under an anonymous
name, its personal data goes, its logins end, and the log's events stay and replay."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import tokens_for_user
from campaigns import members, selectors
from campaigns.characters import character_update
from campaigns.models import Campaign, Event, Membership
from campaigns.services import campaign_create, campaign_join, fold_events, snapshots_rebuild
from realtime.services import presence_list
from rpgai.asgi import application
from tests.auth_tools import bearer, isolate_limits
from tests.ws import Room, events_of

User = get_user_model()
PASSWORD = "pw-Secret-123"
NEW_PASSWORD = "a-New-secret-456"
NAME = "Zephyrine Quill"  # her name at the table: nowhere to be seen once she is gone


@pytest.fixture(autouse=True)
def _isolated(settings: Any) -> None:
    isolate_limits(settings)


@pytest.fixture
def zephyrine(make_user: Any, join: Any) -> Any:
    user = make_user("zephyrine")
    user.email = "zephyrine@example.org"
    user.save(update_fields=["email"])
    join(user, NAME)
    return user


def _api(user: Any | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(**bearer(tokens_for_user(user=user)["access"]))
    return client


def _logged_in(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def _token_status(username: str, password: str) -> int:
    response = APIClient().post(
        "/api/auth/token", {"username": username, "password": password}, format="json"
    )
    return response.status_code


def _reset_link(message: Any) -> str:
    match = re.search(r"https?://[^/\s]+(/password-reset/[^\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


# --- Password reset by email --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_login_page_offers_a_password_reset():
    page = Client().get("/login/")
    assert 'href="/password-reset/"' in page.content.decode()
    form = Client().get("/password-reset/")
    assert form.status_code == 200
    assert "Forgot your password?" in form.content.decode()


@pytest.mark.django_db
def test_password_reset_end_to_end(make_user):
    user = make_user("rowan")
    user.email = "rowan@example.org"
    user.save(update_fields=["email"])
    old_refresh = tokens_for_user(user=user)["refresh"]

    browser = Client()
    sent = browser.post("/password-reset/", {"email": "Rowan@Example.org"})
    assert sent.status_code == 302 and sent["Location"] == "/password-reset/sent/"
    assert "Check your email" in browser.get(sent["Location"]).content.decode()

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["rowan@example.org"]
    assert "new password" in message.subject
    link = _reset_link(message)

    # Django's confirm view keeps the token in the session and redirects to a URL without it.
    opened = browser.get(link)
    assert opened.status_code == 302
    form_page = browser.get(opened["Location"])
    assert "Choose a new password" in form_page.content.decode()
    done = browser.post(
        opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done["Location"] == "/password-reset/done/"
    assert "Your password is changed" in browser.get(done["Location"]).content.decode()

    # The new password opens the account, on the page and the API; the old one does not.
    assert Client().login(username="rowan", password=NEW_PASSWORD)
    assert not Client().login(username="rowan", password=PASSWORD)
    assert _token_status("rowan", NEW_PASSWORD) == 200
    assert _token_status("rowan", PASSWORD) == 401
    # Whoever held the account's API tokens before the reset holds them no more.
    refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": old_refresh}, format="json")
    assert refreshed.status_code == 401

    # The link works once.
    again = Client().get(link, follow=True)
    assert "This link no longer works" in again.content.decode()


@pytest.mark.django_db
def test_an_unknown_email_gets_the_same_answer(make_user):
    user = make_user("sage")
    user.email = "sage@example.org"
    user.save(update_fields=["email"])

    known, unknown = Client(), Client()
    known_answer = known.post("/password-reset/", {"email": "sage@example.org"})
    unknown_answer = unknown.post("/password-reset/", {"email": "nobody@example.org"})
    assert (known_answer.status_code, known_answer["Location"]) == (
        unknown_answer.status_code,
        unknown_answer["Location"],
    )
    assert (
        known.get(known_answer["Location"]).content
        == unknown.get(unknown_answer["Location"]).content
    )
    assert [m.to for m in mail.outbox] == [["sage@example.org"]]


@pytest.mark.django_db
def test_reset_requests_are_rate_limited_alike_for_every_address(settings, make_user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "password_reset_email": "2/h"}
    user = make_user("flint")
    user.email = "flint@example.org"
    user.save(update_fields=["email"])
    for email in ("flint@example.org", "nobody@example.org"):
        statuses = [
            Client().post("/password-reset/", {"email": email}).status_code for _ in range(3)
        ]
        assert statuses == [302, 302, 429], (email, statuses)
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_signup_keeps_the_optional_email_and_the_account_page_changes_it(make_user):
    browser = Client()
    signed_up = browser.post(
        "/signup/",
        {
            "username": "wren",
            "email": "wren@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert signed_up.status_code == 302
    assert User.objects.get(username="wren").email == "wren@example.org"

    page = browser.get("/account/")
    assert "wren@example.org" in page.content.decode()
    wrong = browser.post("/account/", {"email": "other@example.org", "password": "nope"})
    assert "That is not your password." in wrong.content.decode()
    assert User.objects.get(username="wren").email == "wren@example.org"
    saved = browser.post("/account/", {"email": "other@example.org", "password": PASSWORD})
    assert saved.status_code == 302
    assert User.objects.get(username="wren").email == "other@example.org"


@pytest.mark.django_db
def test_the_api_reads_and_changes_the_callers_email(make_user):
    user = make_user("heath")
    client = _api(user)
    assert client.get("/api/auth/me").json() == {
        "id": str(user.id),
        "username": "heath",
        "email": "",
    }
    wrong = client.patch("/api/auth/me", {"email": "h@example.org", "password": "x"}, format="json")
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    bad = client.patch(
        "/api/auth/me", {"email": "not-an-email", "password": PASSWORD}, format="json"
    )
    assert bad.status_code == 400 and set(bad.json()) == {"detail", "code"}
    ok = client.patch(
        "/api/auth/me", {"email": "h@example.org", "password": PASSWORD}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["email"] == "h@example.org"
    cleared = client.patch("/api/auth/me", {"email": "", "password": PASSWORD}, format="json")
    assert cleared.json()["email"] == ""
    assert User.objects.get(id=user.id).email == ""


# --- Deleting an account ------------------------------------------------------------------------


def _events(campaign: Any) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign.id).order_by("seq"))


@pytest.mark.django_db
def test_deleting_an_account_anonymizes_it_and_the_log_replays(campaign, gm, bob, zephyrine, act):
    act(campaign, zephyrine, "I pick the lock of the sea chest.")
    before = _events(campaign)
    old_pair = tokens_for_user(user=zephyrine)
    user_id = str(zephyrine.id)

    wrong = _api(zephyrine).delete("/api/auth/me", {"password": "nope"}, format="json")
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    assert User.objects.filter(id=user_id).exists()

    gone = _api(zephyrine).delete("/api/auth/me", {"password": PASSWORD}, format="json")
    assert gone.status_code == 204, gone.content

    # Personal data: the user row is gone (username, email, password hash).
    assert not User.objects.filter(id=user_id).exists()
    assert not User.objects.filter(email="zephyrine@example.org").exists()
    # The logins are over: no log in, no API, no refresh.
    assert not Client().login(username="zephyrine", password=PASSWORD)
    assert _token_status("zephyrine", PASSWORD) == 401
    assert _api().get("/api/auth/me", **bearer(old_pair["access"])).status_code == 401
    refreshed = APIClient().post(
        "/api/auth/token/refresh", {"refresh": old_pair["refresh"]}, format="json"
    )
    assert refreshed.status_code == 401

    # What the table sees: her name is nowhere in the member list or the snapshot.
    detail = _api(bob).get(f"/api/campaigns/{campaign.id}/").json()
    assert user_id not in [m["user_id"] for m in detail["members"]]
    assert NAME not in json.dumps(detail)
    snapshot = _api(bob).get(f"/api/campaigns/{campaign.id}/snapshot").json()
    assert user_id not in snapshot["state"]["members"]
    assert NAME not in json.dumps(snapshot)
    hers = [c for c in snapshot["state"]["characters"].values() if c["owner_user_id"] == user_id]
    assert [c["name"] for c in hers] == [members.ANONYMOUS_CHARACTER_NAME]
    assert [c.get("departed") for c in hers] == [True]  # out of the party
    assert NAME not in json.dumps(_api(gm).get(f"/api/campaigns/{campaign.id}/").json())

    # The log's events stay, her action among them; two were added, neither with her name.
    after = _events(campaign)
    assert [e.id for e in after[: len(before)]] == [e.id for e in before]
    assert [e.payload for e in after[: len(before)]] == [e.payload for e in before]
    action = next(e for e in after if e.type == "player_action")
    assert str(action.actor_user_id) == user_id
    added = after[len(before) :]
    assert [e.type for e in added] == ["character_updated", "player_left"]
    assert added[-1].payload["display_name"] == members.ANONYMOUS_NAME
    assert added[-1].payload["account_deleted"] is True
    assert NAME not in json.dumps([e.payload for e in added])

    # The log replays to the stored snapshot.
    checked, drifts = snapshots_rebuild(campaign_id=campaign.id, fix=False)
    assert (checked, drifts) == (1, [])
    stored = selectors.snapshot_get(campaign_id=campaign.id)
    assert fold_events(after) == stored.state

    # Shown from the log, her old events name her no more.
    withheld = selectors.names_withheld(campaign_id=campaign.id)
    assert withheld == {user_id: members.ANONYMOUS_NAME}
    shown = [selectors.envelope_withheld(selectors.event_envelope(e), withheld) for e in after]
    assert NAME not in json.dumps(shown)
    assert NAME in json.dumps([e.payload for e in after])  # stored as it was written


@pytest.mark.django_db
def test_a_character_with_a_name_of_its_own_keeps_it(campaign, gm, bob, zephyrine):
    membership = selectors.membership_get(campaign_id=campaign.id, user_id=zephyrine.id)
    [character] = [
        cid
        for cid, c in selectors.snapshot_get(campaign_id=campaign.id).state["characters"].items()
        if c.get("owner_user_id") == str(zephyrine.id)
    ]
    character_update(by_membership=membership, character_id=character, changes={"name": "Thorn"})
    assert (
        _api(zephyrine).delete("/api/auth/me", {"password": PASSWORD}, format="json").status_code
        == 204
    )
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    assert state["characters"][character]["name"] == "Thorn"
    assert str(zephyrine.id) not in state["members"]


@pytest.mark.django_db
def test_the_only_gm_of_a_table_cannot_delete_their_account(campaign, gm, zephyrine):
    before = len(_events(campaign))
    refused = _api(gm).delete("/api/auth/me", {"password": PASSWORD}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "sole_gm"
    assert "The Sunken Crown" in refused.json()["detail"]
    assert User.objects.filter(id=gm.id).exists()
    assert Membership.objects.filter(campaign=campaign, user=gm).exists()
    assert len(_events(campaign)) == before

    page = _logged_in(gm).get("/account/delete/").content.decode()
    assert "only game master" in page and "The Sunken Crown" in page
    assert 'name="password"' not in page  # nothing to submit until the role is handed over


@pytest.mark.django_db
def test_a_campaign_the_account_is_alone_in_is_deleted_with_it(make_user):
    loner = make_user("loner")
    solo = campaign_create(name="A Quiet Tower", edition="5e", creator=loner)
    page = _logged_in(loner).get("/account/delete/").content.decode()
    assert "Campaigns deleted with your account" in page and "A Quiet Tower" in page
    assert (
        _api(loner).delete("/api/auth/me", {"password": PASSWORD}, format="json").status_code == 204
    )
    assert not Campaign.objects.filter(id=solo.id).exists()
    assert not User.objects.filter(id=loner.id).exists()


@pytest.mark.django_db
def test_the_page_deletes_the_account_after_its_password(campaign, gm, zephyrine):
    browser = _logged_in(zephyrine)
    page = browser.get("/account/delete/").content.decode()
    assert "The Sunken Crown" in page and members.ANONYMOUS_NAME in page
    wrong = browser.post("/account/delete/", {"password": "nope"})
    assert "That is not your password." in wrong.content.decode()
    assert User.objects.filter(id=zephyrine.id).exists()

    done = browser.post("/account/delete/", {"password": PASSWORD}, follow=True)
    assert done.redirect_chain[-1][0] == "/login/"
    assert "Your account is deleted" in done.content.decode()
    assert not User.objects.filter(id=zephyrine.id).exists()
    assert browser.get("/campaigns/").status_code == 302  # logged out
    members_now = [
        m["user_id"] for m in _api(gm).get(f"/api/campaigns/{campaign.id}/").json()["members"]
    ]
    assert str(zephyrine.id) not in members_now


# --- Her sockets close, and the room hears she left under another name ------------------------


async def _closed_with(room: Room) -> int | None:
    while True:
        output = await room.comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output.get("code")
        assert json.loads(output["text"])["type"] in ("presence", "event"), output


async def _token_room(campaign_id: Any, access: str) -> Room:
    room = Room(campaign_id, None)
    room.comm = WebsocketCommunicator(
        application, f"/ws/campaigns/{campaign_id}/?token={access}", headers=[]
    )
    await room.comm.connect()
    return room


def _without(presence: dict[str, Any], user: Any) -> bool:
    return str(user.id) not in [u["user_id"] for u in presence["users"]]


def _delete_by_api(user: Any) -> int:
    return _api(user).delete("/api/auth/me", {"password": PASSWORD}, format="json").status_code


@pytest.mark.django_db(transaction=True)
async def test_deleting_an_account_closes_its_sockets_and_the_room_sees_a_former_player(
    campaign, gm, bob, zephyrine
):
    pair = await sync_to_async(tokens_for_user)(user=zephyrine)
    page = Room(campaign.id, zephyrine)
    await page.open()
    await page.hello(0)
    token = await _token_room(campaign.id, pair["access"])
    await token.hello(0)
    table = Room(campaign.id, bob)
    await table.open()
    await table.hello(0)
    online = await sync_to_async(presence_list)(campaign_id=campaign.id)
    assert NAME in [u["display_name"] for u in online]

    assert await sync_to_async(_delete_by_api)(zephyrine) == 204
    assert await _closed_with(page) in (4401, 4403)
    assert await _closed_with(token) in (4401, 4403)

    seen = await table.recv_until(
        lambda m: m["type"] == "event" and m["event"]["type"] == "player_left"
    )
    left = events_of(seen)[-1]
    assert left["payload"]["user_id"] == str(zephyrine.id)
    assert left["payload"]["display_name"] == members.ANONYMOUS_NAME
    assert NAME not in json.dumps(events_of(seen))
    # The room's presence list drops her (her sockets closed; her rows went with her).
    if not any(m["type"] == "presence" and _without(m, zephyrine) for m in seen):
        await table.recv_until(lambda m: m["type"] == "presence" and _without(m, zephyrine))
    online = await sync_to_async(presence_list)(campaign_id=campaign.id)
    assert NAME not in json.dumps(online)

    # Her old access token opens no socket any more.
    again = await _token_room(campaign.id, pair["access"])
    assert await _closed_with(again) == 4401
    for room in (page, token, table, again):
        await room.close()


@pytest.mark.django_db
def test_a_deleted_accounts_id_stays_in_the_log_but_leads_to_no_one(campaign, zephyrine):
    user_id = zephyrine.id
    assert _delete_by_api(zephyrine) == 204
    left = Event.objects.get(campaign_id=campaign.id, type="player_left")
    assert left.payload["user_id"] == str(user_id)
    assert not User.objects.filter(id=user_id).exists()
    assert selectors.names_withheld(campaign_id=uuid.uuid4()) == {}


# --- Staff deleting a user in the admin: the same deletion ----------------------------------------


@pytest.mark.django_db
def test_staff_deleting_a_user_in_the_admin_anonymizes_them_too(campaign, gm, zephyrine, make_user):
    staff = make_user("operator")
    staff.is_staff = staff.is_superuser = True
    staff.save(update_fields=["is_staff", "is_superuser"])
    admin = _logged_in(staff)

    deleted = admin.post(f"/admin/accounts/user/{zephyrine.id}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not User.objects.filter(id=zephyrine.id).exists()
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    assert str(zephyrine.id) not in state["members"]
    assert NAME not in json.dumps(state)
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False)[1] == []

    # The only GM of a table with players is protected: the admin refuses, nothing changes.
    campaign_join(invite_code=campaign.invite_code, user=make_user("bystander"))
    page = admin.get(f"/admin/accounts/user/{gm.id}/delete/").content.decode()
    assert "The Sunken Crown" in page
    admin.post(f"/admin/accounts/user/{gm.id}/delete/", {"post": "yes"})
    assert User.objects.filter(id=gm.id).exists()
    assert Membership.objects.filter(campaign=campaign, user=gm).exists()


@pytest.mark.django_db(transaction=True)
async def test_no_path_that_shows_the_log_names_a_deleted_account(
    campaign, gm, bob, zephyrine, act
):
    """Her old `player_joined` still holds her name; every way the log is shown to people
    or to the model withholds it: the events API, a socket's catch-up, the journal, the
    recap, the export, the summaries' story lines and the DM's prompt."""
    from campaigns.services import campaign_export
    from memory.summaries import story_lines
    from orchestrator.prompt import prompt_build
    from orchestrator.selectors import turn_context_get

    await sync_to_async(act)(campaign, zephyrine, "I pick the lock of the sea chest.")
    await sync_to_async(act)(campaign, bob, "I keep watch at the door.")
    assert await sync_to_async(_delete_by_api)(zephyrine) == 204
    events = await sync_to_async(_events)(campaign)
    assert NAME in json.dumps([e.payload for e in events])  # stored as it was written

    def read_all() -> dict[str, str]:
        base = f"/api/campaigns/{campaign.id}"
        reader = _api(bob)
        state = selectors.snapshot_get(campaign_id=campaign.id).state
        context = turn_context_get(
            campaign_id=campaign.id, answered_seq=0, through_seq=events[-1].seq
        )
        return {
            "events": reader.get(f"{base}/events?after_seq=0&limit=1000").content.decode(),
            "journal": b"".join(reader.get(f"{base}/journal.md").streaming_content).decode(),
            "recap": reader.get(f"{base}/recap?since_seq=0").content.decode(),
            "export": "\n".join(campaign_export(campaign_id=campaign.id)),
            "story": " ".join(line.text for line in story_lines(events, state)),
            "prompt": json.dumps(prompt_build(context=context, budget=100_000).messages),
        }

    shown = await sync_to_async(read_all)()
    for path, text in shown.items():
        assert NAME not in text, path
    assert members.ANONYMOUS_NAME in shown["events"] and members.ANONYMOUS_NAME in shown["story"]
    assert "sea chest" in shown["journal"] and "sea chest" in shown["prompt"]

    table = Room(campaign.id, bob)
    await table.open()
    caught_up = events_of(await table.hello(0))
    assert any(e["type"] == "player_joined" for e in caught_up)
    assert NAME not in json.dumps(caught_up)
    await table.close()


@pytest.mark.django_db
def test_in_an_archived_campaign_her_character_loses_her_name_too(campaign, gm, zephyrine):
    """An archived campaign refuses sheet changes, so no `character_updated` can rename
    her placeholder: the `player_left` of a deleted account renames it as it folds."""
    from campaigns.services import campaign_update

    campaign_update(campaign_id=campaign.id, by_user=gm, changes={"archived": True})
    assert _delete_by_api(zephyrine) == 204
    state = selectors.snapshot_get(campaign_id=campaign.id).state
    hers = [c for c in state["characters"].values() if c["owner_user_id"] == str(zephyrine.id)]
    assert [c["name"] for c in hers] == [members.ANONYMOUS_CHARACTER_NAME]
    assert NAME not in json.dumps(state)
    assert snapshots_rebuild(campaign_id=campaign.id, fix=False) == (1, [])
