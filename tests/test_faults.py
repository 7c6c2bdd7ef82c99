"""Faults a real deployment meets (issue 10), against real processes.

Each test runs its own daphne and Celery processes and its OWN redis-server on a free
port, so that stopping Redis disturbs nobody else. PostgreSQL is shared: a "restart" is
simulated by terminating the backends of this test's processes only (they carry their
own application_name), never by stopping the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.db import connection

from campaigns.models import Event
from tests.auth_tools import access_for
from tests.openai_server import Answer, Hang, OpenAIServer
from tests.processes import celery_worker, daphne, free_port, redis_server
from tests.ws import _session_cookie

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


# --- Processes ----------------------------------------------------------------------------


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


# --- Clients ------------------------------------------------------------------------------


def _post_action(port: int, campaign_id: Any, user: Any, text: str) -> tuple[int, dict]:
    body = json.dumps({"action_id": str(uuid.uuid4()), "text": text}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/campaigns/{campaign_id}/actions",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {access_for(user)}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def post_action(port: int, campaign_id: Any, user: Any, text: str) -> tuple[int, dict]:
    return await asyncio.to_thread(_post_action, port, campaign_id, user, text)


class Client:
    """A room member over a real WebSocket, remembering every event it was sent."""

    def __init__(self, port: int, campaign_id: Any, user: Any) -> None:
        self.port, self.campaign_id, self.user = port, campaign_id, user
        self.ws: websockets.ClientConnection | None = None
        self.events: list[dict] = []  # every event received, over all connections

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def connect(self) -> None:
        key = await sync_to_async(_session_cookie)(self.user)
        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/campaigns/{self.campaign_id}/",
            origin=f"http://127.0.0.1:{self.port}",
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"},
            open_timeout=5,
        )
        await self.send({"type": "client.hello", "last_seq": self.last_seq})
        await self.until(lambda m: m["type"] == "server.ready")

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def until(self, predicate, timeout: float = 20) -> list[dict]:
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "event":
                    self.events.append(message["event"])
                seen.append(message)
                if predicate(message):
                    return seen

    async def act(self, text: str) -> dict:
        action_id = str(uuid.uuid4())
        await self.send({"type": "client.player_action", "action_id": action_id, "text": text})
        return (
            await self.until(
                lambda m: m["type"] in {"server.ack", "error"} and m.get("action_id") == action_id
            )
        )[-1]

    async def reconnect(self, within: float = 30) -> None:
        """Reconnect with hello(last_seq) as a browser does, retrying while refused."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.ws.close()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(8):
                    await self.connect()
                return
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                print("reconnect failed:", repr(exc))
                await asyncio.sleep(0.5)
        raise AssertionError("could not reconnect")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


def _is_event(kind: str):
    return lambda m: m["type"] == "event" and m["event"]["type"] == kind


def _stored(campaign_id: Any) -> list[Event]:
    return list(Event.objects.filter(campaign_id=campaign_id).order_by("seq"))


async def stored(campaign_id: Any) -> list[Event]:
    return await sync_to_async(_stored)(campaign_id)


def assert_gapless(client: Client, log: list[Event]) -> None:
    seqs = [e["seq"] for e in client.events]
    assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate: {seqs}"
    assert [e.seq for e in log][: len(seqs)] == seqs
    assert [e.seq for e in log] == list(range(1, len(log) + 1))


@pytest.fixture
def alice(make_user, join):
    user = make_user("alice")
    join(user, "Alice")
    return user


# --- (a) Redis stops in the middle of a session --------------------------------------------


async def test_redis_down_actions_are_recorded_and_clients_catch_up(campaign, alice):
    redis_port, web = free_port(), free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "TASKS_IN_PROCESS": "1"}
    with redis_server(redis_port) as redis, daphne(web, **env):
        client = Client(web, campaign.id, alice)
        await client.connect()
        ack = await client.act("I light a torch.")
        assert ack["type"] == "server.ack"
        await client.until(_is_event("dm_narration"))

        _stop(redis)  # Redis goes away mid-session
        # The socket may die with the channel layer (1011) or still answer; it never hangs.
        with contextlib.suppress(websockets.WebSocketException, TimeoutError):
            async with asyncio.timeout(10):
                ack = await client.act("I hold the door shut.")
                assert ack["type"] in {"server.ack", "error"}, ack
        # HTTP needs no Redis to record an action.
        down_seqs = []
        for text in ("I run for the door.", "I bar it behind me."):
            posted = time.monotonic()
            status, body = await post_action(web, campaign.id, alice, text)
            print(f"POST with Redis down took {time.monotonic() - posted:.2f} s")
            assert status == 202, body
            down_seqs.append(body["seq"])
        log = await stored(campaign.id)
        texts = [e.payload.get("text") for e in log if e.type == "player_action"]
        assert {"I run for the door.", "I bar it behind me."} <= set(texts)
        assert {e.seq for e in log} >= set(down_seqs)

        with redis_server(redis_port):  # Redis is back (empty: nothing of it was kept)
            await client.reconnect()
            status, body = await post_action(web, campaign.id, alice, "I catch my breath.")
            assert status == 202, body
            await client.until(
                lambda m: m["type"] == "event" and m["event"]["seq"] >= body["seq"], timeout=30
            )
            # A second client starting from scratch sees the same log.
            fresh = Client(web, campaign.id, alice)
            await fresh.connect()
            log = await stored(campaign.id)
            assert_gapless(client, log)
            assert_gapless(fresh, log)
            assert {e["id"] for e in client.events} <= {str(e.id) for e in log}
            await client.close()
            await fresh.close()


# --- (b) A Celery worker killed mid-turn ---------------------------------------------------


