"""A hard limit on HTTP request bodies, uploads included (settings.MAX_REQUEST_BODY_BYTES).

Django limits form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but not files, and DRF's JSON
parser reads the stream without that check; daphne buffers whatever arrives. This ASGI
wrapper answers 413 from the Content-Length before the application runs, and stops a
body without one (chunked) as soon as it passes the limit.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

Scope = dict[str, Any]


class RequestBodyLimit:
    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if self.max_bytes is not None else settings.MAX_REQUEST_BODY_BYTES
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django sees a client that went away and answers nothing; we do.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if exceeded:
                return
            started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await _too_large(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps(
        {"detail": f"the request body is limited to {limit} bytes", "code": "too_large"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
