"""Accounts: registration and the JWT lifecycle (obtain, refresh with rotation, logout).

Refresh tokens rotate: each refresh blacklists the token it was given and returns a new
pair. Two tabs refreshing the same token at once would log one of them out, so the pair
issued for a token is remembered in the cache for JWT_REFRESH_GRACE_SECONDS and a repeat
within that window gets the same pair. The cache entry `jwt:rotating:<jti>` is taken
with an atomic add, so across processes only one request rotates a given token.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken, UntypedToken

from realtime import services as realtime_services
from rpgai.errors import Conflict, DomainError, PermissionDenied

from .models import User

GRACE_WAIT_SECONDS = 5.0


# --- Registration -----------------------------------------------------------------------


def user_register(*, username: str, password: str, email: str = "") -> User:
    """A new account. Usernames are unique regardless of case ("Alice" and "alice" would
    be two people nobody can tell apart at the table)."""
    username = username.strip()
    email = email.strip()
    candidate = User(username=username, email=email)
    try:
        User.username_validator(username)
        password_validation.validate_password(password, user=candidate)
    except ValidationError as exc:
        raise DomainError(" ".join(exc.messages), code="invalid") from exc
    try:
        with transaction.atomic():
            if User.objects.filter(username__iexact=username).exists():
                raise Conflict("that username is taken", code="username_taken")
            return get_user_model().objects.create_user(
                username=username, password=password, email=email
            )
    except IntegrityError as exc:
        raise Conflict("that username is taken", code="username_taken") from exc


# --- Tokens -------------------------------------------------------------------------------


def tokens_for_user(*, user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def token_refresh(*, refresh: str) -> dict[str, str]:
    """A new `access` and `refresh` for a valid refresh token, which is blacklisted.
    Raises TokenError for a bad, expired, blacklisted or foreign token."""
    claims = _refresh_claims(refresh)
    grace = settings.JWT_REFRESH_GRACE_SECONDS
    if grace <= 0:
        return _rotate(refresh)
    cache = caches["default"]
    jti = claims[api_settings.JTI_CLAIM]
    claim_key, pair_key = f"jwt:rotating:{jti}", f"jwt:rotated:{jti}"
    if not cache.add(claim_key, 1, timeout=grace):
        return _pair_issued_before(pair_key)
    try:
        pair = _rotate(refresh)
    except BaseException:
        cache.delete(claim_key)
        raise
    cache.set(pair_key, pair, timeout=grace)
    return pair


def token_blacklist(*, refresh: str, user_id: uuid.UUID) -> None:
    """Logout: the refresh token can no longer be used. Its access tokens live on for the
    HTTP API until they expire (15 minutes), but the user's room sockets opened with an
    access token issued until now close, and such tokens open no new one
    (realtime.services.token_sockets_revoke: simplejwt does not tie an access token to
    its refresh token, so this cannot be narrower). Blacklisting twice is fine."""
    claims = _refresh_claims(refresh)
    if str(claims.get(api_settings.USER_ID_CLAIM)) != str(user_id):
        raise PermissionDenied("that refresh token belongs to another account")
    RefreshToken(refresh, verify=False).blacklist()
    realtime_services.token_sockets_revoke(user_id=user_id)


def _refresh_claims(raw: str) -> dict[str, Any]:
    """Signature, expiry and type checked; the blacklist is not (see token_refresh)."""
    token = UntypedToken(raw)
    if token.get(api_settings.TOKEN_TYPE_CLAIM) != RefreshToken.token_type:
        raise TokenError("Token has wrong type")
    if not token.get(api_settings.JTI_CLAIM):
        raise TokenError("Token has no id")
    return dict(token.payload)


def _rotate(raw: str) -> dict[str, str]:
    refresh = RefreshToken(raw)  # raises if blacklisted
    user = User.objects.filter(pk=_user_pk(refresh.get(api_settings.USER_ID_CLAIM))).first()
    if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
        raise TokenError("No active account found for the given token.")
    access = str(refresh.access_token)
    refresh.blacklist()
    refresh.set_jti()
    refresh.set_exp()
    refresh.set_iat()
    refresh.outstand()
    return {"access": access, "refresh": str(refresh)}


def _pair_issued_before(pair_key: str) -> dict[str, str]:
    """The pair another request issued for this token (it may still be committing)."""
    cache = caches["default"]
    deadline = time.monotonic() + GRACE_WAIT_SECONDS
    while True:
        pair = cache.get(pair_key)
        if pair is not None:
            break
        if time.monotonic() > deadline:
            raise TokenError("Token is blacklisted")
        time.sleep(0.05)
    # A logout since then blacklisted the new refresh token: the grace is over too.
    RefreshToken(pair["refresh"])
    return pair


def _user_pk(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
