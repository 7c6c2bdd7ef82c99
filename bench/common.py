"""Shared helpers for the benchmarks: a scratch PostgreSQL database, percentiles, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_BENCH_DB = "rpgai_bench"
REDIS_BENCH_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def pg_bench_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_BENCH_DB


def fresh_pg_database() -> str:
    """Drop and re-create the scratch database, migrate it, and return its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    url = pg_bench_url()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=dict(os.environ, DATABASE_URL=url),
        check=True,
    )
    return url


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


# --- Server processes the benchmarks run --------------------------------------------------

# What every benchmark server runs with, under what the benchmark itself sets: quiet
# logs, and the rate limits lifted. A benchmark plays faster than any table, from one
# address; it measures the realtime path, not the limiters (tests/test_rate_limits.py
# covers those). Speech is off unless a benchmark turns it on (bench/voice_latency.py).
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "rpgai.settings",
    "LOG_LEVEL": "WARNING",
    "TTS_PROVIDER": "none",
    "MODEL_CALLS_PER_USER_PER_MINUTE": "100000",
    "MODEL_CALLS_PER_CAMPAIGN_PER_MINUTE": "100000",
    "WS_THROTTLE_CONNECTION_BURST": "100000",
    "WS_THROTTLE_CONNECTION_RATE": "100000",
    "WS_THROTTLE_USER_BURST": "100000",
    "WS_THROTTLE_USER_RATE": "100000",
    "WS_THROTTLE_CAMPAIGN_BURST": "100000",
    "WS_THROTTLE_CAMPAIGN_RATE": "100000",
}


def server_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a benchmark server: ours, then SERVER_ENV, then `env`."""
    return {**os.environ, **SERVER_ENV, **env}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import contextlib
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server on port {port} exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start")


def start_daphne(port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(
        [*command, "rpgai.asgi:application"],
        cwd=ROOT,
        env=server_env(env),
        stderr=subprocess.DEVNULL,
    )


def start_worker(env: dict[str, str], queues: str, *pool: str) -> subprocess.Popen:
    """A Celery worker; `pool` is extra options such as ("-P", "solo") or ("-c", "2")."""
    command = [sys.executable, "-m", "celery", "-A", "rpgai", "worker", "-Q", queues, *pool]
    return subprocess.Popen(
        [*command, "--loglevel", "WARNING"],
        cwd=ROOT,
        env=server_env(env),
        stderr=subprocess.DEVNULL,
    )


def stop_all(procs: list[subprocess.Popen]) -> None:
    import contextlib

    for proc in procs:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
