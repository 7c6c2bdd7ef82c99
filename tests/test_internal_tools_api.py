"""POST /internal/tools/execute: the internal secret or nothing (never a user's session or
token), 404 for an unknown campaign, 400 for a bad body, 201 with the appended events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.models import Event, Snapshot

URL = "/internal/tools/execute"
SECRET = "test-internal-secret-0123456789abcdef-xyz"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _secret(settings: Any) -> None:
    settings.INTERNAL_TOOLS_SECRET = SECRET


def body(campaign_id: Any, **extra: Any) -> dict[str, Any]:
    return {
        "campaign_id": str(campaign_id),
        "narration": "Thunder rolls over the hills.",
        "options": ["Take shelter", "Press on"],
        "tool_calls": [
            {"name": "roll", "args": {"formula": "1d20+2", "reason": "Perception"}},
            {"name": "trigger_audio", "args": {"cue": "thunder", "volume": 0.7}},
        ],
        **extra,
    }


def post(client: Client, data: Any, secret: str | None = SECRET, **headers: Any):
    if secret is not None:
        headers["HTTP_X_INTERNAL_SECRET"] = secret
    raw = data if isinstance(data, str | bytes) else json.dumps(data)
    return client.post(URL, raw, content_type="application/json", **headers)


def test_with_the_secret_it_runs_the_turn_and_answers_201_with_the_envelopes(campaign):
    start = Snapshot.objects.get(campaign=campaign).version
    client = Client(enforce_csrf_checks=True)  # not cookie-authenticated: no CSRF needed
    response = post(
        client, body(campaign.id, tool_calls=[*body(campaign.id)["tool_calls"], {"name": "x"}])
    )
    assert response.status_code == 201, response.content
    data = response.json()
    types = [e["type"] for e in data["events"]]
    assert types == ["roll_requested", "roll_result", "audio_cue", "dm_narration"]
    assert [e["seq"] for e in data["events"]] == list(range(start + 1, start + 5))
    assert data["events"][-1]["payload"]["text"] == "Thunder rolls over the hills."
    assert data["events"][-1]["actor"] == {"kind": "dm", "user_id": None}
    assert data["rejections"] == [
        {"index": 2, "name": "x", "reason": data["rejections"][0]["reason"]}
    ]
    assert Event.objects.filter(campaign=campaign).count() == start + 4


def test_through_seq_retries_conflict(campaign):
    client = Client()
    assert post(client, body(campaign.id, through_seq=2)).status_code == 201
    count = Event.objects.filter(campaign=campaign).count()
    response = post(client, body(campaign.id, through_seq=2))
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert Event.objects.filter(campaign=campaign).count() == count


def test_without_the_secret_it_is_forbidden(campaign):
    count = Event.objects.filter(campaign=campaign).count()
    client = Client()
    for secret in (None, "", "wrong", SECRET[:-1], SECRET + "x", SECRET.upper(), " " + SECRET):
        response = post(client, body(campaign.id), secret=secret)
        assert response.status_code == 403, secret
        assert response.json()["code"] == "forbidden"
    assert client.get(URL).status_code == 403
    assert Event.objects.filter(campaign=campaign).count() == count


def test_a_users_session_or_bearer_token_is_not_enough(campaign, gm):
    from rest_framework_simplejwt.tokens import AccessToken

    client = Client()
    client.force_login(gm)
    assert post(client, body(campaign.id), secret=None).status_code == 403
    token = str(AccessToken.for_user(gm))
    response = post(Client(), body(campaign.id), secret=None, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    # Nor is the secret in another header or in the body.
    response = post(Client(), {**body(campaign.id), "secret": SECRET}, secret=None)
    assert response.status_code == 403
    response = post(Client(), body(campaign.id), secret=None, HTTP_AUTHORIZATION=f"Bearer {SECRET}")
    assert response.status_code == 403


def test_an_unset_secret_refuses_everyone(campaign, settings):
    settings.INTERNAL_TOOLS_SECRET = ""
    assert post(Client(), body(campaign.id), secret="").status_code == 403


@settings(max_examples=150, deadline=None)
@given(secret=st.text(max_size=80).filter(lambda s: s != SECRET))
def test_every_wrong_secret_is_refused(secret):
    # No campaign needed: the secret is checked before anything else is read.
    response = post(Client(), body(uuid.uuid4()), secret=secret)
    assert response.status_code == 403


def test_unknown_campaign_is_404(db):
    response = post(Client(), body(uuid.uuid4()))
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "NAN_IN_TOOL_CALLS",
        b"\xff\xfe",
        "[]",
        "null",
        {"narration": "x", "options": ["a"]},
        {"campaign_id": "not-a-uuid", "narration": "x", "options": ["a"]},
        "MISSING_NARRATION",
        "EMPTY_OPTIONS",
        "NINE_OPTIONS",
        "BLANK_OPTION",
        "TOOL_CALLS_NOT_A_LIST",
        "THROUGH_SEQ_TEXT",
        "UNKNOWN_FIELD",
    ],
)
def test_a_bad_body_is_400(campaign, data):
    base = body(campaign.id)
    variants = {
        "MISSING_NARRATION": {k: v for k, v in base.items() if k != "narration"},
        "EMPTY_OPTIONS": {**base, "options": []},
        "NINE_OPTIONS": {**base, "options": [str(i) for i in range(9)]},
        "BLANK_OPTION": {**base, "options": ["  "]},
        "TOOL_CALLS_NOT_A_LIST": {**base, "tool_calls": {"name": "roll"}},
        "THROUGH_SEQ_TEXT": {**base, "through_seq": "3"},
        "UNKNOWN_FIELD": {**base, "budget": 1000},
        # Python's json writes NaN; it is not JSON and must never reach a JSON column.
        "NAN_IN_TOOL_CALLS": json.dumps({**base, "tool_calls": [{"name": "x", "v": float("nan")}]}),
    }
    data = variants.get(data, data) if isinstance(data, str) else data
    count = Event.objects.filter(campaign=campaign).count()
    response = post(Client(), data)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert Event.objects.filter(campaign=campaign).count() == count


def test_other_methods_and_huge_bodies(campaign):
    client = Client()
    response = client.get(URL, HTTP_X_INTERNAL_SECRET=SECRET)
    assert response.status_code == 405
    huge = body(campaign.id, narration="x" * 70_000)
    assert post(client, huge).status_code == 413
    # Past Django's own upload limit too: still a JSON answer.
    response = post(client, body(campaign.id, narration="x" * 3_000_000))
    assert response.status_code == 413 and response.json()["code"] == "too_large"
