"""A member who never reads: what it costs the server and the other members.

One daphne process (PostgreSQL, Redis, the hub) serves one room: BENCH_SLOW_MEMBERS members
reading as fast as they can, and, in the second load of each setting, one more member whose
client connects, says `client.hello` and then never reads again (a raw socket whose receive
buffer is 4 KiB: the kernel stops taking data for it almost at once). A sender broadcasts
BENCH_SLOW_RATE messages a second for BENCH_SLOW_SECONDS, each carrying
BENCH_SLOW_BATCH committed `audio_cue` events (about 650 bytes each as sent).

Settings, side by side in one run:

- *gate off* (`ROOM_WRITE_GATE=0`): every frame goes into Twisted's buffer at once, as
  before issue 21: what daphne and Twisted do on their own.
- *gate on* (the default): the socket writes only while Twisted's buffer has room, and is
  closed with 4408 past `ROOM_SOCKET_QUEUE_*` (realtime/backpressure.py).

Measured: the daphne process's resident memory before the load and at its peak (sampled
every 0.2 s); the other members' latency (sent to received, ms) with and without the
stalled member; what became of the stalled member by the end (how many bytes were waiting
for it on its side, and how its connection ended: the close code read at the end of what
it was sent, or a reset).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time

from bench.common import REDIS_BENCH_URL, free_port, fresh_pg_database, rss_kib
from bench.fanout import Load, Ours, _stop, django_setup, start_daphne

MEMBERS = int(os.environ.get("BENCH_SLOW_MEMBERS", "50"))
SECONDS = float(os.environ.get("BENCH_SLOW_SECONDS", "40"))
RATE = int(os.environ.get("BENCH_SLOW_RATE", "10"))
BATCH = int(os.environ.get("BENCH_SLOW_BATCH", "5"))
SETTINGS = {"gate off": {"ROOM_WRITE_GATE": "0"}, "gate on": {"ROOM_WRITE_GATE": "1"}}


def _new_member(campaign_id: str) -> str:
    """One more player of the campaign; their session key."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from campaigns.selectors import campaign_get
    from campaigns.services import campaign_join

    user = get_user_model().objects.create_user(f"bench-slow-{time.time_ns()}")
    campaign_join(invite_code=campaign_get(campaign_id=campaign_id).invite_code, user=user)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


class StalledClient:
    """A room member whose client says hello and then never reads: a raw socket."""

    def __init__(self, port: int, campaign_id: str, session_key: str) -> None:
        self.sock = socket.socket()
        # Set before connecting: the window the client offers stays 4 KiB.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/campaigns/{campaign_id}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
            f"Cookie: sessionid={session_key}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # byte by byte: nothing after the headers is read
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"no WebSocket: {head[:200]!r}")
        self.send_text(json.dumps({"type": "client.hello", "last_seq": 0}))

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes((0x81, 0x80 | len(payload))) if len(payload) < 126 else None
        if header is None:
            header = bytes((0x81, 0x80 | 126)) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def drain(self) -> tuple[int, str]:
        """Read all that is waiting: (bytes read, how the connection ended)."""
        self.sock.settimeout(3)
        data = bytearray()
        ended = "still open"
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    ended = "closed"
                    break
                data += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            ended = "reset"
        code = _close_code(bytes(data))
        if code is not None:
            ended = f"closed with {code}"
        self.sock.close()
        return len(data), ended


def _close_code(data: bytes) -> int | None:
    """The code of the close frame among these server frames, if there is one."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        if opcode == 8 and n >= 2 and i + 2 <= len(data):
            return struct.unpack("!H", data[i : i + 2])[0]
        i += n
    return None


async def _load(room: Ours, stalled: StalledClient | None, pid: int) -> dict:
    load = Load("s", RATE, SECONDS, BATCH)
    peak, stop = [rss_kib([pid])], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(rss_kib([pid]))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = await room.run(load, "fan-out")
    finally:
        stop.set()
        sampler.join()
    out = {
        "p50": result["p50"],
        "p99": result["p99"],
        "lost": result["lost"],
        "rss_before_mib": peak[0] / 1024,
        "rss_peak_mib": max(peak) / 1024,
    }
    if stalled is not None:
        await asyncio.sleep(2)  # the close handshake's time, when the server closed it
        got, ended = await asyncio.to_thread(stalled.drain)
        out.update(stalled_bytes=got, stalled_end=ended)
    return out


async def _setting(port: int, pid: int) -> dict:
    from asgiref.sync import sync_to_async

    room = Ours("hub", [port, port], [pid])
    await room.open(MEMBERS)
    await asyncio.sleep(1.5)
    results = {"without": await _load(room, None, pid)}
    key = await sync_to_async(_new_member)(room.campaign_id)
    stalled = await asyncio.to_thread(StalledClient, port, room.campaign_id, key)
    await asyncio.sleep(1.5)
    results["with"] = await _load(room, stalled, pid)
    await room.close()
    return results


def run() -> dict:
    env = {"DATABASE_URL": fresh_pg_database(), "REDIS_URL": REDIS_BENCH_URL}
    django_setup(env)
    from bench.fanout import _use_layer

    _use_layer("hub")
    out = {}
    for name, extra in SETTINGS.items():
        port = free_port()
        proc = start_daphne(port, {**env, "CHANNEL_LAYER": "hub", **extra})
        try:
            out[name] = asyncio.run(_setting(port, proc.pid))
        finally:
            _stop([proc])
        for kind, r in out[name].items():
            print(f"slow member, {name}, {kind} the stalled member: {r}", flush=True)
    return out


def markdown(results: dict) -> list[str]:
    lines = [
        f"{MEMBERS} members on one daphne process, {RATE} messages a second of {BATCH} "
        f"events each (about {BATCH * 650 // 1024} KiB a message as sent) for {SECONDS:g} s; "
        "the other members' latency in ms, daphne's resident memory in MiB.",
        "",
        "| setting | stalled member | others p50 | others p99 | lost | RSS before | RSS peak "
        "| waiting for it at the end | its connection |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, kinds in results.items():
        for kind, r in kinds.items():
            waiting = f"{r['stalled_bytes'] / 1024:.0f} KiB" if "stalled_bytes" in r else "-"
            lines.append(
                f"| {name} | {kind} | {r['p50']:.1f} | {r['p99']:.1f} | {r['lost']} | "
                f"{r['rss_before_mib']:.1f} | {r['rss_peak_mib']:.1f} | {waiting} | "
                f"{r.get('stalled_end', '-')} |"
            )
    return lines


if __name__ == "__main__":
    result = run()
    if "--json" in sys.argv:
        print("BENCH_JSON " + json.dumps(result))
    else:
        print("\n".join(markdown(result)))
    with contextlib.suppress(Exception):
        sys.stdout.flush()
