"""Request ids: one id follows an action from the socket or the HTTP request through the
events it appends, the DM turn it causes, the model calls and every log line.

The current id lives in a contextvar, so it follows the code into `sync_to_async`
threads and asyncio tasks by itself. Three places set it:

- `RequestIdMiddleware` (HTTP): taken from the `X-Request-ID` header when it is a sane
  token, else made; set as `request.request_id` and echoed in the response header.
- the room consumer (WebSocket): one new id per client message.
- background tasks (`rpgai.tasks.enqueue`): the enqueuer's id travels with the task, in
  the Celery message headers (`request_id`) or into the in-process task's context.

`add_request_id` is the structlog processor that writes it into every log line.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

REQUEST_ID_HEADER = "X-Request-ID"
# The key under which a Celery task message carries the id (a message header).
CELERY_HEADER = "request_id"
# Event.request_id is a CharField(max_length=64).
MAX_LENGTH = 64
# What a client may choose: no spaces, quotes or control characters to forge log lines.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,63}")

_current: ContextVar[str] = ContextVar("rpgai_request_id", default="")

log = structlog.get_logger(__name__)


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str | None:
    """`value` when it is an acceptable id (1..64 safe characters), else None."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    return value if _ACCEPTABLE.fullmatch(value) else None


def get_request_id() -> str:
    """The current request id, or "" outside any request, message or task."""
    return _current.get()


def set_request_id(request_id: str) -> Token[str]:
    """Make `request_id` current; give the token to `reset_request_id` when done."""
    return _current.set((request_id or "")[:MAX_LENGTH])


def reset_request_id(token: Token[str]) -> None:
    _current.reset(token)


@contextmanager
def request_id_bound(request_id: str) -> Iterator[str]:
    """Within the block, `request_id` is the current id (and in every log line)."""
    token = set_request_id(request_id)
    try:
        yield get_request_id()
    finally:
        reset_request_id(token)


def add_request_id(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current request id, unless the line names one itself."""
    request_id = _current.get()
    if request_id:
        event_dict.setdefault("request_id", request_id)
    return event_dict


# --- HTTP ------------------------------------------------------------------------------------


class RequestIdMiddleware:
    """Give every HTTP request an id (see the module docstring) and log one line per
    request with its method, path (never the query string: it may carry a token),
    status and duration. Put it first in MIDDLEWARE so that every response has the
    header, redirects and errors included."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        request_id, token, started = self._begin(request)
        try:
            return self._finish(request, self.get_response(request), request_id, started)
        finally:
            reset_request_id(token)

    async def _acall(self, request: Any) -> Any:
        request_id, token, started = self._begin(request)
        try:
            return self._finish(request, await self.get_response(request), request_id, started)
        finally:
            reset_request_id(token)

    @staticmethod
    def _begin(request: Any) -> tuple[str, Token[str], float]:
        request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request.request_id = request_id
        return request_id, set_request_id(request_id), time.monotonic()

    @staticmethod
    def _finish(request: Any, response: Any, request_id: str, started: float) -> Any:
        response[REQUEST_ID_HEADER] = request_id
        log.info(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response


# --- Celery ----------------------------------------------------------------------------------

_task_tokens: dict[str, Token[str]] = {}


def celery_headers() -> dict[str, str]:
    """Message headers that carry the current id to a Celery worker."""
    request_id = get_request_id()
    return {CELERY_HEADER: request_id} if request_id else {}


def celery_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """`task_prerun` handler: the task's id is the enqueuer's (from the message headers;
    an eager task keeps its caller's), or a new one."""
    request = getattr(task, "request", None)
    carried = getattr(request, CELERY_HEADER, None)
    if not carried:
        carried = (getattr(request, "headers", None) or {}).get(CELERY_HEADER)
    request_id = clean_request_id(carried) or get_request_id() or new_request_id()
    _task_tokens[task_id or ""] = set_request_id(request_id)


def celery_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        try:
            reset_request_id(token)
        except ValueError:  # set in another context (should not happen with Celery pools)
            set_request_id("")
