"""The campaigns HTTP API (CONTRACTS §4): thin views over services and selectors."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rpgai.errors import NotFound, PermissionDenied

from . import selectors, services
from .events import (
    PREMISE_MAX_CHARS,
    SAFETY_ITEM_MAX_CHARS,
    SAFETY_ITEMS_MAX,
    TONE_MAX_CHARS,
    TURN_MODES,
)
from .models import CampaignBan, Membership
from .tool_events import DC_MAX, DC_MIN
from .tools import roll_make


def membership_required(
    request: Request, campaign_id: uuid.UUID, *, gm: bool = False
) -> Membership:
    """The caller's membership of the campaign: 404 if it does not exist, 403 if not theirs."""
    membership = selectors.membership_get(campaign_id=campaign_id, user_id=request.user.id)
    if membership is None:
        if selectors.campaign_get(campaign_id=campaign_id) is None:
            raise NotFound("no such campaign")
        raise PermissionDenied("you are not a member of this campaign", code="not_a_member")
    if gm and not membership.is_gm:
        raise PermissionDenied("only the campaign's GM may do this", code="gm_only")
    return membership


class EnvelopeSerializer(serializers.Serializer):
    """The event envelope of CONTRACTS §1 (documentation only; envelopes are built by selectors)."""

    id = serializers.UUIDField()
    campaign_id = serializers.UUIDField()
    seq = serializers.IntegerField()
    type = serializers.CharField()
    actor = serializers.DictField()
    payload = serializers.DictField()
    visibility = serializers.DictField()
    request_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class MemberSerializer(serializers.Serializer):
    user_id = serializers.UUIDField()
    display_name = serializers.CharField()
    role = serializers.CharField()


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def campaign_summary(
    membership: Membership, status: selectors.TableStatus | None = None
) -> dict[str, Any]:
    """The campaign as the list shows it, with its table's status (`tables_status`)."""
    campaign = membership.campaign
    if status is None:
        status = selectors.tables_status(campaign_ids=[campaign.id]).get(
            str(campaign.id), selectors.TableStatus()
        )
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "edition": campaign.edition,
        "role": membership.role,
        "archived": campaign.archived,
        "created_at": _iso(campaign.created_at),
        "players": status.players,
        "last_activity_at": _iso(status.last_activity_at),
        "whose_turn": {
            "waiting_for": status.waiting_for,
            "user_ids": status.waiting_user_ids,
            "text": status.whose_turn_text,
        },
    }


def campaign_detail(membership: Membership) -> dict[str, Any]:
    data = campaign_summary(membership)
    # The setup as every member sees it in the snapshot's `campaign` (CONTRACTS §7); the
    # turn mode is the campaign's setting now (PUT .../turns may have changed it since).
    snapshot = selectors.snapshot_get(campaign_id=membership.campaign_id)
    data.update(selectors.campaign_setup(snapshot.state if snapshot else {}))
    data["turn_mode"] = membership.campaign.turn_mode
    data["members"] = [
        {"user_id": str(m.user_id), "display_name": m.display_name, "role": m.role}
        for m in selectors.members_of(campaign_id=membership.campaign_id)
    ]
    if membership.is_gm:
        data["invite_code"] = membership.campaign.invite_code
    return data


class WhoseTurnOutput(serializers.Serializer):
    waiting_for = serializers.ChoiceField(
        choices=["dm", "players"],
        allow_null=True,
        help_text="dm: a DM turn is owed or running; players: a round waits for user_ids; "
        "null: nothing is pending",
    )
    user_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="the players a round waits for"
    )
    text = serializers.CharField(help_text='plain words: "Waiting for the DM", "Waiting for Ann"')


class CampaignOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    edition = serializers.CharField()
    role = serializers.CharField()
    archived = serializers.BooleanField(help_text="read-only until its GM un-archives it")
    created_at = serializers.DateTimeField()
    players = serializers.IntegerField(help_text="members who play (GMs not counted)")
    last_activity_at = serializers.DateTimeField(
        allow_null=True, help_text="the time of the campaign's latest event"
    )
    whose_turn = WhoseTurnOutput()


class CampaignDetailOutput(CampaignOutput):
    premise = serializers.CharField()
    tone = serializers.CharField()
    turn_mode = serializers.ChoiceField(choices=TURN_MODES)
    lines = serializers.ListField(child=serializers.CharField())
    veils = serializers.ListField(child=serializers.CharField())
    members = MemberSerializer(many=True)
    invite_code = serializers.CharField(required=False, help_text="GM only")


def _safety_list(help_text: str, **kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=SAFETY_ITEM_MAX_CHARS, allow_blank=True),
        max_length=SAFETY_ITEMS_MAX,
        help_text=help_text,
        **kwargs,
    )


