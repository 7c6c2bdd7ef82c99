"""The auth API: register, token, refresh (rotation, blacklist, the two-tabs grace),
logout; every bad token is a 401."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.auth_tools import BAD_TOKEN_KINDS, bad_token, bearer, isolate_limits

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def _login(api: APIClient, username: str, password: str = PASSWORD):
    return api.post("/api/auth/token", {"username": username, "password": password}, format="json")


def _refresh(api: APIClient, token: str):
    return api.post("/api/auth/token/refresh", {"refresh": token}, format="json")


def _claims(token: str) -> dict:
    return jwt.decode(token, settings.JWT_SIGNING_KEY, algorithms=["HS256"])


# --- Register -----------------------------------------------------------------------------


def test_register_creates_an_account_that_can_log_in(api):
    response = api.post(
        "/api/auth/register",
        {"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "alice" and body["email"] == "alice@example.com"
    assert "password" not in body
    tokens = _login(api, "alice").json()
    assert set(tokens) == {"access", "refresh"}
    assert _claims(tokens["access"])["user_id"] == body["id"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"username": "ALICE", "password": PASSWORD}, 409, "username_taken"),
        ({"username": "bob", "password": "123"}, 400, "invalid"),
        ({"username": "bob", "password": "password"}, 400, "invalid"),
        ({"username": "bob", "password": PASSWORD, "email": "not-an-email"}, 400, None),
        ({"username": "bad name!", "password": PASSWORD}, 400, "invalid"),
        ({"username": "", "password": PASSWORD}, 400, None),
        ({"password": PASSWORD}, 400, None),
        (["not", "an", "object"], 400, None),
    ],
)
def test_register_refuses_bad_input_with_a_clear_error(api, make_user, payload, status, code):
    make_user("alice")
    response = api.post("/api/auth/register", payload, format="json")
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "code"}
    if code:
        assert body["code"] == code


# --- Token --------------------------------------------------------------------------------


def test_token_lifetimes_are_15_minutes_and_30_days(api, make_user):
    make_user("alice")
    tokens = _login(api, "alice").json()
    access, refresh = _claims(tokens["access"]), _claims(tokens["refresh"])
    assert access["token_type"] == "access" and refresh["token_type"] == "refresh"
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 30 * 24 * 3600


def test_access_token_opens_the_api(api, make_user):
    make_user("alice")
    access = _login(api, "alice").json()["access"]
    assert api.get("/api/campaigns/", **bearer(access)).status_code == 200


def test_wrong_credentials_are_401(api, make_user):
    make_user("alice")
    response = _login(api, "alice", "wrong-password")
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "code"}
    assert _login(api, "alice", "").status_code == 400


def test_unknown_user_and_inactive_user_get_no_token(api, make_user):
    user = make_user("alice")
    user.is_active = False
    user.save()
    assert _login(api, "alice").status_code == 401
    assert _login(api, "nobody").status_code == 401


def test_anonymous_api_request_is_401_with_a_bearer_challenge(api):
    response = api.get("/api/campaigns/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_bad_access_tokens_are_401(api, make_user, kind):
    user = make_user("alice")
    response = api.get("/api/campaigns/", **bearer(bad_token(kind, user)))
    assert response.status_code == 401, kind
    assert set(response.json()) == {"detail", "code"}


# --- Refresh ------------------------------------------------------------------------------


def test_refresh_rotates_and_blacklists_the_old_token(api, make_user, settings):
    settings.JWT_REFRESH_GRACE_SECONDS = 0
    make_user("alice")
    first = _login(api, "alice").json()
    rotated = _refresh(api, first["refresh"])
    assert rotated.status_code == 200
    pair = rotated.json()
    assert set(pair) == {"access", "refresh"} and pair["refresh"] != first["refresh"]
    assert api.get("/api/campaigns/", **bearer(pair["access"])).status_code == 200
    # The old refresh token is spent; the new one works.
    again = _refresh(api, first["refresh"])
    assert again.status_code == 401 and again.json()["code"] == "token_not_valid"
    assert _refresh(api, pair["refresh"]).status_code == 200


def test_two_tabs_refreshing_the_same_token_get_the_same_pair(api, make_user):
    make_user("alice")
    refresh = _login(api, "alice").json()["refresh"]
    one, two = _refresh(api, refresh), _refresh(api, refresh)
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json()
    # Both tabs go on with the same new refresh token.
    assert _refresh(api, one.json()["refresh"]).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_token_all_succeed(make_user):
    make_user("alice")
    refresh = _login(APIClient(), "alice").json()["refresh"]
    results: list = []

    def tab() -> None:
        try:
            results.append(_refresh(APIClient(), refresh))
        finally:
            connection.close()

    threads = [threading.Thread(target=tab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.json()["refresh"] for r in results}) == 1


def test_after_the_grace_the_spent_token_is_refused(api, make_user, settings):
    settings.JWT_REFRESH_GRACE_SECONDS = 1
    make_user("alice")
    refresh = _login(api, "alice").json()["refresh"]
    assert _refresh(api, refresh).status_code == 200
    time.sleep(1.2)
    assert _refresh(api, refresh).status_code == 401


@pytest.mark.parametrize("kind", ["wrong_key", "alg_none", "garbage", "access", "expired"])
def test_refresh_refuses_bad_tokens(api, make_user, kind):
    user = make_user("alice")
    if kind == "access":
        token = str(AccessToken.for_user(user))
    elif kind == "expired":
        expired = RefreshToken.for_user(user)
        expired.set_exp(lifetime=-timedelta(seconds=1))
        token = str(expired)
    else:
        token = bad_token(kind, user)
    response = _refresh(api, token)
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "token_not_valid"


def test_refresh_for_a_deleted_account_is_401_not_500(api, make_user):
    user = make_user("alice")
    refresh = _login(api, "alice").json()["refresh"]
    user.delete()
    assert _refresh(api, refresh).status_code == 401


def test_refresh_refuses_bad_input(api):
    assert api.post("/api/auth/token/refresh", {}, format="json").status_code == 400
    assert api.post("/api/auth/token/refresh", [1], format="json").status_code == 400
    response = api.post("/api/auth/token/refresh", "{not json", content_type="application/json")
    assert response.status_code == 400


# --- Logout -------------------------------------------------------------------------------


def test_logout_blacklists_the_refresh_token(api, make_user):
    make_user("alice")
    tokens = _login(api, "alice").json()
    response = api.post(
        "/api/auth/logout",
        {"refresh": tokens["refresh"]},
        format="json",
        **bearer(tokens["access"]),
    )
    assert response.status_code == 204
    assert _refresh(api, tokens["refresh"]).status_code == 401
    # Logging out twice is harmless.
    again = api.post(
        "/api/auth/logout",
        {"refresh": tokens["refresh"]},
        format="json",
        **bearer(tokens["access"]),
    )
    assert again.status_code == 204


def test_logout_ends_the_refresh_grace_too(api, make_user):
    make_user("alice")
    first = _login(api, "alice").json()
    pair = _refresh(api, first["refresh"]).json()
    api.post(
        "/api/auth/logout", {"refresh": pair["refresh"]}, format="json", **bearer(pair["access"])
    )
    # Replaying the spent token within the grace must not hand back the logged-out pair.
    assert _refresh(api, first["refresh"]).status_code == 401


def test_logout_needs_a_login_and_ones_own_token(api, make_user):
    make_user("alice")
    make_user("bob")
    alice, bob = _login(api, "alice").json(), _login(api, "bob").json()
    anonymous = api.post("/api/auth/logout", {"refresh": alice["refresh"]}, format="json")
    assert anonymous.status_code == 401
    foreign = api.post(
        "/api/auth/logout", {"refresh": alice["refresh"]}, format="json", **bearer(bob["access"])
    )
    assert foreign.status_code == 403
    assert _refresh(api, alice["refresh"]).status_code == 200
    bad = api.post("/api/auth/logout", {"refresh": "junk"}, format="json", **bearer(bob["access"]))
    assert bad.status_code == 400
