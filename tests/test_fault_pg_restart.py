"""PostgreSQL really restarts (issue 10): consumers and workers recover on their own.

The shared PostgreSQL on 5432 is never stopped: this module starts a PRIVATE cluster
(tests.processes.postgres_server) on a free port, migrates it, and runs daphne and a
Celery worker (persistent connections, CONN_MAX_AGE=600, as in production) and a private
Redis against it. The cluster is then stopped (`pg_ctl stop -m fast`: every connection is
cut, as by an operator's restart or a container stop) and started again on the same data
and port. Neither daphne nor the worker is restarted.

- between turns: during the outage an action gets a WebSocket `error` (code
  `unavailable`) or an HTTP 503 with Retry-After, at once; afterwards the same socket
  and HTTP work again, the refused actions sent again (same action_id) are recorded once
  and answered by the worker.
- in the middle of a turn: the turn, waiting on its model, holds no connection; it
  commits on a new one when the answer is in (or, if the database is not back by then,
  is run again), and the action is answered exactly once.
- a longer outage in the middle of a turn: the turn cannot commit and is tried again
  until the database is back.

The pytest process's own Django database is the shared test database, so the data of
the private cluster is made by a `manage.py shell` child, and the log is read back over
psycopg. tests/test_faults.py keeps its simulated "restart" (pg_terminate_backend of the
test's connections): connections cut while the server stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import websockets

from tests.openai_server import Answer, OpenAIServer
from tests.processes import (
    ROOT,
    PostgresServer,
    celery_worker,
    daphne,
    free_port,
    postgres_bindir,
    postgres_server,
    redis_server,
)
from tests.test_faults import Client, _wait_for

pytestmark = [pytest.mark.services]

DB_NAME = "rpgai"
WEB_APP, WORKER_APP = "rpgai-web", "rpgai-worker"  # application_name of their connections
OUTAGE_SECONDS = 25  # longer than the 2 + 4 + 8 s the turn task once retried for


# --- The private cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster with the migrated schema, for this module only."""
    if postgres_bindir() is None:
        pytest.skip("SERVICE TEST SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl)")
    with postgres_server() as server:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
        _manage(server, "migrate", "--noinput", timeout=300)
        yield server