LINES_HELP = (
    f"content the DM never includes, in any form (at most {SAFETY_ITEMS_MAX} items of "
    f"{SAFETY_ITEM_MAX_CHARS} characters)"
)
VEILS_HELP = (
    "content that may happen in the story but stays offscreen: the DM fades to black "
    f"(at most {SAFETY_ITEMS_MAX} items of {SAFETY_ITEM_MAX_CHARS} characters)"
)


class _StrictListsMixin:
    """`lines` and `veils` are JSON lists: DRF would take a form's single string, and a
    list of numbers would turn into texts."""

    initial_data: Any

    def _check_lists(self, data: dict[str, Any]) -> dict[str, Any]:
        for name in ("lines", "veils"):
            raw = self.initial_data.get(name) if hasattr(self.initial_data, "get") else None
            if raw is None:
                continue
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                raise serializers.ValidationError({name: "a list of short texts"})
        return data


class CampaignListCreateApi(APIView):
    class FilterSerializer(serializers.Serializer):
        archived = serializers.BooleanField(
            required=False, default=False, help_text="1: list the archived campaigns too"
        )

    class InputSerializer(_StrictListsMixin, serializers.Serializer):
        name = serializers.CharField(max_length=120)
        edition = serializers.CharField(max_length=40, default="5e")
        display_name = serializers.CharField(max_length=60, required=False)
        premise = serializers.CharField(
            max_length=PREMISE_MAX_CHARS,
            required=False,
            allow_blank=True,
            default="",
            help_text="what the story is about; the DM's opening scene starts from it",
        )
        tone = serializers.CharField(
            max_length=TONE_MAX_CHARS,
            required=False,
            allow_blank=True,
            default="",
            help_text="how it should feel: grim, cosy, heroic, eerie...",
        )
        turn_mode = serializers.ChoiceField(choices=TURN_MODES, required=False, default="free")
        lines = _safety_list(LINES_HELP, required=False, default=list)
        veils = _safety_list(VEILS_HELP, required=False, default=list)

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            return self._check_lists(data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "archived", bool, description="1: the archived campaigns too (default 0)"
            )
        ],
        responses=CampaignOutput(many=True),
        operation_id="campaigns_list",
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        memberships = list(
            selectors.campaigns_for_user(
                user_id=request.user.id,
                archived=None if filters.validated_data["archived"] else False,
            )
        )
        # One read for every campaign's players, activity and turn (no query per campaign).
        statuses = selectors.tables_status(campaign_ids=[m.campaign_id for m in memberships])
        return Response(
            [
                campaign_summary(m, statuses.get(str(m.campaign_id), selectors.TableStatus()))
                for m in memberships
            ]
        )

    @extend_schema(request=InputSerializer, responses={201: CampaignDetailOutput})
    def post(self, request: Request) -> Response:
        data = _valid(self.InputSerializer, request)
        # The DM narrates an opening scene right after the commit (CONTRACTS §7).
        campaign = services.campaign_create(
            name=data["name"],
            edition=data["edition"],
            creator=request.user,
            display_name=data.get("display_name"),
            premise=data["premise"],
            tone=data["tone"],
            turn_mode=data["turn_mode"],
            lines=data["lines"],
            veils=data["veils"],
            opening=True,
            request_id=getattr(request, "request_id", ""),
        )
        membership = selectors.membership_get(campaign_id=campaign.id, user_id=request.user.id)
        return Response(campaign_detail(membership), status=status.HTTP_201_CREATED)


