"""A member whose client stops reading, on a real daphne process (PostgreSQL, Redis, hub).

Daphne writes into Twisted's buffer, which keeps whatever the kernel will not take,
without limit: a stalled client would make the server grow by everything the room sends.
With the write gate (realtime/backpressure.py) the socket waits while its buffer is full,
what it has not written waits in its bounded queue, and past that bound it is closed
with 4408: the others are served as before, the server's memory stays put, and the
stalled client, once it reads again, reads what it was sent, the 4408, and reconnects to
catch up from its last seq.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings as django_settings

from campaigns.events import NewEvent
from campaigns.services import events_append
from realtime.backpressure import CLOSE_TOO_SLOW
from tests.processes import daphne, free_port
from tests.test_room_hub import _close, _open, _seqs_through, _version, hub_prefix  # noqa: F401
from tests.ws import _session_cookie

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# 128 room messages of 80 events of ~0.7 KB: ~7 MiB sent to each member.
MESSAGES, EVENTS_PER_MESSAGE = 128, 80
URL = "/static/campaigns/sounds/" + "x" * 460 + ".ogg"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """The process's resident memory, sampled every 50 ms while in use."""

    def __init__(self, pid: int) -> None:
        self.pid, self.before = pid, _rss_kib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _stalled(port: int, campaign_id: Any, key: str, last_seq: int) -> Any:
    """A member whose client says hello and then stops reading: its receive buffer is
    4 KiB and the client library stops reading from it past 4 queued frames."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        sock=sock,
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={key}"},
        ping_interval=None,
        max_size=None,
        max_queue=4,
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": last_seq}))
    return ws


def _append_load(campaign_id: Any) -> int:
    """The room's load, one transaction per message; the last seq."""
    last = 0
    for m in range(MESSAGES):
        events = [
            NewEvent("audio_cue", {"cue": f"load-{m}-{i}", "volume": 0.5, "url": URL})
            for i in range(EVENTS_PER_MESSAGE)
        ]
        last = events_append(campaign_id=campaign_id, events=events)[-1].seq
    return last


async def _read_until_closed(ws: Any) -> tuple[list[int], int | None]:
    """Read everything left; the event seqs and the close code the server sent."""
    seqs: list[int] = []
    try:
        async with asyncio.timeout(60):
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "event":
                    seqs.append(message["event"]["seq"])
    except websockets.ConnectionClosed:
        pass
    return seqs, (ws.close_code if ws.close_code is not None else None)


async def _catch_up(port: int, campaign_id: Any, key: str, last_seq: int) -> list[int]:
    """Reconnect from `last_seq`: the seqs of the events sent before `server.ready`."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={key}"},
        ping_interval=None,
        max_size=None,
    )
    try:
        await ws.send(json.dumps({"type": "client.hello", "last_seq": last_seq}))
        seqs = []
        async with asyncio.timeout(120):
            while (message := json.loads(await ws.recv()))["type"] != "server.ready":
                if message["type"] == "event":
                    seqs.append(message["event"]["seq"])
        return seqs
    finally:
        await _close([ws])


async def test_a_member_who_never_reads_is_closed_with_4408_and_costs_the_others_nothing(
    campaign,
    alice,
    bob,
    hub_prefix,  # noqa: F811
):
    keys = [await sync_to_async(_session_cookie)(user) for user in (alice, bob)]
    start = await sync_to_async(_version)(campaign.id)
    port = free_port()
    env = {
        "TASKS_IN_PROCESS": "1",
        "CHANNEL_LAYER": "hub",
        "CHANNEL_LAYER_PREFIX": hub_prefix,
        "ROOM_SOCKET_QUEUE_MESSAGES": "20",
        "ROOM_SOCKET_QUEUE_BYTES": str(256 * 1024),
        # Time enough for the stalled client to come back and read its close frame.
        "ROOM_TOO_SLOW_CLOSE_SECONDS": "60",
    }
    with daphne(port, **env) as server:
        reader = await _open(port, campaign.id, keys[0], start)
        stalled = await _stalled(port, campaign.id, keys[1], start)
        try:
            await asyncio.sleep(1)  # its hello answered (into buffers it does not read)
            last = start + MESSAGES * EVENTS_PER_MESSAGE
            expected = list(range(start + 1, last + 1))
            with PeakMemory(server.pid) as memory:
                reading = asyncio.ensure_future(_seqs_through(reader, last, timeout=120))
                assert await sync_to_async(_append_load)(campaign.id) == last
                # The member who reads gets every event, once, in order, while the other
                # has not read a byte.
                assert await reading == expected
            sent_mib = MESSAGES * EVENTS_PER_MESSAGE * (len(URL) + 200) / 2**20
            grew_mib = (memory.peak - memory.before) / 1024
            # Nothing like what the room sent piled up for the stalled member: the hub's
            # queue bound (256 KiB of messages as published, shared with the others until
            # they are sent), Twisted's 64 KiB, the kernel's buffers. Measured: 1.5 MiB of
            # 6.7 MiB sent; 7.5 MiB with ROOM_WRITE_GATE=0 (Twisted keeps it all).
            assert grew_mib < sent_mib / 4, (grew_mib, sent_mib)

            # The stalled client reads again: what was sent to it, then 4408.
            got, code = await _read_until_closed(stalled)
            assert code == CLOSE_TOO_SLOW
            assert got == list(range(start + 1, start + 1 + len(got)))
            assert len(got) < len(expected)

            # It reconnects from its last seq and catches up.
            rest = await _catch_up(port, campaign.id, keys[1], got[-1] if got else start)
            assert got + rest == expected
        finally:
            await _close([reader, stalled])
