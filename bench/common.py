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
# A scratch database of its own per run of the benchmarks (BENCH_PG_DB to run beside another).
PG_BENCH_DB = os.environ.get("BENCH_PG_DB", "rpgai_bench")
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


def start_make_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """The worker exactly as an operator starts it: `make worker` itself (the Makefile's
    `worker` target is the one place its command lives), with `env` (REDIS_URL...) over
    the benchmark servers' environment, its output in `log`. In a session of its own:
    stop it with `stop_make_worker`. Its processes are `process_tree(proc.pid)`. (Like
    every make target, it first reinstalls the venv if pyproject.toml changed.)"""
    # Not the flags of a `make bench` around us (-n, a jobserver): a plain `make worker`.
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    child_env = {k: v for k, v in server_env(env).items() if k not in outer}
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "--no-print-directory", "worker"],
            cwd=ROOT,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_make_worker(proc: subprocess.Popen) -> None:
    """Stop what `make worker` started as an operator's Ctrl-C would let it stop: SIGTERM
    to the command(s) make runs (a Celery worker's warm shutdown: it finishes the tasks
    it holds, then stops its own children); SIGKILL to whatever is left after 20 s."""
    import contextlib
    import signal
    import time

    for pid in _children().get(proc.pid, []):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def alive() -> bool:
        proc.poll()  # make itself, once it exits, is reaped here
        try:
            os.killpg(proc.pid, 0)  # any process left in the session's group
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def _children() -> dict[int, list[int]]:
    """Every live process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(text.split(" ", 1)[0]))
    return children


def process_tree(pid: int) -> list[int]:
    """The live descendants of `pid` (not `pid` itself)."""
    children = _children()
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def rss_kib(pids: list[int]) -> int:
    """The summed resident set size of these processes (those that have exited count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


def stop_all(procs: list[subprocess.Popen]) -> None:
    import contextlib

    for proc in procs:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
