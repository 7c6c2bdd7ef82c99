"""Which pages may open a room socket (CONTRACTS §7 "Origins and sessions"): with the
session cookie, only our own origin (scheme, host and port, the scheme as a TLS proxy
forwarded it when configured) or a trusted one; a missing Origin only with `?token=`.
A token socket may come from any origin. Refused sockets close with 4403 after accept.
Checked over the real ASGI application, with the headers a browser or a script sends."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from rpgai.asgi import application
from tests.auth_tools import access_for, isolate_limits
from tests.ws import _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "127.0.0.1:8000"  # the Host a browser sends for http://127.0.0.1:8000/
OPEN = "open"


@pytest.fixture(autouse=True)
def _isolated(settings):
    isolate_limits(settings)


async def _outcome(
    campaign_id,
    user,
    *,
    origin: str | None,
    host: str | None = SITE,
    token: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> str | int | None:
    """OPEN when the room streams (hello answered), else the close code (None when the
    handshake itself was refused)."""
    headers = list(extra or [])
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if host is not None:
        headers.append((b"host", host.encode()))
    query = ""
    if token:
        query = f"?token={await sync_to_async(access_for)(user)}"
    else:
        key = await sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={key}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/campaigns/{campaign_id}/{query}", headers)
    try:
        connected, _ = await comm.connect()
        if not connected:
            return None
        await comm.send_to(text_data=json.dumps({"type": "client.hello", "last_seq": 0}))
        while True:
            output = await comm.receive_output(timeout=3)
            if output["type"] == "websocket.close":
                return output.get("code")
            if json.loads(output["text"])["type"] == "server.ready":
                return OPEN
    finally:
        await comm.disconnect()


async def test_a_cookie_socket_from_our_own_origin_is_let_in(campaign, alice):
    assert await _outcome(campaign.id, alice, origin="http://127.0.0.1:8000") == OPEN


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9000",  # another port: another site on the same machine
        "https://127.0.0.1:8000",  # another scheme
        "http://localhost:8000",  # another host, although one we serve
        "https://evil.example",
        "http://127.0.0.1.evil.example:8000",
        "null",  # sandboxed frames, file: pages
        "not an origin",
    ],
)
async def test_a_cookie_socket_from_another_origin_is_closed_with_4403(campaign, alice, origin):
    assert await _outcome(campaign.id, alice, origin=origin) == 4403


async def test_a_cookie_socket_without_an_origin_is_closed_with_4403(campaign, alice):
    assert await _outcome(campaign.id, alice, origin=None) == 4403


async def test_a_host_we_do_not_serve_is_no_origin_of_ours(campaign, alice):
    """DNS rebinding: the attacker's name pointed at us; Host and Origin agree, but the
    host is not in ALLOWED_HOSTS."""
    outcome = await _outcome(
        campaign.id, alice, origin="http://rebind.example:8000", host="rebind.example:8000"
    )
    assert outcome == 4403


async def test_a_token_socket_without_an_origin_is_let_in(campaign, alice):
    assert await _outcome(campaign.id, alice, origin=None, token=True) == OPEN


async def test_a_token_socket_from_any_origin_is_let_in(campaign, alice):
    """A foreign page could hold the token only by stealing it, and a thief needs no
    browser: refusing its Origin would protect nothing (realtime/origins.py)."""
    assert await _outcome(campaign.id, alice, origin="https://elsewhere.example", token=True) == (
        OPEN
    )


async def test_a_trusted_origin_is_let_in(campaign, alice, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://rpgai.example.com", "https://*.tables.example"]
    for origin in ("https://rpgai.example.com", "https://eu.tables.example"):
        assert await _outcome(campaign.id, alice, origin=origin) == OPEN, origin
    # Trusted means that scheme, host and port only.
    for origin in ("http://rpgai.example.com", "https://rpgai.example.com:8443"):
        assert await _outcome(campaign.id, alice, origin=origin) == 4403, origin


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(campaign, alice, settings):
    """nginx terminates TLS and says so in X-Forwarded-Proto (production sets
    SECURE_PROXY_SSL_HEADER); the browser's Origin is https."""
    settings.ALLOWED_HOSTS = ["rpgai.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    https = [(b"x-forwarded-proto", b"https")]
    assert (
        await _outcome(
            campaign.id,
            alice,
            origin="https://rpgai.example.com",
            host="rpgai.example.com",
            extra=https,
        )
        == OPEN
    )
    # The page was served over plain http: an https origin is another site, and back.
    plain = [(b"x-forwarded-proto", b"http")]
    assert (
        await _outcome(
            campaign.id,
            alice,
            origin="https://rpgai.example.com",
            host="rpgai.example.com",
            extra=plain,
        )
        == 4403
    )
    assert (
        await _outcome(
            campaign.id,
            alice,
            origin="http://rpgai.example.com",
            host="rpgai.example.com",
            extra=https,
        )
        == 4403
    )


async def test_a_forwarded_scheme_counts_only_when_configured(campaign, alice, settings):
    """Without SECURE_PROXY_SSL_HEADER anyone could send X-Forwarded-Proto."""
    settings.SECURE_PROXY_SSL_HEADER = None
    forged = [(b"x-forwarded-proto", b"https")]
    assert await _outcome(campaign.id, alice, origin="https://127.0.0.1:8000", extra=forged) == 4403
    assert await _outcome(campaign.id, alice, origin="http://127.0.0.1:8000", extra=forged) == OPEN
