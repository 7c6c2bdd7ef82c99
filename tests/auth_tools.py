"""Tokens for tests: real ones from simplejwt, and every kind of bad one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

BAD_TOKEN_KINDS = ["expired", "wrong_key", "alg_none", "refresh_as_access", "garbage"]


def access_for(user: Any, lifetime: timedelta | None = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


def bad_token(kind: str, user: Any) -> str:
    """An access token the server must refuse, for `user`."""
    if kind == "expired":
        token = AccessToken.for_user(user)
        token.set_exp(from_time=timezone.now() - timedelta(hours=1))
        return str(token)
    if kind == "refresh_as_access":
        return str(RefreshToken.for_user(user))
    claims = {
        "token_type": "access",
        "exp": int((timezone.now() + timedelta(minutes=10)).timestamp()),
        "iat": int(timezone.now().timestamp()),
        "jti": uuid.uuid4().hex,
        "user_id": str(user.id),
    }
    if kind == "wrong_key":
        return jwt.encode(claims, "not-the-" + settings.JWT_SIGNING_KEY, algorithm="HS256")
    if kind == "alg_none":
        return jwt.encode(claims, None, algorithm="none")
    if kind == "garbage":
        return "not.a.jwt"
    raise ValueError(kind)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def isolate_limits(settings: Any) -> None:
    """Fresh rate-limit counters and buckets for one test (the cache may be a Redis
    shared with other runs), and a fast password hasher."""
    run = uuid.uuid4().hex[:12]
    settings.RATELIMIT_CACHE_PREFIX = f"rl-test-{run}:"
    settings.THROTTLE_CACHE_PREFIX = f"throttle-test-{run}"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
