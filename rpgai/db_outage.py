"""A database outage met before a WebSocket's consumer runs: a clear close, not a 500.

The session and JWT middlewares load the user from the database before the consumer
exists. When PostgreSQL is down (a restart, a failover) that raises, and daphne would
answer the handshake with an HTTP 500 and a traceback. This wrapper accepts the socket
and closes it at once with 4503 (try again), which the room page treats as a drop: it
reconnects with backoff and catches up once the database is back. Anything raised after
the application has answered the handshake is not ours to turn into a close.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError

from rpgai.errors import RETRY_AFTER_SECONDS

CLOSE_TRY_AGAIN = 4503  # try again later (daphne allows 1000 and 3000-4999 only)

log = logging.getLogger(__name__)


class WebSocketDatabaseOutage:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        seen = {"connect": False, "answered": False}

        async def tracked_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.connect":
                seen["connect"] = True
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] in ("websocket.accept", "websocket.close"):
                seen["answered"] = True
            await send(message)

        try:
            await self.app(scope, tracked_receive, tracked_send)
        except (OperationalError, InterfaceError) as exc:
            if seen["answered"]:
                raise
            log.warning(
                "database unavailable during a WebSocket handshake; closing with %s: %s",
                CLOSE_TRY_AGAIN,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            if not seen["connect"]:
                await receive()  # the websocket.connect the application never read
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})


class DatabaseOutageMiddleware:
    """Pages (not the API, whose exception handler answers JSON 503 itself): a view that
    meets a database outage answers 503 with `Retry-After` and a page saying to wait,
    not a 500 "something broke"."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        from django.http import HttpResponse
        from django.template.loader import render_to_string

        log.warning("database unavailable for %s %s", request.method, request.path)
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