async def test_worker_killed_mid_turn_is_retried_or_failed_never_doubled(campaign, alice):
    """The worker (one process: `make worker` runs turns on a threads pool) is killed
    while its turn waits on the model, and restarted as a supervisor would. The turn held
    its campaign's lock, and its task was acknowledged when it took it: the lock it left
    is found by the new worker's sweep once older than TURN_LOCK_SECONDS, and the turn runs
    again, once."""
    redis_port, web = free_port(), free_port()
    with OpenAIServer() as model:
        model.script(Hang(60))  # the first model call hangs: the worker dies in it
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "TASKS_IN_PROCESS": "0",
            "DM_MODEL_PROVIDER": "openai",
            "DM_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": model.url,
            "DM_TIMEOUT_SECONDS": "30",
            "DM_MAX_RETRIES": "0",
            "TURN_LOCK_SECONDS": "5",
            "TURN_SWEEP_SECONDS": "1",
        }
        with redis_server(redis_port), daphne(web, **env):
            client = Client(web, campaign.id, alice)
            await client.connect()
            with celery_worker(**env) as worker:
                ack = await client.act("I pick the lock.")
                assert ack["type"] == "server.ack"
                await asyncio.to_thread(_wait_for, lambda: bool(model.requests), 20)
                assert model.requests, "the worker never called the model"
                worker.kill()  # the whole worker dies in the middle of the turn
                await asyncio.to_thread(worker.wait, 15)

            with celery_worker(**env):  # restarted, as a supervisor does
                seen = await client.until(
                    lambda m: (
                        m["type"] == "event"
                        and m["event"]["type"] in {"dm_narration", "turn_failed"}
                    ),
                    timeout=60,
                )
                await asyncio.sleep(3)  # a doubled turn would show up now
                log = await stored(campaign.id)
                after = [e for e in log if e.seq > ack["seq"]]
                endings = [e for e in after if e.type in {"dm_narration", "turn_failed"}]
                assert len(endings) == 1, [(e.seq, e.type) for e in after]
                assert seen[-1]["event"]["seq"] == endings[0].seq
                # and the room goes on: the next action gets its turn
                ack = await client.act("I open the door.")
                await client.until(_is_event("dm_narration"), timeout=60)
            await client.close()


# --- (c) The model server hangs --------------------------------------------------------------


async def test_hanging_model_times_out_into_turn_failed_then_recovers(campaign, alice):
    redis_port, web = free_port(), free_port()
    with OpenAIServer() as model:
        model.default = Hang(60)
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "TASKS_IN_PROCESS": "0",
            "DM_MODEL_PROVIDER": "openai",
            "DM_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": model.url,
            "DM_TIMEOUT_SECONDS": "2",
            "DM_TURN_DEADLINE_SECONDS": "6",
            "DM_MAX_RETRIES": "0",
        }
        with redis_server(redis_port), daphne(web, **env), celery_worker(**env):
            client = Client(web, campaign.id, alice)
            await client.connect()
            started = time.monotonic()
            ack = await client.act("I ask the oracle.")
            assert ack["type"] == "server.ack"
            seen = await client.until(
                lambda m: (
                    m["type"] == "event" and m["event"]["type"] in {"dm_narration", "turn_failed"}
                ),
                timeout=40,
            )
            waited = time.monotonic() - started
            ending = seen[-1]["event"]
            if ending["type"] == "turn_failed":
                assert ending["payload"]["code"] in {"model_timeout", "turn_timeout"}, ending
            else:
                assert ending["payload"]["fallback"] is True
            assert waited < 20, f"the hang held the turn for {waited:.1f} s"

            model.default = Answer()  # the model is back
            ack = await client.act("I ask again.")
            seen = await client.until(_is_event("dm_narration"), timeout=40)
            assert seen[-1]["event"]["payload"]["fallback"] is False
            log = await stored(campaign.id)
            assert_gapless(client, log)
            await client.close()


# --- (d) PostgreSQL "restarts" ------------------------------------------------------------------


def _terminate_backends(app_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [app_name],
        )
        return cursor.fetchone()[0]


async def test_consumers_and_workers_recover_after_database_connections_die(campaign, alice):
    redis_port, web = free_port(), free_port()
    app_name = f"rpgai-faults-{uuid.uuid4().hex[:8]}"
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TASKS_IN_PROCESS": "0",
        "PGAPPNAME": app_name,  # libpq: marks this test's connections, and only them
        "CONN_MAX_AGE": "600",  # persistent connections, as in production: they must die
    }
    with redis_server(redis_port), daphne(web, **env), celery_worker(**env):
        client = Client(web, campaign.id, alice)
        await client.connect()
        assert (await client.act("I draw the map."))["type"] == "server.ack"
        await client.until(_is_event("dm_narration"), timeout=40)
        # Let the worker finish the task (lock release, follow-up check): see the report
        # of issue 10 on a restart that hits a worker while it holds the turn lock.
        await asyncio.sleep(2)

        killed = await sync_to_async(_terminate_backends)(app_name)
        assert killed >= 1, "no connection of the child processes was found"

        # The next action on the same socket works, and the worker answers it.
        ack = await client.act("I fold the map.")
        assert ack["type"] == "server.ack", ack
        await client.until(_is_event("dm_narration"), timeout=40)
        # So does HTTP.
        status, body = await post_action(web, campaign.id, alice, "I look up.")
        assert status == 202, body
        await client.until(
            lambda m: m["type"] == "event" and m["event"]["seq"] >= body["seq"], timeout=30
        )
        log = await stored(campaign.id)
        assert_gapless(client, log)
        await client.close()
