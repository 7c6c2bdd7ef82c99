"""The characters' HTTP API (CONTRACTS §7 "Characters"): thin views over
`campaigns.characters`. Errors are JSON {detail, code} in plain words."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .api import membership_required
from .characters import CharacterInvalid, character_create, character_update, characters_seen_by


def _abilities(name: str) -> serializers.Serializer:
    return inline_serializer(
        name,
        {key: serializers.IntegerField(min_value=1, max_value=30) for key in _SIX},
        required=False,
        allow_null=True,
    )


_SIX = ("str", "dex", "con", "int", "wis", "cha")

CharacterOutput = type(
    "CharacterOutput",
    (serializers.Serializer,),
    {
        "id": serializers.UUIDField(),
        "owner_user_id": serializers.UUIDField(allow_null=True),
        "sheet": serializers.ChoiceField(
            choices=["5e", "light"],
            required=False,
            help_text="absent while the character is the placeholder made at join",
        ),
        "name": serializers.CharField(),
        "class": serializers.CharField(required=False),
        "ancestry": serializers.CharField(required=False),
        "level": serializers.IntegerField(required=False),
        "abilities": _abilities("CharacterAbilities"),
        "modifiers": serializers.DictField(child=serializers.IntegerField(), required=False),
        "proficiency_bonus": serializers.IntegerField(required=False),
        "saving_throws": serializers.ListField(child=serializers.CharField(), required=False),
        "ability_method": serializers.CharField(required=False),
        "backstory": serializers.CharField(required=False),
        "hp": serializers.IntegerField(),
        "max_hp": serializers.IntegerField(),
        "ac": serializers.IntegerField(),
        "inventory": serializers.ListField(child=serializers.CharField()),
        "conditions": serializers.ListField(child=serializers.CharField()),
    },
)

CharacterCreateInput = inline_serializer(
    "CharacterCreate",
    {
        "name": serializers.CharField(max_length=60),
        "class": serializers.CharField(
            max_length=40, required=False, help_text="5e: an SRD 5.1 class (fighter, wizard, ...)"
        ),
        "ancestry": serializers.CharField(
            max_length=40, required=False, help_text="5e: an SRD 5.1 ancestry (dwarf, elf, ...)"
        ),
        "level": serializers.IntegerField(min_value=1, max_value=20, default=1),
        "backstory": serializers.CharField(max_length=4000, required=False, allow_blank=True),
        "ability_method": serializers.ChoiceField(
            choices=["standard_array", "point_buy", "roll"],
            required=False,
            help_text="5e only (required there)",
        ),
        "abilities": _abilities("CharacterAbilitiesInput"),
        "ancestry_choices": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="half-elf: the two abilities (not cha) that get +1",
        ),
    },
)

CharacterPatchInput = inline_serializer(
    "CharacterPatch",
    {
        "name": serializers.CharField(max_length=60, required=False),
        "backstory": serializers.CharField(max_length=4000, required=False, allow_blank=True),
        "class": serializers.CharField(max_length=40, required=False, help_text="GM only"),
        "ancestry": serializers.CharField(max_length=40, required=False, help_text="GM only"),
        "level": serializers.IntegerField(
            min_value=1, max_value=20, required=False, help_text="GM only"
        ),
        "abilities": _abilities("CharacterAbilitiesPatch"),
        "hp": serializers.IntegerField(min_value=0, required=False, help_text="GM only"),
        "max_hp": serializers.IntegerField(min_value=1, required=False, help_text="GM only"),
        "ac": serializers.IntegerField(min_value=0, required=False, help_text="GM only"),
        "inventory": serializers.ListField(
            child=serializers.CharField(), required=False, help_text="GM only"
        ),
        "conditions": serializers.ListField(
            child=serializers.CharField(), required=False, help_text="GM only"
        ),
    },
)


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise CharacterInvalid("send a JSON object")
    return request.data


class CharacterListCreateApi(APIView):
    @extend_schema(
        responses=CharacterOutput(many=True),
        operation_id="campaigns_characters_list",
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        return Response(characters_seen_by(membership=membership))

    @extend_schema(
        request=CharacterCreateInput,
        responses={201: CharacterOutput},
    )
    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        data = _body(request)
        character = character_create(
            membership=membership,
            name=data.get("name"),
            class_=data.get("class"),
            ancestry=data.get("ancestry"),
            level=data.get("level", 1),
            backstory=data.get("backstory", ""),
            ability_method=data.get("ability_method"),
            abilities=data.get("abilities"),
            ancestry_choices=data.get("ancestry_choices"),
            request_id=getattr(request, "request_id", ""),
        )
        return Response(character, status=status.HTTP_201_CREATED)


class CharacterDetailApi(APIView):
    @extend_schema(
        request=CharacterPatchInput,
        responses={200: CharacterOutput},
    )
    def patch(self, request: Request, campaign_id: uuid.UUID, character_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        character = character_update(
            by_membership=membership,
            character_id=character_id,
            changes=_body(request),
            request_id=getattr(request, "request_id", ""),
        )
        return Response(character)
