"""The campaigns HTTP API: members only, JSON errors, the same writes as the room."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from campaigns import selectors

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for():
    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def test_create_and_list_campaigns(client_for, make_user):
    user = make_user()
    client = client_for(user)
    created = client.post("/api/campaigns/", {"name": "Ashes", "edition": "5e"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "gm" and body["invite_code"]
    assert [c["id"] for c in client.get("/api/campaigns/").json()] == [body["id"]]
    assert client_for(make_user()).get("/api/campaigns/").json() == []


def test_detail_hides_invite_code_from_players(client_for, campaign, alice, gm):
    assert "invite_code" not in client_for(alice).get(f"/api/campaigns/{campaign.id}/").json()
    detail = client_for(gm).get(f"/api/campaigns/{campaign.id}/").json()
    assert detail["invite_code"] == campaign.invite_code
    assert {m["display_name"] for m in detail["members"]} == {"gm", "Alice"}


def test_join_with_code(client_for, campaign, make_user):
    bob = make_user("bob")
    url = f"/api/campaigns/{campaign.id}/join"
    bad = client_for(bob).post(url, {"invite_code": "WRONGCODE"}, format="json")
    assert bad.status_code == 403 and bad.json()["code"] == "bad_invite"
    ok = client_for(bob).post(url, {"invite_code": campaign.invite_code}, format="json")
    assert ok.status_code == 200 and ok.json()["role"] == "player"


def test_events_and_snapshot(client_for, campaign, alice):
    client = client_for(alice)
    events = client.get(f"/api/campaigns/{campaign.id}/events?after_seq=1&limit=2").json()
    assert [e["seq"] for e in events] == [2, 3]
    snapshot = client.get(f"/api/campaigns/{campaign.id}/snapshot").json()
    assert snapshot["version"] == selectors.snapshot_get(campaign_id=campaign.id).version
    assert snapshot["state"]["scene"]["location"]


def test_action_is_accepted_once(client_for, campaign, alice, django_capture_on_commit_callbacks):
    client = client_for(alice)
    body = {"action_id": str(uuid.uuid4()), "text": "I sing a sea shanty"}
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(f"/api/campaigns/{campaign.id}/actions", body, format="json")
        again = client.post(f"/api/campaigns/{campaign.id}/actions", body, format="json")
    assert first.status_code == again.status_code == 202
    assert first.json()["seq"] == again.json()["seq"]
    narration = selectors.events_after(campaign_id=campaign.id, after_seq=first.json()["seq"])
    assert [e.type for e in narration] == ["dm_narration"]


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/api/campaigns/{id}/", "get", None),
        ("/api/campaigns/{id}/events", "get", None),
        ("/api/campaigns/{id}/snapshot", "get", None),
        ("/api/campaigns/{id}/actions", "post", {"action_id": str(uuid.uuid4()), "text": "hi"}),
    ],
)
def test_outsiders_and_anonymous_are_refused(client_for, campaign, make_user, path, method, body):
    url = path.format(id=campaign.id)
    anonymous = getattr(client_for(), method)(url, body, format="json")
    assert anonymous.status_code in (401, 403)
    outsider = getattr(client_for(make_user()), method)(url, body, format="json")
    assert outsider.status_code == 403 and outsider.json()["code"] == "not_a_member"
    unknown = getattr(client_for(make_user()), method)(
        path.format(id=uuid.uuid4()), body, format="json"
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"action_id": "nope", "text": "x"},
        {"action_id": str(uuid.uuid4()), "text": ""},
        {"action_id": str(uuid.uuid4()), "text": "x" * 2001},
        {"text": "no id"},
        [1, 2, 3],
    ],
)
def test_bad_action_is_a_400_with_json(client_for, campaign, alice, body):
    response = client_for(alice).post(f"/api/campaigns/{campaign.id}/actions", body, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "code"}


def test_malformed_json_is_a_400(client_for, campaign, alice):
    response = client_for(alice).post(
        f"/api/campaigns/{campaign.id}/actions", "{nope", content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


def test_bad_paging_is_a_400(client_for, campaign, alice):
    client = client_for(alice)
    assert client.get(f"/api/campaigns/{campaign.id}/events?limit=5000").status_code == 400
    assert client.get(f"/api/campaigns/{campaign.id}/events?after_seq=-1").status_code == 400
    assert client.get(f"/api/campaigns/{campaign.id}/events?after_seq=x").status_code == 400


def test_openapi_schema_is_served(client_for, make_user):
    response = client_for(make_user()).get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/campaigns/{campaign_id}/events" in response.content
