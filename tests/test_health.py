"""/healthz and /readyz: alive, and ready only when the database, the channel layer and
the broker answer; not ready while Redis is unreachable, ready again when it is back."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _point_redis_at(settings, url: str) -> None:
    """What settings.py derives from REDIS_URL, pointed at `url`."""
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "capacity": 1000, "expiry": 30},
        }
    }
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    }
    settings.CELERY_BROKER_URL = url


def _readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_healthz_is_alive_without_touching_anything(settings):
    _point_redis_at(settings, f"redis://127.0.0.1:{free_port()}/0")
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_ready_as_configured(settings):
    status, body = _readyz()
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "channel_layer", "broker"}
    assert all(check["ok"] for check in body["checks"].values())
    if not settings.REDIS_URL:  # embedded: tasks run in the web process
        assert body["checks"]["broker"]["detail"] == "in-process"


def test_readyz_embedded_reports_an_in_process_broker(settings):
    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.CELERY_BROKER_URL = "memory://"
    status, body = _readyz()
    assert status == 200, body
    assert body["checks"]["broker"] == {
        "ok": True,
        "detail": "in-process",
        "ms": body["checks"]["broker"]["ms"],
    }


def test_readyz_fails_while_redis_is_unreachable_and_recovers(settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 2.0
    original = dict(
        REDIS_URL=settings.REDIS_URL,
        CHANNEL_LAYERS=settings.CHANNEL_LAYERS,
        CACHES=settings.CACHES,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    # A closed port, and a password that must not leak into the answer.
    _point_redis_at(settings, f"redis://:hunter2-pw@127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    response = Client().get("/readyz")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]
    assert "hunter2-pw" not in response.content.decode()

    for name, value in original.items():
        setattr(settings, name, value)
    status, body = _readyz()
    assert status == 200, body


def test_readyz_is_read_only():
    assert Client().post("/readyz").status_code == 405
    assert Client().delete("/healthz").status_code == 405


# --- With a real Redis that stops and starts again -------------------------------------------


@contextlib.contextmanager
def _redis_server(port: int) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            ping = subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            )
            if ping.stdout.strip() == "PONG":
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _ready_within(seconds: float) -> tuple[int, dict]:
    """Readiness after a restart may take a probe or two (stale pooled connections)."""
    deadline = time.monotonic() + seconds
    while True:
        status, body = _readyz()
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


@pytest.mark.services
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_readyz_follows_a_redis_that_stops_and_comes_back(settings):
    """Our own redis-server on a free port (nothing shared is stopped)."""
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 2.0
    port = free_port()
    _point_redis_at(settings, f"redis://127.0.0.1:{port}/0")

    with _redis_server(port):
        status, body = _ready_within(5)
        assert status == 200, body
        assert "detail" not in body["checks"]["broker"]  # a real ping, not "in-process"

    status, body = _readyz()
    assert status == 503, body
    assert not body["checks"]["channel_layer"]["ok"]
    assert not body["checks"]["broker"]["ok"]
    assert body["checks"]["database"]["ok"]

    with _redis_server(port):
        status, body = _ready_within(10)
        assert status == 200, body


def test_probes_are_not_redirected_to_https(settings):
    """With SECURE_SSL_REDIRECT on (production), plain-HTTP probes inside the network
    still get their answer; everything else is redirected."""
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/campaigns/").status_code == 301
