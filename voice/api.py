"""The audio of a spoken segment, for the members of its campaign only."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from campaigns.selectors import Viewer, campaign_get, membership_get
from rpgai.errors import NotFound, PermissionDenied

from . import selectors

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Content at a segment's URL never changes; only this browser's user may keep it.
CACHE_CONTROL = "private, max-age=86400, immutable"


class SpeechAudioApi(APIView):
    """`GET /api/campaigns/<id>/audio/<segment_id>`: the WAV file of one segment.

    Members of the campaign who may see the narration get it (with single byte ranges,
    which audio elements ask for); others get 403, unknown ids 404, anonymous 401.
    """

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # An audio element may accept only audio/*: errors still go out as JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="campaign_audio_segment",
        responses={
            (200, "audio/wav"): OpenApiResponse(OpenApiTypes.BINARY, description="WAV audio"),
            (206, "audio/wav"): OpenApiResponse(OpenApiTypes.BINARY, description="a byte range"),
            401: OpenApiResponse(description="not signed in"),
            403: OpenApiResponse(description="not a member of the campaign"),
            404: OpenApiResponse(description="no such campaign or segment"),
            416: OpenApiResponse(description="range not satisfiable"),
        },
    )
    def get(self, request: Request, campaign_id: uuid.UUID, segment_id: uuid.UUID) -> HttpResponse:
        membership = membership_get(campaign_id=campaign_id, user_id=request.user.id)
        if membership is None:
            if campaign_get(campaign_id=campaign_id) is None:
                raise NotFound("no such campaign")
            raise PermissionDenied("you are not a member of this campaign", code="not_a_member")
        segment = selectors.speech_segment_get(campaign_id=campaign_id, segment_id=segment_id)
        # A narration the member may not read (a whisper's answer) is not heard either. A
        # sentence of a narration still streaming has no narration yet: what streams is
        # the public narration, which every member reads as it streams.
        if segment is None or (
            segment.narration_seq is not None
            and selectors.narration_get(
                campaign_id=campaign_id,
                narration_seq=segment.narration_seq,
                viewer=Viewer.of(membership),
            )
            is None
        ):
            raise NotFound("no such audio")
        try:
            data = selectors.speech_audio_read(segment=segment)
        except (FileNotFoundError, OSError):
            raise NotFound("this audio is no longer stored") from None
        return _ranged(data, request.headers.get("Range", ""))


def _ranged(data: bytes, range_header: str) -> HttpResponse:
    """The whole file, or the one byte range asked for (206), or 416."""
    size = len(data)
    status, body, content_range = 200, data, ""
    match = _RANGE.fullmatch(range_header.strip()) if range_header else None
    if match and (match.group(1) or match.group(2)):
        first, last = match.group(1), match.group(2)
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:  # a suffix: the last N bytes
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        status, body, content_range = 206, data[start : end + 1], f"bytes {start}-{end}/{size}"
    response = HttpResponse(body, status=status, content_type="audio/wav")
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = CACHE_CONTROL
    response["Content-Disposition"] = "inline"
    response["X-Content-Type-Options"] = "nosniff"
    if content_range:
        response["Content-Range"] = content_range
    return response
