"""`POST /internal/tools/execute`: run tool calls plus a narration for a campaign, exactly
as a DM turn does (CONTRACTS §2). For trusted internal callers only: the request must
carry `X-Internal-Secret`, compared in constant time. No cookie or token is ever looked
at, so no user's session or Bearer token can reach it (and CSRF does not apply).
"""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from rpgai.errors import DomainError

from . import selectors
from .tools import turn_commit

MAX_BODY_BYTES = 64 * 1024


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    campaign_id: uuid.UUID = Field(strict=False)
    narration: StrictStr = Field(min_length=1, max_length=20000)
    options: list[StrictStr] = Field(min_length=1, max_length=8)
    tool_calls: list[Any] = Field(default_factory=list)
    through_seq: StrictInt = Field(default=0, ge=0)
    fallback: StrictBool = False
    turn_id: uuid.UUID | None = Field(default=None, strict=False)


def _error(status: int, code: str, detail: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _secret_ok(request: HttpRequest) -> bool:
    expected = getattr(settings, "INTERNAL_TOOLS_SECRET", "") or ""
    given = request.headers.get("X-Internal-Secret", "")
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@csrf_exempt
def tools_execute(request: HttpRequest) -> JsonResponse:
    if not _secret_ok(request):
        return _error(403, "forbidden", "this endpoint needs the internal secret")
    if request.method != "POST":
        return _error(405, "method_not_allowed", "use POST")
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _error(400, "invalid", "bad Content-Length")
    # Checked before the body is read (Django would refuse a huge one with an HTML 400).
    if declared > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(request.body or b"null", parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "invalid", "the body is not JSON (NaN and Infinity are not JSON)")
    if not isinstance(data, dict):
        return _error(400, "invalid", "the body is a JSON object")
    try:
        body = ExecuteBody.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:5]
        ]
        return _error(400, "invalid", "; ".join(problems))
    if selectors.campaign_get(campaign_id=body.campaign_id) is None:
        return _error(404, "not_found", "no such campaign")
    if any(not option.strip() for option in body.options):
        return _error(400, "invalid", "options must not be blank")
    try:
        result = turn_commit(
            campaign_id=body.campaign_id,
            turn_id=str(body.turn_id or uuid.uuid4()),
            narration=body.narration,
            options=body.options,
            tool_calls=body.tool_calls,
            through_seq=body.through_seq,
            fallback=body.fallback,
            request_id=request.headers.get("X-Request-ID", "")[:64],
        )
    except DomainError as exc:
        return _error(exc.http_status, exc.code, exc.detail)
    return JsonResponse(
        {
            "events": [selectors.event_envelope(e) for e in result.events],
            "rejections": [
                {"index": r.index, "name": r.name, "reason": r.reason} for r in result.rejections
            ],
        },
        status=201,
    )
