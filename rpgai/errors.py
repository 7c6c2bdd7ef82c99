"""Domain errors and their one translation into API responses."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django_ratelimit.exceptions import Ratelimited
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from rpgai.body_limit import BODY_ERRORS, body_error_logged, body_error_payload
from rpgai.ratelimit import ratelimited_response

log = logging.getLogger(__name__)

# What a client is told while the database is down or restarting (HTTP 503 with
# Retry-After, WebSocket `error`; code `unavailable`). Sending the same action again (same
# action_id) is safe: an action is recorded once.
DATABASE_UNAVAILABLE = "the database is unavailable; try again in a moment"
RETRY_AFTER_SECONDS = 2


class DomainError(Exception):
    """An expected failure a client can act on; `code` is stable, `detail` is for people."""

    code = "invalid"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class NotFound(DomainError):
    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND


class PermissionDenied(DomainError):
    code = "forbidden"
    http_status = status.HTTP_403_FORBIDDEN


class Conflict(DomainError):
    code = "conflict"
    http_status = status.HTTP_409_CONFLICT


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Ratelimited):
        return ratelimited_response(exc)
    if isinstance(exc, DomainError):
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.http_status)
    if isinstance(exc, BODY_ERRORS):
        # Django's refusal of a body over its limits (DRF reads JSON and forms through
        # request.body): 413 `too_large` or 400, as for plain views (rpgai.body_limit).
        request = context.get("request")
        if request is not None:
            body_error_logged(getattr(request, "_request", request), exc)
        status_code, payload = body_error_payload(exc)
        return Response(payload, status=status_code)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down or restarting (or cut the connection): a 503 the client
        # may retry, not a 500. The connection is replaced at the next request.
        log.warning("database unavailable: %s", exc)
        return Response(
            {"detail": DATABASE_UNAVAILABLE, "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    response = exception_handler(exc, context)
    if response is not None:
        data = response.data
        if isinstance(data, dict) and "detail" in data:
            code = getattr(data["detail"], "code", None) or getattr(exc, "default_code", "error")
            response.data = {"detail": str(data["detail"]), "code": code}
        else:
            code = getattr(exc, "default_code", "invalid")
            response.data = {"detail": data, "code": code}
    return response


def not_found(request: Any, exception: Exception | None = None) -> Any:
    """Django's 404 (handler404, with DEBUG off): for an address under /api/ that no route
    matches, JSON in the API's shape; the page otherwise."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": "There is nothing at this address in the API.", "code": "not_found"},
            status=404,
        )
    return page_not_found(request, exception)
