"""Health checks for load balancers, orchestrators and the compose file.

`/healthz`: the process is alive and serving (touches nothing else, so a database
outage does not get every web process restarted).
`/readyz`: this process can do its job: the database answers, the channel layer
carries a message (a real group_add/group_send/receive round trip), and the Celery
broker answers a ping (Redis when configured; embedded it reports "in-process").
200 when every check passes, else 503; the JSON names each check either way. Checks
run concurrently, each within HEALTH_CHECK_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from rpgai.logging import scrub_text

log = structlog.get_logger(__name__)

CheckResult = dict[str, Any]


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    checks = await readiness_checks()
    ready = all(check["ok"] for check in checks.values())
    if not ready:
        failing = {name: check.get("error") for name, check in checks.items() if not check["ok"]}
        log.warning("health.not_ready", failing=failing)
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


async def readiness_checks() -> dict[str, CheckResult]:
    timeout = float(getattr(settings, "HEALTH_CHECK_TIMEOUT_SECONDS", 3.0))
    named: dict[str, Callable[[], Awaitable[str | None]]] = {
        "database": _check_database,
        "channel_layer": _check_channel_layer,
        "broker": _check_broker,
    }
    results = await asyncio.gather(*(_timed(check, timeout) for check in named.values()))
    return dict(zip(named, results, strict=True))


async def _timed(check: Callable[[], Awaitable[str | None]], timeout: float) -> CheckResult:
    started = time.monotonic()
    try:
        detail = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        result: CheckResult = {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:
        # The message may name a host; scrub_text takes out any password in a URL.
        result = {"ok": False, "error": scrub_text(f"{type(exc).__name__}: {exc}")[:300]}
    else:
        result = {"ok": True}
        if detail:
            result["detail"] = detail
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


async def _check_database() -> str | None:
    await sync_to_async(_database_select_one)()
    return None


def _database_select_one() -> None:
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_channel_layer() -> str | None:
    # A layer instance of its own, closed afterwards: the process's shared instance keeps
    # per-event-loop receive state (channels_redis), and a probe must not leave any behind
    # for the consumers (nor depend on theirs).
    if DEFAULT_CHANNEL_LAYER not in channel_layers:
        raise RuntimeError("no channel layer is configured")
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    nonce = uuid.uuid4().hex
    group = f"health.{nonce}"
    try:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            await layer.group_send(group, {"type": "health.ping", "nonce": nonce})
            while True:
                message = await layer.receive(channel)
                if message.get("nonce") == nonce:
                    return None
        finally:
            await layer.group_discard(group, channel)
    finally:
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close_pools(), 1.0)


async def _check_broker() -> str | None:
    url = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "in-process"
    import redis.asyncio as aioredis

    timeout = float(getattr(settings, "HEALTH_CHECK_TIMEOUT_SECONDS", 3.0))
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
    )
    try:
        if not await client.ping():
            raise RuntimeError("the broker did not answer PONG")
    finally:
        await client.aclose()
    return None
