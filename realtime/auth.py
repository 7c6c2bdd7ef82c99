"""WebSocket authentication by `?token=<JWT access token>` (CONTRACTS §3).

The token is verified locally (signature, expiry, type `access`) once, at connect; the
user is loaded then, once. Each later message only compares the token's `exp` with the
clock (`token_expired`): no database round trip per message. A bad or expired token
leaves an anonymous user, which the room closes with 4401, even if a session cookie
came along: a client that sends a token means that token.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

TOKEN_PARAM = "token"


class JWTAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        raw = query_token(scope)
        if raw is not None:
            scope = dict(scope)
            claims = access_claims(raw)
            user = await _active_user(claims[api_settings.USER_ID_CLAIM]) if claims else None
            scope["user"] = user or AnonymousUser()
            scope["token_exp"] = claims["exp"] if user else None
            # When it was issued: an API logout revokes the user's tokens issued until then.
            scope["token_iat"] = int(claims.get("iat") or 0) if user else None
        return await super().__call__(scope, receive, send)


def query_token(scope: dict[str, Any]) -> str | None:
    """The `token` query parameter, "" when given empty, None when absent."""
    query = scope.get("query_string", b"")
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get(TOKEN_PARAM)
    return values[0] if values else None


def access_claims(raw: str) -> dict[str, Any] | None:
    """The claims of a valid access token, or None (forged, `alg: none`, expired, not an
    access token, or without a user id)."""
    if not raw or len(raw) > 4096:
        return None
    try:
        token = AccessToken(raw)
    except TokenError:
        return None
    claims = dict(token.payload)
    try:
        uuid.UUID(str(claims.get(api_settings.USER_ID_CLAIM)))
        int(claims["exp"])
        int(claims.get("iat") or 0)
    except (ValueError, TypeError, KeyError):
        return None
    return claims


@database_sync_to_async
def _active_user(user_id: str) -> Any:
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def token_expired(scope: dict[str, Any]) -> bool:
    """True once the access token this socket was opened with has expired."""
    exp = scope.get("token_exp")
    return exp is not None and time.time() >= exp
