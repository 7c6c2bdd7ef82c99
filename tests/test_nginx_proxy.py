"""deploy/nginx.conf in front of two real daphne processes, as docker-compose.yml runs them.

The compose file itself cannot be started here (no Docker daemon), so this runs what it
runs: nginx with our configuration (only the upstream addresses and the port changed)
and two `daphne --proxy-headers` processes sharing Redis. It checks that a room works
across the two processes through nginx, that the client address the app sees is the one
nginx saw (a forged X-Forwarded-For is ignored), that the request id is nginx's or the
client's and appears in nginx's access log, and that /metrics and /media/ stay hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests import processes
from tests.processes import ROOT, _wait_for_port, free_port
from tests.ws import connect, until

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


@contextlib.contextmanager
def proxied_daphne(port: int, access_log: Path) -> Iterator[subprocess.Popen]:
    """daphne as the compose file runs it (--proxy-headers), with its access log in a file."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
            *("--proxy-headers", "--access-log", str(access_log), "rpgai.asgi:application"),
        ],
        cwd=ROOT,
        env=processes.test_env(TASKS_IN_PROCESS="1"),
    )
    try:
        _wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def nginx(folder: Path, port: int, upstreams: dict[str, int]) -> Iterator[Path]:
    """nginx with deploy/nginx.conf: the compose service names replaced by local ports.
    Yields the file its access log goes to."""
    # The image's `nginx` user may not exist here: run as this machine's default.
    text = (ROOT / "deploy" / "nginx.conf").read_text().replace("user nginx;", "")
    for name, upstream_port in upstreams.items():
        text, n = re.subn(rf"\bserver {name}:8000\b", f"server 127.0.0.1:{upstream_port}", text)
        assert n == 1, f"no upstream server {name}:8000 in nginx.conf"
    text, n = re.subn(r"\blisten 80;", f"listen 127.0.0.1:{port};", text)
    assert n == 1
    # Temporary files in the test's folder (the packaged paths belong to another user).
    temp = "".join(
        f"    {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    access_log = folder / "access.log"
    text = text.replace("access_log /dev/stdout rpgai;", f"access_log {access_log} rpgai;")
    (folder / "nginx.conf").write_text(text)
    proc = subprocess.Popen(
        [
            *("nginx", "-p", str(folder), "-c", str(folder / "nginx.conf")),
            *("-g", f"daemon off; pid {folder / 'nginx.pid'};"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc, timeout=10)
        yield access_log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_for_line(path: Path, needle: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if needle in line:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


@pytest.fixture
def stack(tmp_path):
    """nginx on a free port in front of web1 and web2 (two daphne processes)."""
    ports = {"web1": free_port(), "web2": free_port()}
    logs = {name: tmp_path / f"{name}.log" for name in ports}
    proxy = free_port()
    with (
        proxied_daphne(ports["web1"], logs["web1"]),
        proxied_daphne(ports["web2"], logs["web2"]),
        nginx(tmp_path, proxy, ports) as access_log,
    ):
        yield {
            "url": f"http://127.0.0.1:{proxy}",
            "port": proxy,
            "web": ports,
            "logs": logs,
            "nginx": access_log,
        }


@pytest.fixture
def players(campaign, join, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    join(alice, "Alice")
    join(bob, "Bob")
    return alice, bob


async def test_a_room_works_across_both_web_processes_through_nginx(stack, campaign, players):
    alice, bob = players
    # Round robin: the two sockets land on different web processes.
    ws_a = await connect(stack["port"], campaign.id, alice)
    ws_b = await connect(stack["port"], campaign.id, bob)
    try:
        for name, log in stack["logs"].items():
            assert "WSCONNECT" in await asyncio.to_thread(wait_for_line, log, "WSCONNECT"), (
                f"no socket reached {name}"
            )
        action_id = str(uuid.uuid4())
        await ws_a.send(
            json.dumps({"type": "client.player_action", "action_id": action_id, "text": "I knock"})
        )
        ack = (await until(ws_a, lambda m: m["type"] == "server.ack"))[-1]
        seen = await until(
            ws_b, lambda m: m["type"] == "event" and m["event"]["type"] == "dm_narration"
        )
        events = [m["event"] for m in seen if m["type"] == "event"]
        [action] = [e for e in events if e["type"] == "player_action"]
        assert action["seq"] == ack["seq"]
        # One request id per socket message, from the socket to the narration.
        assert events[-1]["request_id"] == action["request_id"]
    finally:
        await ws_a.close()
        await ws_b.close()


def test_the_app_sees_nginxs_client_address_not_a_forged_one(stack):
    status, _, _ = get(f"{stack['url']}/healthz", {"X-Forwarded-For": "10.9.8.7"})
    assert status == 200
    lines = [
        line
        for log in stack["logs"].values()
        if log.exists()
        for line in log.read_text().splitlines()
        if "/healthz" in line
    ]
    assert lines, "no web process logged the request"
    assert all(line.startswith("127.0.0.1") for line in lines), lines
    assert not any("10.9.8.7" in line for line in lines)


def test_request_id_is_the_clients_or_nginxs_and_is_in_both_logs(stack):
    mine = f"trace-{uuid.uuid4().hex[:12]}"
    status, headers, _ = get(f"{stack['url']}/healthz", {"X-Request-ID": mine})
    assert status == 200 and headers["X-Request-ID"] == mine
    assert f"request_id={mine}" in wait_for_line(stack["nginx"], mine)

    status, headers, _ = get(f"{stack['url']}/readyz")
    assert status == 200, "the stack is not ready"
    made = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # nginx made it ($request_id): its access log has the same id for this request.
    assert "/readyz" in wait_for_line(stack["nginx"], f"request_id={made}")


def test_metrics_and_media_are_not_served_through_nginx(stack):
    assert get(f"{stack['url']}/metrics")[0] == 404
    assert get(f"{stack['url']}/media/voice/anything.wav")[0] == 404
    # The web processes themselves still serve /metrics on the internal network.
    for port in stack["web"].values():
        status, _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"rpgai_websocket_connections" in body
