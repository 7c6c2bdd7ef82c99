"""HTTP rate limits on top of django-ratelimit, and the one place that turns a limit into
a response: 429 JSON `{"detail", "code": "rate_limited"}` with `Retry-After`.

Use `rate_limit` on a plain view or on a DRF view method:

    @rate_limit("login", key=client_ip_key, rate="login_ip")

`rate` names an entry of `settings.RATE_LIMITS` (or is a literal "count/period"). Counts
live in the default cache: Redis with REDIS_URL, so they hold across processes.

A plain view's `RateLimited` reaches `ratelimited_view` through django-ratelimit's
middleware (settings.RATELIMIT_VIEW); a DRF view's reaches `rpgai.errors`' exception
handler, which calls `ratelimited_response`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django_ratelimit.core import get_usage
from django_ratelimit.exceptions import Ratelimited

DEFAULT_RETRY_AFTER = 60

Key = Callable[[str, Any], str]


class RateLimited(Ratelimited):
    """Too many requests; `retry_after` is in whole seconds."""

    def __init__(self, retry_after: int = DEFAULT_RETRY_AFTER) -> None:
        super().__init__("too many requests; try again later")
        self.retry_after = max(1, int(retry_after))


def ratelimited_payload(exception: Exception | None) -> tuple[dict[str, str], dict[str, str]]:
    retry_after = getattr(exception, "retry_after", DEFAULT_RETRY_AFTER)
    body = {
        "detail": f"too many requests; try again in {retry_after} seconds",
        "code": "rate_limited",
    }
    return body, {"Retry-After": str(retry_after)}


def ratelimited_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """settings.RATELIMIT_VIEW: the 429 for plain Django views."""
    body, headers = ratelimited_payload(exception)
    return JsonResponse(body, status=429, headers=headers)


def ratelimited_response(exception: Exception) -> Any:
    """The 429 for DRF views (called from the API exception handler)."""
    from rest_framework.response import Response

    body, headers = ratelimited_payload(exception)
    return Response(body, status=429, headers=headers)


# --- Keys ---------------------------------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the META key named by RATELIMIT_IP_META_KEY
    when a proxy passes it in a header. A list (X-Forwarded-For) gives its last address,
    the one our own proxy appended; a value that is not an address falls back to
    REMOTE_ADDR, so a forged header never turns into an error."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    meta_key = settings.RATELIMIT_IP_META_KEY
    value = request.META.get(meta_key, "") if meta_key else remote
    candidate = value.rsplit(",", 1)[-1].strip() if value else remote
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return remote
    if address.version == 6:
        # One client usually owns a whole /64.
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def client_ip_key(group: str, request: Any) -> str:
    return client_ip(request)


def user_key(group: str, request: Any) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip(request)}"


def username_key(group: str, request: Any) -> str:
    """The username a login tries, from JSON or a form; brute force on one account is
    throttled whatever the number of addresses it comes from."""
    data = getattr(request, "data", None)
    if data is None or not hasattr(data, "get"):
        data = request.POST
    username = data.get("username", "") if hasattr(data, "get") else ""
    return str(username).strip().lower()[:150] if isinstance(username, str) else ""


# --- Checking -----------------------------------------------------------------------------


def _rate(rate: str) -> str:
    return settings.RATE_LIMITS.get(rate, rate)


def check_rate(request: Any, *, group: str, key: Key, rate: str) -> None:
    """Count this request against `group` and raise `RateLimited` when over the rate."""
    value = key(group, request)
    if not value:
        return
    usage = get_usage(
        request, group=group, key=lambda g, r: value, rate=_rate(rate), increment=True
    )
    if usage is not None and usage["should_limit"]:
        raise RateLimited(retry_after=usage["time_left"])


def rate_limit(
    group: str, *, key: Key, rate: str, methods: tuple[str, ...] = ("POST",)
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a view function or a DRF view method (with `self` first)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            request = next(a for a in args if hasattr(a, "META"))
            if request.method in methods:
                check_rate(request, group=group, key=key, rate=rate)
            return view(*args, **kwargs)

        return wrapped

    return decorator