def _manage(server: PostgresServer, *args: str, timeout: float = 120) -> str:
    from tests.processes import test_env  # not at module level: pytest would collect it

    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=test_env(DATABASE_URL=server.database_url(DB_NAME)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


SEED = """
import json, uuid
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from campaigns.services import campaign_create, campaign_join

User = get_user_model()
tag = uuid.uuid4().hex[:8]
gm = User.objects.create_user(username=f"gm-{tag}", password="pw-Secret-123")
alice = User.objects.create_user(username=f"alice-{tag}", password="pw-Secret-123")
campaign = campaign_create(
    name="The Sunken Crown", edition="5e", creator=gm,
    scene={"location": "The Drowned Lantern inn", "description": "Rain on the shutters."},
)
campaign_join(invite_code=campaign.invite_code, user=alice, display_name="Alice")
token = str(AccessToken.for_user(alice))
print("SEED " + json.dumps({"campaign_id": str(campaign.id), "token": token}))
"""


def seed(server: PostgresServer) -> dict[str, str]:
    """A campaign with a GM and a player (Alice) in the private cluster, and Alice's
    access token (signed with the same JWT_SIGNING_KEY the child processes get)."""
    out = _manage(server, "shell", "-c", SEED)
    [line] = [line for line in out.splitlines() if line.startswith("SEED ")]
    return json.loads(line.removeprefix("SEED "))


def query(server: PostgresServer, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(server.database_url(DB_NAME), autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def app_connections(server: PostgresServer) -> set[str]:
    rows = query(
        server,
        "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
        (DB_NAME,),
    )
    return {name for (name,) in rows}


def wait_turn_lock_free(server: PostgresServer, campaign_id: str, timeout: float = 20) -> None:
    """The worker has finished its task (it frees the lock, then re-checks the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(
            server,
            "SELECT holder FROM orchestrator_turnlock WHERE campaign_id = %s",
            (campaign_id,),
        )
        if all(holder == "" for (holder,) in rows):
            time.sleep(0.5)  # its follow-up check after the release
            return
        time.sleep(0.1)
    raise AssertionError("the worker still holds the turn lock")


def log_of(server: PostgresServer, campaign_id: str) -> list[dict[str, Any]]:
    rows = query(
        server,
        "SELECT id, seq, type, payload FROM campaigns_event WHERE campaign_id = %s ORDER BY seq",
        (campaign_id,),
    )
    return [{"id": str(i), "seq": s, "type": t, "payload": p} for i, s, t, p in rows]


def assert_log_sound(log: list[dict[str, Any]]) -> None:
    """Seqs gapless, no action twice, and every action answered by exactly one turn."""
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), "gap in the log"
    assert len({e["id"] for e in log}) == len(log)
    actions = [e for e in log if e["type"] == "player_action"]
    action_ids = [e["payload"]["action_id"] for e in actions]
    assert len(action_ids) == len(set(action_ids)), f"an action was stored twice: {action_ids}"
    endings = [e for e in log if e["type"] in {"dm_narration", "turn_failed"}]
    throughs = [e["payload"]["through_seq"] for e in endings]
    # Strictly increasing: no turn answered what an earlier turn had answered.
    assert throughs == sorted(set(throughs)), f"a turn answered twice: {throughs}"
    assert all(e["seq"] > e["payload"]["through_seq"] for e in endings)
    ranges = list(itertools.pairwise([0, *throughs]))  # (after, through] of each turn
    for action in actions:
        covering = [r for r in ranges if r[0] < action["seq"] <= r[1]]
        assert len(covering) == 1, f"action #{action['seq']} answered {len(covering)} times"
    assert len({e["payload"]["turn_id"] for e in endings}) == len(endings)


# --- Clients -------------------------------------------------------------------------------


class TokenClient(Client):
    """tests.test_faults.Client, authenticated by `?token=` (the browser's way) instead
    of a session cookie: the session would have to live in the private cluster."""

    def __init__(self, port: int, campaign_id: str, token: str) -> None:
        super().__init__(port, campaign_id, user=None)
        self.token = token

    async def open(self) -> None:
        """The socket, accepted, before its hello."""
        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/campaigns/{self.campaign_id}/?token={self.token}",
            origin=f"http://127.0.0.1:{self.port}",
            open_timeout=5,
        )

    async def connect(self) -> None:
        await self.open()
        await self.send({"type": "client.hello", "last_seq": self.last_seq})
        await self.until(lambda m: m["type"] == "server.ready")

    async def act_as(self, action_id: str, text: str, timeout: float = 20) -> dict:
        await self.send({"type": "client.player_action", "action_id": action_id, "text": text})
        seen = await self.until(
            lambda m: m["type"] in {"server.ack", "error"} and m.get("action_id") == action_id,
            timeout=timeout,
        )
        return seen[-1]

    async def until_answered(self, seq: int, timeout: float = 60) -> dict:
        """The turn that answers the action at `seq` (its dm_narration or turn_failed)."""
        seen = await self.until(
            lambda m: (
                m["type"] == "event"
                and m["event"]["type"] in {"dm_narration", "turn_failed"}
                and m["event"]["payload"]["through_seq"] >= seq
            ),
            timeout=timeout,
        )
        return seen[-1]["event"]


def _post(port: int, campaign_id: str, token: str, action_id: str, text: str):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/campaigns/{campaign_id}/actions",
        data=json.dumps({"action_id": action_id, "text": text}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _get_page(port: int, path: str) -> tuple[int, Any, bytes]:
    """GET a page with a session cookie (any: reading it needs the database)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        headers={"Cookie": f"sessionid={uuid.uuid4().hex}", "Accept": "text/html"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


async def post_action(port: int, seeded: dict, action_id: str, text: str) -> tuple[int, Any, Any]:
    status, headers, raw = await asyncio.to_thread(
        _post, port, seeded["campaign_id"], seeded["token"], action_id, text
    )
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = raw[:300]  # not JSON (a 500 page): shown by the failing assertion
    return status, headers, body


@contextlib.contextmanager
def stack(server: PostgresServer, **extra: str) -> Iterator[int]:
    """A private Redis, daphne and a Celery worker on the private cluster; the web port."""
    redis_port, web = free_port(), free_port()
    env = {
        "DATABASE_URL": server.database_url(DB_NAME),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TASKS_IN_PROCESS": "0",
        "CONN_MAX_AGE": "600",  # persistent connections, as in production
        **extra,
    }
    with (
        redis_server(redis_port),
        daphne(web, PGAPPNAME=WEB_APP, **env),
        celery_worker(PGAPPNAME=WORKER_APP, **env),
    ):
        yield web


# --- The tests -----------------------------------------------------------------------------


async def test_postgres_restart_between_turns(pg: PostgresServer):
    seeded = await asyncio.to_thread(seed, pg)
    campaign_id = seeded["campaign_id"]
    with stack(pg) as web:
        client = TokenClient(web, campaign_id, seeded["token"])
        await client.connect()
        ack = await client.act_as(str(uuid.uuid4()), "I draw the map.")
        assert ack["type"] == "server.ack", ack
        await client.until_answered(ack["seq"])
        await asyncio.to_thread(wait_turn_lock_free, pg, campaign_id)
        # daphne holds a persistent connection that the restart is about to cut. (The
        # worker holds none between tasks: Celery's Django fixup closes the connections
        # after each task unless CELERY_DB_REUSE_MAX is set. The next test cuts its
        # connection in the middle of a task.)
        assert WEB_APP in await asyncio.to_thread(app_connections, pg)
        # A browser whose socket was accepted just before the database went away, and
        # whose hello comes after.
        late = TokenClient(web, campaign_id, seeded["token"])
        await late.open()
        await late.send({"type": "client.ping"})  # answered once its connect has run
        await late.until(lambda m: m["type"] == "server.pong")

        await asyncio.to_thread(pg.stop, "fast")

        # During the outage: a clear, prompt answer on the socket, which stays open...
        ws_action = str(uuid.uuid4())
        started = time.monotonic()
        answer = await client.act_as(ws_action, "I fold the map.", timeout=15)
        assert answer["type"] == "error", answer
        assert answer["code"] == "unavailable", answer
        assert time.monotonic() - started < 10
        # ...and a 503 over HTTP, JSON, with Retry-After.
        http_action = str(uuid.uuid4())
        started = time.monotonic()
        status, headers, body = await post_action(web, seeded, http_action, "I look up.")
        assert status == 503, body
        assert body["code"] == "unavailable", body
        assert headers["Retry-After"], headers
        assert time.monotonic() - started < 10
        # A page (not the API) says to come back in a moment: 503, not a 500.
        status, headers, page = await asyncio.to_thread(_get_page, web, "/campaigns/")
        assert status == 503, page[:300]
        assert headers["Retry-After"] and b"Back in a moment" in page
        # The late hello cannot read the backlog: an error, then the socket is closed with
        # 4503 so that the browser reconnects, instead of staying open and never streaming.
        await late.send({"type": "client.hello", "last_seq": 0})
        async with asyncio.timeout(10):
            error = json.loads(await late.ws.recv())
            assert (error["type"], error["code"]) == ("error", "unavailable"), error
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await late.ws.recv()
        assert closed.value.rcvd.code == 4503, closed.value
        # A new socket (a browser reconnecting now) is told to try again at once, not left
        # hanging and not answered with a 500: its user cannot be loaded before the consumer
        # runs, and rpgai.db_outage closes it with 4503.
        started = time.monotonic()
        newcomer = TokenClient(web, campaign_id, seeded["token"])
        with pytest.raises(websockets.ConnectionClosed) as refused:
            async with asyncio.timeout(10):
                await newcomer.connect()
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4503, refused.value
        assert time.monotonic() - started < 10

        await asyncio.to_thread(pg.start)

        # Same socket, no process restarted: the failed action, sent again with its own
        # action_id (what "try again" does), is recorded and answered by the worker.
        ack = await client.act_as(ws_action, "I fold the map.")
        assert ack["type"] == "server.ack", ack
        await client.until_answered(ack["seq"])
        # The HTTP action refused with 503, posted again: 202, and answered too.
        status, _, body = await post_action(web, seeded, http_action, "I look up.")
        assert status == 202, body
        await client.until_answered(body["seq"])
        # Posting it once more changes nothing (the action is stored once).
        status, _, again = await post_action(web, seeded, http_action, "I look up.")
        assert (status, again["seq"]) == (202, body["seq"])
        await asyncio.to_thread(wait_turn_lock_free, pg, campaign_id)

        # A browser opening the room now gets the whole log from the start.
        fresh = TokenClient(web, campaign_id, seeded["token"])
        await fresh.connect()
        log = await asyncio.to_thread(log_of, pg, campaign_id)
        assert_log_sound(log)
        texts = [e["payload"]["text"] for e in log if e["type"] == "player_action"]
        assert texts == ["I draw the map.", "I fold the map.", "I look up."]
        for seen in (client, fresh):
            seqs = [e["seq"] for e in seen.events]
            assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate: {seqs}"
            assert [e["id"] for e in seen.events] == [e["id"] for e in log[: len(seqs)]]
        assert len(fresh.events) == len(log)
        await client.close()
        await fresh.close()


async def test_postgres_restart_in_the_middle_of_a_turn(pg: PostgresServer):
    """The worker is streaming the model's answer when the database restarts. A turn
    waiting on its model holds no database connection (its database work runs on the
    worker's few database threads, rpgai.aio): when the answer is in, it commits on a
    fresh connection, or is run again if the database is not back yet. Either way the
    action is answered exactly once, with the model's answer."""
    seeded = await asyncio.to_thread(seed, pg)
    campaign_id = seeded["campaign_id"]
    with OpenAIServer() as model:
        model.script(Answer(delay=0.1))  # the first answer streams for a few seconds
        env = {
            "DM_MODEL_PROVIDER": "openai",
            "DM_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": model.url,
        }
        with stack(pg, **env) as web:
            client = TokenClient(web, campaign_id, seeded["token"])
            await client.connect()
            ack = await client.act_as(str(uuid.uuid4()), "I pick the lock.")
            assert ack["type"] == "server.ack", ack
            await asyncio.to_thread(_wait_for, lambda: bool(model.requests), 20)
            assert model.requests, "the worker never called the model"

            assert WEB_APP in await asyncio.to_thread(app_connections, pg)

            await asyncio.to_thread(pg.restart, "fast")  # the worker is mid-turn

            ending = await client.until_answered(ack["seq"], timeout=90)
            assert ending["type"] == "dm_narration", ending
            assert ending["payload"]["fallback"] is False, ending
            await asyncio.to_thread(wait_turn_lock_free, pg, campaign_id, 30)
            await asyncio.sleep(2)  # a doubled turn would show up now
            log = await asyncio.to_thread(log_of, pg, campaign_id)
            endings = [e for e in log if e["type"] in {"dm_narration", "turn_failed"}]
            assert [e["seq"] for e in endings] == [ending["seq"]], endings
            # Once if the database was back when the answer was in, twice if not.
            assert len(model.requests) in (1, 2), len(model.requests)

            # The room goes on. daphne's persistent connection died in the restart and
            # nothing has used it since (events reach the socket over Redis): the health
            # check (CONN_HEALTH_CHECKS) replaces it before this action, which would
            # otherwise fail once.
            ack = await client.act_as(str(uuid.uuid4()), "I open the door.")
            assert ack["type"] == "server.ack", ack
            await client.until_answered(ack["seq"])
            log = await asyncio.to_thread(log_of, pg, campaign_id)
            assert_log_sound(log)
            seqs = [e["seq"] for e in client.events]
            assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate: {seqs}"
            await client.close()


async def test_postgres_down_for_half_a_minute_in_the_middle_of_a_turn(pg: PostgresServer):
    """A longer outage (a slow restart, a failover): the turn's task keeps retrying
    until the database is back, instead of giving up with the turn lock still held
    (which would leave the room without a DM until the lock goes stale)."""
    seeded = await asyncio.to_thread(seed, pg)
    campaign_id = seeded["campaign_id"]
    with OpenAIServer() as model:
        model.script(Answer(delay=0.1))
        env = {
            "DM_MODEL_PROVIDER": "openai",
            "DM_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": model.url,
        }
        with stack(pg, **env) as web:
            client = TokenClient(web, campaign_id, seeded["token"])
            await client.connect()
            ack = await client.act_as(str(uuid.uuid4()), "I pick the lock.")
            assert ack["type"] == "server.ack", ack
            await asyncio.to_thread(_wait_for, lambda: bool(model.requests), 20)
            assert model.requests, "the worker never called the model"

            await asyncio.to_thread(pg.stop, "fast")
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(pg.start)

            ending = await client.until_answered(ack["seq"], timeout=60)
            assert ending["type"] == "dm_narration", ending
            assert len(model.requests) >= 2, "the outage did not interrupt the turn"
            await asyncio.to_thread(wait_turn_lock_free, pg, campaign_id, 30)
            log = await asyncio.to_thread(log_of, pg, campaign_id)
            assert_log_sound(log)
            endings = [e for e in log if e["type"] in {"dm_narration", "turn_failed"}]
            assert [e["seq"] for e in endings] == [ending["seq"]], endings
            await client.close()
