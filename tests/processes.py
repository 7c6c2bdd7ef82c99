"""Run real server processes (daphne, Celery) against the test database for service tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that uses this test run's database."""
    db = connection.settings_dict
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="rpgai.settings", PYTHONUNBUFFERED="1")
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env.update(extra)
    return env


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not start")


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def daphne(port: int, **env: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "rpgai.asgi:application",
        ],
        cwd=ROOT,
        env=test_env(**env),
    )
    try:
        _wait_for_port(port, proc)
        yield proc
    finally:
        _stop(proc, timeout=10)


@contextlib.contextmanager
def celery_worker(
    queues: str = "turns,default",
    *,
    pool: str = "threads",
    concurrency: int = 8,
    log_file: Path | None = None,
    loglevel: str = "WARNING",
    **env: str,
) -> Iterator[subprocess.Popen]:
    """A Celery worker on this test run's database, by default as `make worker` starts
    the turns worker (the Makefile's TURNS_WORKER); its output goes to `log_file` when
    given (a test reads the worker's log lines there)."""
    out = log_file.open("wb") if log_file is not None else None
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "rpgai", "worker", "-Q", queues),
            *("-P", pool, "-c", str(concurrency), "--loglevel", loglevel),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=ROOT,
        env=test_env(**env),
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
    )
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}")
        yield proc
    finally:
        _stop(proc, timeout=15)
        if out is not None:
            out.close()


# --- A private Redis -------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen]:
    """A private, throw-away Redis (no persistence)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, timeout=10)
        yield proc
    finally:
        _stop(proc, timeout=10)


# --- llama-cpp-python's OpenAI-compatible server (.ci/llama_server.sh builds it) --------------


@contextlib.contextmanager
def llama_server(
    *, python: str, model: str, alias: str, log_file: Path, n_ctx: int = 4096
) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free port; yields its /v1 URL."""
    port = free_port()
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(python, "-m", "llama_cpp.server", "--model", model, "--model_alias", alias),
                *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)),
                # Reading our prompt (~2,400 tokens) takes most of a turn: both cores read it.
                *("--n_threads_batch", "2", "--verbose", "False"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_port(port, proc, timeout=120)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            _stop(proc, timeout=15)


# --- A private PostgreSQL ---------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are (`pg_config --bindir`, else the newest
    /usr/lib/postgresql/<version>/bin), or None when no PostgreSQL server is installed."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


class PostgresServer:
    """A private, throw-away PostgreSQL cluster on a free port, to stop and start at will
    (the shared server on 5432 is never touched). Data and unix sockets live in a
    temporary folder. initdb and postgres refuse to run as root: as root, they run as
    the `postgres` user. No durability (fsync off): it is for tests."""

    def __init__(self, root: Path, port: int, bindir: Path) -> None:
        self.root, self.port, self.bindir = root, port, bindir
        self.data = root / "data"
        self.logfile = root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}"
            )

    def init(self) -> None:
        self._check(
            self._run(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ),
            "initdb",
        )  # fmt: skip

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=40",
            ]
        )
        self._check(
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                "-w", "-t", "60", "start",
            ),
            "pg_ctl start",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError(f"private PostgreSQL on port {self.port} is not ready")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, the server shuts down cleanly (a restart by an
        operator or a container stop); `immediate`: as if it crashed."""
        self._check(
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"),
            f"pg_ctl stop -m {mode}",
        )

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same data and port."""
        self.stop(mode)
        self.start()


@contextlib.contextmanager
def postgres_server(port: int | None = None) -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster, started; stopped and deleted afterwards whatever
    happened. Raises RuntimeError when no PostgreSQL server binaries are installed."""
    import pwd
    import shutil
    import tempfile

    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) are installed")
    root = Path(tempfile.mkdtemp(prefix="rpgai-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(root, port or free_port(), bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            if server.running():
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
