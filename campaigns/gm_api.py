"""The GM's tools in the room, over HTTP: set a value, revert an event, reveal the dice
seed, direct the DM, ask the DM for another answer (retry).

Thin views over the authoritative GM services of `campaigns.tools`: every change is an
event in the log (a `gm` state patch, or the seed's reveal), never an edit in place.
Only the campaign's GM gets past `membership_required(..., gm=True)`; the services
check it again. Everything else a GM may want stays in the admin.

A change that hides an entity the players had seen (a GM "Hide", a revert of a reveal, a
retry that undoes one) is followed by a public `entity_withdrawn` in the same transaction
(campaigns.withdrawals): the players' pages drop it at once, learning nothing more. The
answer lists the change's own events, as before; the withdrawal reaches the room as events
do.
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rpgai.errors import NotFound

from . import retractions, selectors, services, tools
from .api import EnvelopeSerializer, _valid, membership_required
from .models import Event
from .withdrawals import with_withdrawals

# The fields of a character the room's "correct a value" form offers (the GM allow-list
# of campaigns.state_schema decides what is really allowed).
CHARACTER_FIELDS = ("hp", "max_hp", "ac", "name", "conditions", "inventory")

EventsOutput = inline_serializer("GmEvents", {"events": EnvelopeSerializer(many=True)})


def _events_response(events: list[Event], status_code: int = status.HTTP_201_CREATED) -> Response:
    return Response({"events": [selectors.event_envelope(e) for e in events]}, status=status_code)


def _request_id(request: Request) -> str:
    return getattr(request, "request_id", "") or ""


class GmSetValueApi(APIView):
    """Set one value of the state: a character's field, or any JSON pointer path."""

    class InputSerializer(serializers.Serializer):
        character_id = serializers.UUIDField(required=False)
        field = serializers.ChoiceField(choices=CHARACTER_FIELDS, required=False)
        path = serializers.CharField(max_length=300, required=False)
        value = serializers.JSONField()
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True)

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            by_character = "character_id" in data or "field" in data
            if by_character == ("path" in data):
                raise serializers.ValidationError(
                    "give either character_id and field, or a path (a JSON pointer)"
                )
            if by_character and not ("character_id" in data and "field" in data):
                raise serializers.ValidationError("character_id and field go together")
            if "path" in data and not data["path"].startswith("/"):
                raise serializers.ValidationError(
                    {"path": "a JSON pointer such as /characters/<id>/hp"}
                )
            return data

    @extend_schema(request=InputSerializer, responses={201: EventsOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        if "path" in data:
            path = data["path"]
        else:
            character_id = str(data["character_id"])
            snapshot = selectors.snapshot_get(
                campaign_id=campaign_id, viewer=selectors.Viewer.of(membership)
            )
            if snapshot is None or character_id not in snapshot.state.get("characters", {}):
                raise NotFound("no such character in this campaign")
            path = f"/characters/{character_id}/{data['field']}"
        events, _ = with_withdrawals(
            campaign_id=campaign_id,
            change=lambda: tools.gm_set_value(
                campaign_id=campaign_id,
                by_user=request.user,
                path=path,
                value=data["value"],
                reason=data.get("reason", ""),
                request_id=_request_id(request),
            ),
            request_id=_request_id(request),
        )
        return _events_response(events)


class GmRevertApi(APIView):
    """Undo what one event did to the state, with a compensating GM patch."""

    class InputSerializer(serializers.Serializer):
        seq = serializers.IntegerField(min_value=1)
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True)

    @extend_schema(request=InputSerializer, responses={201: EventsOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        events, _ = with_withdrawals(
            campaign_id=campaign_id,
            change=lambda: tools.gm_revert_event(
                campaign_id=campaign_id,
                by_user=request.user,
                seq=data["seq"],
                reason=data.get("reason", ""),
                request_id=_request_id(request),
            ),
            request_id=_request_id(request),
        )
        return _events_response(events)


class GmDiceRevealApi(APIView):
    """Reveal the secret dice seed (every roll under it can then be checked) and commit
    a new one."""

    @extend_schema(request=None, responses={201: EventsOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        events = tools.dice_seed_reveal(
            campaign_id=campaign_id, by_user=request.user, request_id=_request_id(request)
        )
        return _events_response(events)


class GmDirectionApi(APIView):
    """Direct the DM (CONTRACTS §7 "GM direction"): a fact of the world or an instruction,
    never a character's action. `secret` keeps it to the GMs; `now` (default) asks the DM
    to narrate it at once, otherwise it joins the next turn. Same as the socket's
    `client.gm_direction`."""

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(max_length=2000, trim_whitespace=True)
        secret = serializers.BooleanField(required=False, default=False)
        now = serializers.BooleanField(required=False, default=True)

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            # DRF reads "yes", 1 or "true" as true: a toggle is sent as a JSON boolean.
            for name in ("secret", "now"):
                raw = self.initial_data.get(name)
                if raw is not None and not isinstance(raw, bool):
                    raise serializers.ValidationError({name: "true or false"})
            return data

    @extend_schema(request=InputSerializer, responses={201: EventsOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        event = services.gm_direction_give(
            membership=membership,
            text=data["text"],
            secret=data["secret"],
            now=data["now"],
            request_id=_request_id(request),
        )
        return _events_response([event])


# The largest seq a narration can have (Event.seq is a PositiveIntegerField): a larger
# one in the URL is simply not there.
SEQ_MAX = 2**31 - 1

ErrorOutput = inline_serializer(
    "GmError", {"detail": serializers.CharField(), "code": serializers.CharField()}
)


class NarrationRetryApi(APIView):
    """Retry keeps the dice (CONTRACTS §7): take back the latest narration and have the DM
    answer the same actions again, given the same roll results.

    202: the retraction and the compensating GM patch that undoes the turn's changes are
    in the log (listed here); the new answer follows on the socket, as any turn's does.
    409 when a player acted after that narration, when it is not the latest, when it was
    retried already, or when what its turn changed has been changed since."""

    @extend_schema(
        request=None,
        responses={202: EventsOutput, 403: ErrorOutput, 404: ErrorOutput, 409: ErrorOutput},
    )
    def post(self, request: Request, campaign_id: uuid.UUID, seq: int) -> Response:
        membership_required(request, campaign_id, gm=True)
        if not 1 <= seq <= SEQ_MAX:
            raise NotFound(f"no narration #{seq} in this campaign")
        events, _ = with_withdrawals(
            campaign_id=campaign_id,
            change=lambda: retractions.narration_retract(
                campaign_id=campaign_id,
                by_user=request.user,
                narration_seq=seq,
                request_id=_request_id(request),
            ),
            request_id=_request_id(request),
        )
        return _events_response(events, status.HTTP_202_ACCEPTED)
