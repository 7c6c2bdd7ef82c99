"""Limits on HTTP request bodies, and one answer to a body over any of them.

`RequestBodyLimit` (ASGI): the hard limit on every body, uploads included
(settings.MAX_REQUEST_BODY_BYTES). Django limits what it holds in memory
(DATA_UPLOAD_MAX_MEMORY_SIZE: JSON and form bodies, form fields) but not files, and daphne
buffers whatever arrives. This wrapper answers 413 from the Content-Length before the
application runs, and stops a body without one (chunked) as soon as it passes the limit.

`RequestBodyErrorsMiddleware` and `body_error_response` (Django): Django's own refusals
(too much data in memory, too many fields or files) as JSON `{"detail", "code"}` for the
API and a short page for the pages, never an HTML 400 with a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

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


# --- What Django itself refuses: request data over its limits ---------------------------------
#
# Django holds what it reads into memory (JSON and form bodies, form fields of a multipart
# body) to DATA_UPLOAD_MAX_MEMORY_SIZE, and counts fields and files; past a limit it raises
# RequestDataTooBig, TooManyFieldsSent or TooManyFilesSent wherever the body is first read.
# Unhandled, each is an HTML 400 with a traceback in the log. They are answered here, in one
# shape, wherever they arise: DRF views (rpgai.errors' exception handler), plain views
# (process_exception), the CSRF check of a page form (process_view) and, before anything
# reads it, a body whose Content-Length is already over the limit (__call__).

BODY_ERRORS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)
# Paths whose clients read JSON; anything else is a page and gets a short HTML page.
JSON_PATH_PREFIXES = ("/api/", "/internal/")
_MULTIPART = "multipart/form-data"
_FORMS = ("application/x-www-form-urlencoded", _MULTIPART)
_PAGE_TITLES = {
    "too_large": "Too large",
    "too_many_fields": "Too many fields",
    "too_many_files": "Too many files",
}

log = logging.getLogger(__name__)


def body_error_payload(exc: Exception) -> tuple[int, dict[str, str]]:
    """The status and JSON body for one of BODY_ERRORS."""
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return 400, {
            "detail": f"the request has too many fields; the limit is {limit}",
            "code": "too_many_fields",
        }
    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return 400, {
            "detail": f"the request has too many files; the limit is {limit}",
            "code": "too_many_files",
        }
    return 413, {
        "detail": (
            "the request is too large: JSON and form data are limited to "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (files uploaded as multipart "
            "are not counted)"
        ),
        "code": "too_large",
    }


def body_error_logged(request: HttpRequest, exc: Exception) -> None:
    """One line naming the limit, no traceback (django.request adds its usual warning for
    a 4xx); the request's data is marked unreadable, as Django does, so that nothing after
    us raises the same error again."""
    mark = getattr(request, "_mark_post_parse_error", None)
    if callable(mark):
        mark()
    log.info("request refused: %s (%s %s)", type(exc).__name__, request.method, request.path)


def body_error_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """JSON `{"detail", "code"}` for the API, a short page for the pages."""
    body_error_logged(request, exc)
    status, payload = body_error_payload(exc)
    if _wants_json(request):
        return JsonResponse(payload, status=status)
    title = _PAGE_TITLES[payload["code"]]
    page = (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{title} · rpgai</title></head>\n<body><main><h1>{title}</h1>"
        f"<p>{escape(payload['detail'])}. Go back and send less.</p>"
        '<p><a href="/">Back to my campaigns</a></p></main></body>\n</html>\n'
    )
    return HttpResponse(page, status=status)


def _wants_json(request: HttpRequest) -> bool:
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    return (request.content_type or "") == "application/json"


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class RequestBodyErrorsMiddleware:
    """Place it before CsrfViewMiddleware: its process_view must read a page form first."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        # Everything but multipart is read whole into memory by whoever reads it, and
        # refused there: refuse it now, before authentication or any query.
        if (
            limit is not None
            and _declared_length(request) > limit
            and request.content_type != _MULTIPART
        ):
            return body_error_response(request, RequestDataTooBig())
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        # CsrfViewMiddleware reads a page form's fields in its own process_view, where an
        # exception escapes every middleware's process_exception: read them first.
        if (
            request.method != "POST"
            or request.content_type not in _FORMS
            or getattr(view, "csrf_exempt", False)
        ):
            return None
        try:
            request.POST  # noqa: B018 - parsing is the point
            request.FILES  # noqa: B018
        except BODY_ERRORS as exc:
            return body_error_response(request, exc)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, BODY_ERRORS):
            return body_error_response(request, exception)
        return None