class CampaignDetailApi(APIView):
    class UpdateSerializer(_StrictListsMixin, serializers.Serializer):
        name = serializers.CharField(max_length=120, required=False)
        premise = serializers.CharField(
            max_length=PREMISE_MAX_CHARS, required=False, allow_blank=True
        )
        tone = serializers.CharField(max_length=TONE_MAX_CHARS, required=False, allow_blank=True)
        lines = _safety_list(LINES_HELP, required=False)
        veils = _safety_list(VEILS_HELP, required=False)
        archived = serializers.BooleanField(
            required=False,
            help_text="true: read-only (no actions, rolls, directions, whispers or DM turns) "
            "and out of the campaign list; false brings it back",
        )

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            known = set(self.fields)
            unknown = sorted(str(key) for key in self.initial_data if key not in known)
            if unknown:
                hint = (
                    " (the turn mode is set with PUT /api/campaigns/<id>/turns)"
                    if "turn_mode" in unknown
                    else ""
                )
                raise serializers.ValidationError(
                    {
                        "non_field_errors": [
                            f"{', '.join(unknown)} cannot be changed here; change "
                            f"{', '.join(services.CAMPAIGN_UPDATABLE)}{hint}"
                        ]
                    }
                )
            raw = self.initial_data.get("archived")
            if raw is not None and not isinstance(raw, bool):
                raise serializers.ValidationError({"archived": "true or false"})
            if not data:
                raise serializers.ValidationError(
                    {
                        "non_field_errors": [
                            f"send at least one of {', '.join(services.CAMPAIGN_UPDATABLE)}"
                        ]
                    }
                )
            return self._check_lists(data)

    @extend_schema(responses=CampaignDetailOutput)
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        return Response(campaign_detail(membership_required(request, campaign_id)))

    @extend_schema(request=UpdateSerializer, responses={200: CampaignDetailOutput})
    def patch(self, request: Request, campaign_id: uuid.UUID) -> Response:
        """GM only: change the setup (name, premise, tone, lines, veils) or archive the
        campaign (CONTRACTS §7); event `campaign_updated` with what changed."""
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.UpdateSerializer, request)
        services.campaign_update(
            campaign_id=campaign_id,
            by_user=request.user,
            changes=dict(data),
            request_id=getattr(request, "request_id", ""),
        )
        membership = selectors.membership_get(campaign_id=campaign_id, user_id=request.user.id)
        return Response(campaign_detail(membership))


class XCardApi(APIView):
    """Any member taps the X-card (CONTRACTS §7): `x_card` appended with actor
    `{"kind": "system"}`, and a DM turn that steers away from the current scene starts at
    once. Anonymous: who tapped it is stored nowhere. Same as the socket's `client.x_card`,
    which is the better path: a WebSocket message leaves no line per message in any
    access log, an HTTP request does (in a proxy's log, with the client's address)."""

    @extend_schema(
        request=None,
        responses={202: inline_serializer("XCardTapped", {"seq": serializers.IntegerField()})},
    )
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        event = services.x_card_tap(membership=membership)
        return Response({"seq": event.seq}, status=status.HTTP_202_ACCEPTED)


class CampaignJoinApi(APIView):
    class InputSerializer(serializers.Serializer):
        invite_code = serializers.CharField(max_length=16)
        display_name = serializers.CharField(max_length=60, required=False)

    @extend_schema(request=InputSerializer, responses={200: CampaignDetailOutput})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        data = _valid(self.InputSerializer, request)
        if selectors.campaign_get(campaign_id=campaign_id) is None:
            raise NotFound("no such campaign")
        membership = services.campaign_join(
            invite_code=data["invite_code"],
            user=request.user,
            display_name=data.get("display_name"),
            campaign_id=campaign_id,
        )
        return Response(campaign_detail(membership))


class EventListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        after_seq = serializers.IntegerField(min_value=0, default=0)
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)

    @extend_schema(
        parameters=[
            OpenApiParameter("after_seq", int, description="events after this seq (default 0)"),
            OpenApiParameter("limit", int, description="at most this many (default 100, max 1000)"),
        ],
        responses=EnvelopeSerializer(many=True),
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        events = selectors.events_after(
            campaign_id=campaign_id,
            after_seq=filters.validated_data["after_seq"],
            limit=filters.validated_data["limit"],
            viewer=selectors.Viewer.of(membership),
        )
        return Response(selectors.event_envelopes(events, campaign_id=campaign_id))


class SnapshotApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "Snapshot", {"version": serializers.IntegerField(), "state": serializers.DictField()}
        )
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        snapshot = selectors.snapshot_get(
            campaign_id=campaign_id, viewer=selectors.Viewer.of(membership)
        )
        return Response({"version": snapshot.version, "state": snapshot.state})


class ActionCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        action_id = serializers.UUIDField()
        text = serializers.CharField(max_length=2000, trim_whitespace=True)

    @extend_schema(
        request=InputSerializer,
        responses={
            202: inline_serializer(
                "ActionAccepted",
                {"action_id": serializers.UUIDField(), "seq": serializers.IntegerField()},
            )
        },
    )
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _valid(self.InputSerializer, request)
        event = services.player_action_submit(
            membership=membership,
            action_id=data["action_id"],
            text=data["text"],
            request_id=getattr(request, "request_id", ""),
        )
        return Response(
            {"action_id": str(data["action_id"]), "seq": event.seq}, status=status.HTTP_202_ACCEPTED
        )


