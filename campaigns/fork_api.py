"""GM endpoints of issue 12: fork a campaign (`POST /api/campaigns/<id>/fork`) and its turn
settings (`GET, PUT /api/campaigns/<id>/turns`). Thin views over `campaigns.forks` and
`campaigns.rounds`."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .api import _valid, membership_required
from .forks import campaign_fork
from .models import Campaign
from .rounds import ROUND_SECONDS_MAX, ROUND_SECONDS_MIN, campaign_turn_mode_set

ForkOutput = inline_serializer(
    "CampaignFork",
    {
        "id": serializers.UUIDField(),
        "forked_from": serializers.UUIDField(),
        "forked_at_seq": serializers.IntegerField(),
    },
)


class CampaignForkApi(APIView):
    """A new campaign with the same members and the events up to `at_seq` (GM only)."""

    class InputSerializer(serializers.Serializer):
        at_seq = serializers.IntegerField(min_value=1)

    @extend_schema(request=InputSerializer, responses={201: ForkOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        fork = campaign_fork(
            campaign_id=campaign_id,
            at_seq=data["at_seq"],
            by_user=request.user,
            request_id=getattr(request, "request_id", "") or "",
        )
        return Response(
            {"id": str(fork.id), "forked_from": str(campaign_id), "forked_at_seq": data["at_seq"]},
            status=status.HTTP_201_CREATED,
        )


def _turns(campaign: Campaign) -> dict[str, Any]:
    return {"turn_mode": campaign.turn_mode, "round_seconds": campaign.round_seconds}


class CampaignTurnsApi(APIView):
    """The campaign's turn mode (`free` or `rounds`) and round timer in seconds (GM only)."""

    class InputSerializer(serializers.Serializer):
        turn_mode = serializers.ChoiceField(choices=Campaign.TurnMode.values, required=False)
        round_seconds = serializers.IntegerField(
            min_value=ROUND_SECONDS_MIN, max_value=ROUND_SECONDS_MAX, required=False
        )

    OutputSerializer = inline_serializer(
        "CampaignTurns",
        {"turn_mode": serializers.CharField(), "round_seconds": serializers.IntegerField()},
    )

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id, gm=True)
        return Response(_turns(membership.campaign))

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        campaign = campaign_turn_mode_set(
            campaign_id=campaign_id,
            by_user=request.user,
            turn_mode=data.get("turn_mode"),
            round_seconds=data.get("round_seconds"),
        )
        return Response(_turns(campaign))
