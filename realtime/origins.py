"""Which pages may open a room socket (CONTRACTS §7 "Origins and sessions").

A socket that comes with the session cookie is the browser acting for the user, whatever
page asked it to: without a check, any site the user visits could open their room (a
cross-site WebSocket hijack; cookies go along with cross-site WebSocket handshakes). So a
cookie socket needs an `Origin` equal to the site's own, scheme, host and port (as
Django's CSRF check compares them), or one of `CSRF_TRUSTED_ORIGINS` (the same list the
pages' CSRF check trusts, e.g. the public https origin behind a TLS proxy). The site's
own origin is the `Host` header (which must be in `ALLOWED_HOSTS`) with the scheme of
the connection, or, when `SECURE_PROXY_SSL_HEADER` is set (production), the scheme the
proxy forwarded (`X-Forwarded-Proto`), exactly as `request.is_secure()` decides for
pages. A missing `Origin` means a client that is not a browser: refused with the cookie.

A socket that comes with `?token=` is let in from any origin, or none. Browsers never
attach a token by themselves: a page on another origin could only hold one it stole,
and a thief needs no browser (a script sends whatever `Origin` it likes, or none).
Refusing foreign origins there would protect nothing and would lock out legitimate
clients embedded elsewhere.

Refused sockets are accepted and closed with 4403: a close before accept is an HTTP 403
that a browser reports only as 1006.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from .auth import query_token

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host (lower case, no brackets), port


class OriginCheck:
    """ASGI middleware for WebSockets: refuse a socket whose `Origin` may not use the
    cookie it carries, before any session or user is loaded."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            origin = header(scope, b"origin")
            log.info("room socket refused: origin %r", (origin or "(none)")[:100])
            await receive()  # the websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN})
            return None
        return await self.app(scope, receive, send)


def origin_allowed(scope: dict[str, Any]) -> bool:
    if query_token(scope) is not None:
        return True  # a token socket: see the module's docstring
    raw = header(scope, b"origin")
    origin = parse_origin(raw) if raw is not None else None
    if origin is None:  # missing, "null" (sandboxed frames, file: pages) or garbage
        return False
    if trusted(origin, raw or ""):
        return True
    host = header(scope, b"host")
    if host is None:
        # Only an in-process caller (a test's WebsocketCommunicator) builds a scope
        # without Host: daphne refuses a handshake without one, as HTTP/1.1 requires it.
        # Then all we can ask is that the origin names one of our hosts.
        return validate_host(_bracketed(origin[1]), _allowed_hosts())
    return origin == own_origin(scope, host)


def own_origin(scope: dict[str, Any], host: str) -> Origin | None:
    """The site's origin as this request reached it, or None for a Host we do not serve."""
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    scheme = "https" if _secure(scope) else "http"
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, domain.strip("[]").lower(), number


def parse_origin(raw: str) -> Origin | None:
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def trusted(origin: Origin, raw: str) -> bool:
    """Whether the origin is one of CSRF_TRUSTED_ORIGINS (`https://*.example.com` matches
    the subdomains of example.com, as for Django's CSRF check)."""
    for pattern in settings.CSRF_TRUSTED_ORIGINS:
        if "://*." in pattern:
            scheme, _, netloc = pattern.partition("://")
            if scheme.lower() == origin[0] and is_same_domain(
                urlsplit(raw.strip()).netloc.lower(), netloc[1:].lower()
            ):
                return True
        elif parse_origin(pattern) == origin:
            return True
    return False


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _secure(scope: dict[str, Any]) -> bool:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, expected = proxy
        # Django's META name (HTTP_X_FORWARDED_PROTO) as the ASGI header x-forwarded-proto.
        wanted = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
        value = header(scope, wanted)
        if value is not None:
            return value.split(",", 1)[0].strip() == expected
    return scope.get("scheme") in ("wss", "https")


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]  # Django's own default when debugging
    return hosts


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