class RollCreateApi(APIView):
    """A member's roll with the server's dice, exactly as `client.roll` over the socket."""

    class InputSerializer(serializers.Serializer):
        formula = serializers.CharField(max_length=100)
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
        dc = serializers.IntegerField(
            min_value=DC_MIN,
            max_value=DC_MAX,
            required=False,
            allow_null=True,
            default=None,
            help_text="the target: roll_result says whether total >= dc",
        )
        private = serializers.BooleanField(
            required=False, default=False, help_text="seen by the roller and the GMs only"
        )
        roll_id = serializers.UUIDField(
            required=False,
            allow_null=True,
            default=None,
            help_text="the check the DM asked you to roll: its formula, reason and DC are used",
        )

        def validate_dc(self, value: Any) -> Any:
            # DRF's IntegerField takes "15", 15.0 and true as 15 (or 1): a DC is a number.
            raw = self.initial_data.get("dc")
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int)):
                raise serializers.ValidationError("the DC is a whole number, such as 15")
            return value

        def validate_private(self, value: bool) -> bool:
            if not isinstance(self.initial_data.get("private", False), bool):
                raise serializers.ValidationError("private is true or false")
            return value

    @extend_schema(request=InputSerializer, responses={201: EnvelopeSerializer(many=True)})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _valid(self.InputSerializer, request)
        events = roll_make(
            campaign_id=campaign_id,
            formula=data["formula"],
            reason=data["reason"],
            requested_by="player",
            actor_kind="gm" if membership.is_gm else "player",
            actor_user_id=membership.user_id,
            request_id=getattr(request, "request_id", ""),
            dc=data["dc"],
            private=data["private"],
            roll_id=data["roll_id"],
        )
        return Response(
            [selectors.event_envelope(e) for e in events], status=status.HTTP_201_CREATED
        )


class MemberKickApi(APIView):
    """GM only: remove a member, who is banned (CONTRACTS §7 "GM controls"). Their open
    sockets close (4403) on every server process, as every room connection closes on its
    own member's `player_left`; `join` refuses them until the ban is lifted."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, campaign_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        services.member_kick(
            campaign_id=campaign_id,
            user_id=user_id,
            by_user=request.user,
            request_id=getattr(request, "request_id", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class BanOutput(serializers.Serializer):
    user_id = serializers.UUIDField()
    username = serializers.CharField()
    display_name = serializers.CharField(help_text="their name in the campaign when kicked")
    banned_at = serializers.DateTimeField()
    by = serializers.UUIDField(allow_null=True, help_text="the GM who kicked them")


def ban_summary(ban: CampaignBan) -> dict[str, Any]:
    return {
        "user_id": str(ban.user_id),
        "username": ban.user.get_username(),
        "display_name": ban.display_name or ban.user.get_username(),
        "banned_at": ban.banned_at.isoformat().replace("+00:00", "Z"),
        "by": str(ban.banned_by_id) if ban.banned_by_id else None,
    }


class BanListApi(APIView):
    """GM only: who is kept out of the campaign."""

    @extend_schema(responses=BanOutput(many=True), operation_id="campaigns_bans_list")
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        return Response([ban_summary(b) for b in selectors.bans_of(campaign_id=campaign_id)])


class BanDeleteApi(APIView):
    """GM only: lift a ban; the user may join again with the current invite code."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, campaign_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        services.ban_lift(campaign_id=campaign_id, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InviteCodeRotateApi(APIView):
    """GM only: a new invite code; the old one stops working at once."""

    @extend_schema(
        request=None,
        responses={200: inline_serializer("InviteCode", {"invite_code": serializers.CharField()})},
    )
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        return Response({"invite_code": services.invite_code_rotate(campaign_id=campaign_id)})


class LeaveApi(APIView):
    """A member leaves the campaign (CONTRACTS §7 "GM controls"): `player_left`, their
    character leaves the party (`departed`), their sockets close. The only GM of the
    campaign is refused (409 `sole_gm`): hand the GM role to another member first."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id)
        services.membership_leave(
            campaign_id=campaign_id,
            user_id=request.user.id,
            request_id=getattr(request, "request_id", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class GmRoleApi(APIView):
    """GM only: hand the GM role to another member (CONTRACTS §7 "GM controls"). The
    member becomes a GM and the caller a player (event `gm_role_handed`); the room's
    sockets of both follow at once."""

    class InputSerializer(serializers.Serializer):
        to = serializers.UUIDField(help_text="the user id of a member of the campaign")

    @extend_schema(
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "GmRoleHanded",
                {
                    "from_user_id": serializers.UUIDField(),
                    "to_user_id": serializers.UUIDField(),
                    "seq": serializers.IntegerField(),
                },
            )
        },
    )
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership_required(request, campaign_id, gm=True)
        data = _valid(self.InputSerializer, request)
        event = services.gm_role_hand(
            campaign_id=campaign_id,
            by_user=request.user,
            to_user_id=data["to"],
            request_id=getattr(request, "request_id", ""),
        )
        return Response(
            {
                "from_user_id": event.payload["from_user_id"],
                "to_user_id": event.payload["to_user_id"],
                "seq": event.seq,
            }
        )


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
