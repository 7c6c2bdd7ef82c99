"""Helpers to talk to the room through the real ASGI application."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from rpgai.asgi import application

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def _session_cookie(user: Any) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


class Room:
    """A WebSocket client in a campaign room."""

    def __init__(self, campaign_id: Any, user: Any | None = None, headers: list | None = None):
        self.campaign_id = campaign_id
        self.user = user
        self.extra_headers = headers
        self.comm: WebsocketCommunicator | None = None

    async def open(self) -> tuple[bool, Any]:
        headers = list(self.extra_headers) if self.extra_headers is not None else [ORIGIN]
        if self.user is not None:
            key = await sync_to_async(_session_cookie)(self.user)
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()))
        self.comm = WebsocketCommunicator(
            application, f"/ws/campaigns/{self.campaign_id}/", headers=headers
        )
        return await self.comm.connect()

    async def send(self, message: dict[str, Any]) -> None:
        await self.comm.send_to(text_data=json.dumps(message))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.comm.send_to(text_data=text, bytes_data=data)

    async def recv(self, timeout: float = 3) -> dict[str, Any]:
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def recv_until(self, predicate, timeout: float = 5) -> list[dict[str, Any]]:
        """Messages up to and including the first one that satisfies `predicate`."""
        seen: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching message; got {seen}")
            message = await self.recv(timeout=left)
            seen.append(message)
            if predicate(message):
                return seen

    async def hello(self, last_seq: int = 0) -> list[dict[str, Any]]:
        await self.send({"type": "client.hello", "last_seq": last_seq})
        return await self.recv_until(lambda m: m["type"] == "server.ready")

    async def closed_with(self, timeout: float = 3) -> int | None:
        output = await self.comm.receive_output(timeout=timeout)
        assert output["type"] == "websocket.close", output
        return output.get("code")

    async def nothing(self, timeout: float = 0.3) -> bool:
        """True when no message but presence updates arrives within `timeout`."""
        while not await self.comm.receive_nothing(timeout=timeout):
            if (await self.recv())["type"] != "presence":
                return False
        return True

    async def close(self) -> None:
        if self.comm is not None:
            await self.comm.disconnect()


def events_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["event"] for m in messages if m["type"] == "event"]


# --- A real WebSocket to a real server process (daphne, or nginx in front of it) -----------


async def connect(port: int, campaign_id: Any, user: Any) -> Any:
    """Open the room on 127.0.0.1:`port` as `user` (session cookie) and wait for ready."""
    import websockets

    key = await sync_to_async(_session_cookie)(user)
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/campaigns/{campaign_id}/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"},
    )
    await ws.send(json.dumps({"type": "client.hello", "last_seq": 0}))
    await until(ws, lambda m: m["type"] == "server.ready")
    return ws


async def until(ws: Any, predicate: Any, timeout: float = 20) -> list[dict]:
    """Messages from a real WebSocket up to and including the first that matches."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            seen.append(message)
            if predicate(message):
                return seen
