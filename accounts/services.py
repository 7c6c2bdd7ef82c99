"""Accounts: registration, the JWT lifecycle (obtain, refresh with rotation, logout), the
account's email, what a password reset ends, and deleting an account.

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
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, UntypedToken

from campaigns import members as campaign_members
from realtime import services as realtime_services
from rpgai.errors import Conflict, DomainError, PermissionDenied

from .models import User

GRACE_WAIT_SECONDS = 5.0
EMAIL_MAX_CHARS = 254


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


# --- The account: its email, a reset password, deletion ----------------------------------


class WrongPassword(PermissionDenied):
    code = "wrong_password"


def password_confirm(*, user: User, password: str) -> None:
    """WrongPassword unless `password` is the account's own (what changes the email or
    deletes the account asks for: a stolen 15-minute token is not enough)."""
    if not isinstance(password, str) or not password or not user.check_password(password):
        raise WrongPassword("That is not your password.")


def user_email_set(*, user: User, email: str, password: str) -> User:
    """Set (or, with "", clear) the account's email, where password reset links go."""
    password_confirm(user=user, password=password)
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
            if len(email) > EMAIL_MAX_CHARS:
                raise ValidationError("too long")
        except ValidationError as exc:
            raise DomainError("Enter a valid email address.", code="invalid") from exc
    user.email = User.objects.normalize_email(email)
    user.save(update_fields=["email"])
    return user


def logins_end(*, user_id: uuid.UUID) -> int:
    """End the account's API logins: every refresh token it holds is blacklisted, and its
    token sockets close (realtime.services.token_sockets_revoke). Returns how many tokens
    were blacklisted. Sessions end by themselves when the password changes (Django checks
    the password's hash on each request)."""
    outstanding = OutstandingToken.objects.filter(user_id=user_id, blacklistedtoken__isnull=True)
    tokens = list(outstanding)
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in tokens], ignore_conflicts=True
    )
    transaction.on_commit(lambda: realtime_services.token_sockets_revoke(user_id=user_id))
    return len(tokens)


def password_reset_done(*, user: User) -> None:
    """After a password reset by email: whoever held the account's API tokens (perhaps the
    reason for the reset) holds them no more."""
    logins_end(user_id=user.id)


def account_delete(
    *, user: User, password: str, session_key: str | None = None, request_id: str = ""
) -> campaign_members.AccountCampaigns:
    """Delete the account (docs/security.md, "Deleting an account"): it leaves every
    campaign under an anonymous name (campaigns.members; a campaign it was alone in is
    deleted), its refresh tokens are blacklisted, and the user row goes with its
    username, email and password hash. Its room sockets close, on every process: in each
    campaign on its `player_left`, token sockets by revocation, and this session's.
    The log's events stay. WrongPassword; SoleGm (409 `sole_gm`, nothing changed) while
    it is the only GM of a campaign with other members."""
    password_confirm(user=user, password=password)
    return account_remove(user_id=user.id, session_key=session_key, request_id=request_id)


def account_remove(
    *, user_id: uuid.UUID, session_key: str | None = None, request_id: str = ""
) -> campaign_members.AccountCampaigns:
    """`account_delete` without the password: for staff in the admin, whose deletion of a
    user must not leave members without accounts in the campaigns' state."""
    with transaction.atomic():
        plan = campaign_members.account_campaigns_leave(user_id=user_id, request_id=request_id)
        logins_end(user_id=user_id)
        # Rows keyed to the user go with it (presence, bans, budgets); the log keeps the
        # bare id in its events, which now leads to no one.
        User.objects.filter(id=user_id).delete()
    realtime_services.session_sockets_close(session_key=session_key)
    return plan


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
