"""Operator endpoints: `/healthz`, `/readyz` and `/metrics` (CONTRACTS §4).

/metrics is refused (403) unless the request comes from an address in
METRICS_ALLOWED_IPS (addresses or networks, e.g. "10.0.0.0/8"; default loopback only)
or carries `Authorization: Bearer <METRICS_TOKEN>` (when METRICS_TOKEN is set).
Either one is enough. The address is REMOTE_ADDR: behind a proxy, run daphne with
--proxy-headers so that it is the client's, not the proxy's.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import health, metrics


@lru_cache(maxsize=8)
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in allowed)


def metrics_settings_check() -> None:
    """Refuse to start with an unreadable METRICS_ALLOWED_IPS (rpgai.apps.OpsConfig)."""
    allowed = tuple(getattr(settings, "METRICS_ALLOWED_IPS", ()) or ())
    for entry in allowed:
        try:
            ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"METRICS_ALLOWED_IPS: {entry!r} is not an IP address or network "
                "(examples: 127.0.0.1, 10.0.0.0/8, ::1)"
            ) from None


def metrics_allowed(request: HttpRequest) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "") or ""
    header = request.headers.get("Authorization", "")
    if (
        token
        and header[:7].lower() == "bearer "
        and hmac.compare_digest(header[7:].strip().encode(), token.encode())
    ):
        return True
    allowed = tuple(getattr(settings, "METRICS_ALLOWED_IPS", ()) or ())
    try:
        address = ipaddress.ip_address((request.META.get("REMOTE_ADDR") or "").strip())
    except ValueError:
        return False
    return any(address in network for network in _networks(allowed))


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return JsonResponse(
            {
                "detail": "metrics are open to the addresses in METRICS_ALLOWED_IPS or to "
                "a bearer METRICS_TOKEN",
                "code": "forbidden",
            },
            status=403,
        )
    return HttpResponse(
        generate_latest(metrics.registry_for_scrape()), content_type=CONTENT_TYPE_LATEST
    )


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
