"""Browser safety: Origin on WebSockets, CSRF on pages and session-authenticated API
calls, security headers, production settings (`check --deploy` clean, secure cookies,
HSTS), and a server that refuses to start with DEBUG off and a development key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.test import Client
from rest_framework.test import APIClient

from tests.auth_tools import access_for, isolate_limits
from tests.processes import ROOT
from tests.ws import Room

pytestmark = pytest.mark.django_db

STRONG = {
    "SECRET_KEY": "s" * 20 + "-production-secret-key-0123456789",
    "JWT_SIGNING_KEY": "j" * 20 + "-production-jwt-signing-key-0123456789",
    "INTERNAL_TOOLS_SECRET": "i" * 20 + "-production-internal-secret-0123456789",
}


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


def _production(tmp_path, **overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "rpgai.settings",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "rpgai.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://rpgai.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        **STRONG,
    }
    env.update(overrides)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# --- WebSocket Origin -------------------------------------------------------------------------


class TokenRoom(Room):
    def __init__(self, campaign_id, token, headers):
        super().__init__(campaign_id, None, headers)
        self.token = token

    async def open(self):
        from channels.testing import WebsocketCommunicator

        from rpgai.asgi import application

        self.comm = WebsocketCommunicator(
            application, f"/ws/campaigns/{self.campaign_id}/?token={self.token}", self.extra_headers
        )
        return await self.comm.connect()


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"http://127.0.0.1.evil.example",
        b"null",
        None,
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_a_foreign_or_missing_origin_may_not_use_the_cookie_but_a_token_may(
    campaign, alice, origin
):
    """A browser sends the cookie to any page's socket; only our own pages may use it. A
    token is never sent by a browser on its own, so it may come from anywhere, or from a
    client that sends no Origin (CONTRACTS §7 "Origins and sessions")."""
    token = await sync_to_async(access_for)(alice)
    headers = [] if origin is None else [(b"origin", origin)]
    token_room = TokenRoom(campaign.id, token, headers)
    connected, _ = await token_room.open()
    assert connected
    assert (await token_room.hello(0))[-1]["type"] == "server.ready"
    cookie_room = Room(campaign.id, alice, headers=headers)
    connected, _ = await cookie_room.open()
    assert connected
    assert await cookie_room.closed_with() == 4403
    for room in (token_room, cookie_room):
        await room.close()


@pytest.mark.django_db(transaction=True)
async def test_our_own_origin_is_let_in(campaign, alice):
    token = await sync_to_async(access_for)(alice)
    room = TokenRoom(campaign.id, token, [(b"origin", b"http://localhost:8000")])
    connected, _ = await room.open()
    assert connected
    assert (await room.hello(0))[-1]["type"] == "server.ready"
    await room.close()


# --- CSRF and headers -------------------------------------------------------------------------


def test_pages_need_a_csrf_token(make_user):
    make_user("alice", "pw-Secret-123")
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/login/", {"username": "alice", "password": "pw-Secret-123"})
    assert response.status_code == 403
    form = browser.get("/login/")
    token = form.cookies["csrftoken"].value
    response = browser.post(
        "/login/",
        {"username": "alice", "password": "pw-Secret-123", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302


def test_session_authenticated_api_writes_need_csrf_but_bearer_ones_do_not(make_user):
    user = make_user("alice")
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    refused = browser.post("/api/campaigns/", {"name": "Ashes"}, format="json")
    assert refused.status_code == 403
    script = APIClient(enforce_csrf_checks=True)
    accepted = script.post(
        "/api/campaigns/",
        {"name": "Ashes"},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {access_for(user)}",
    )
    assert accepted.status_code == 201


def test_security_headers():
    response = Client().get("/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


# --- Production settings ----------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = _run(
        _production(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookies_and_hsts(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.SECURE_HSTS_SECONDS >= 31536000, s.SECURE_SSL_REDIRECT, s.DEBUG)"
    )
    result = _run(_production(tmp_path), "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True", "True", "False"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", None),
        ("JWT_SIGNING_KEY", None),
        ("INTERNAL_TOOLS_SECRET", None),
        ("SECRET_KEY", "dev-only-insecure-secret-key-change-me-0123456789abcdef"),
        ("JWT_SIGNING_KEY", "dev-only-insecure-jwt-signing-key-change-me-0123456789"),
        ("JWT_SIGNING_KEY", "short"),
    ],
)
def test_the_server_refuses_to_start_with_debug_off_and_a_development_key(tmp_path, name, value):
    env = _production(tmp_path)
    if value is None:
        del env[name]  # unset: the development default applies
    else:
        env[name] = value
    result = _run(env, "-c", "import django; django.setup()")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr
    # The same for the ASGI application daphne would load.
    result = _run(env, "-c", "import rpgai.asgi")
    assert result.returncode != 0 and name in result.stderr


def test_the_same_keys_are_fine_in_development(tmp_path):
    env = _production(tmp_path, DEBUG="1")
    for name in STRONG:
        del env[name]
    result = _run(env, "-c", "import django; django.setup()")
    assert result.returncode == 0, result.stderr
