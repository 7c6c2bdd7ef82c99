"""Domain errors and their one translation into API responses."""

from __future__ import annotations

from typing import Any

from django_ratelimit.exceptions import Ratelimited
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from rpgai.ratelimit import ratelimited_response


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
