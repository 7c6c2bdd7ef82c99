"""The characters' HTTP API (CONTRACTS §7 "Characters"): thin views over
`campaigns.characters`. Errors are JSON {detail, code} in plain words.

`sheet_options(edition)` is what a creation form needs to know (the SRD 5.1 classes and
ancestries with the numbers the server derives from, the ability methods, the licence's
attribution); the room embeds it in the page (`campaigns/templatetags/character_sheet.py`)
and `GET .../characters/options` answers it to any member."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import srd
from .api import membership_required
from .characters import (
    CharacterInvalid,
    character_create,
    character_update,
    characters_seen_by,
    is_5e,
)

SRD_URL = "https://dnd.wizards.com/resources/systems-reference-document"
LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/legalcode"
# The notice the SRD 5.1's licence asks for (also in campaigns/srd.py and docs/characters.md).
ATTRIBUTION = (
    'This work includes material taken from the System Reference Document 5.1 ("SRD 5.1") '
    f"by Wizards of the Coast LLC and available at {SRD_URL}. The SRD 5.1 is licensed under "
    "the Creative Commons Attribution 4.0 International License available at "
    f"{LICENCE_URL}."
)


def sheet_options(edition: str) -> dict[str, Any]:
    """What a character creation form offers in a campaign of `edition`: `sheet` is "5e"
    (the SRD 5.1 lists and numbers below) or "light" (free-text class and ancestry,
    optional abilities). Plain JSON; the server stays the judge of what it accepts."""
    return {
        "sheet": "5e" if is_5e(edition) else "light",
        "edition": edition,
        "abilities": [{"key": k, "name": srd.ABILITY_NAMES[k]} for k in srd.ABILITIES],
        "ability_range": {"min": srd.ABILITY_MIN, "max": srd.ABILITY_MAX},
        "levels": {"min": srd.LEVEL_MIN, "max": srd.LEVEL_MAX},
        "classes": [
            {
                "key": key,
                "name": cls["name"],
                "hit_die": cls["hit_die"],
                "saving_throws": list(cls["saving_throws"]),
                "armour": dict(srd.ARMOUR[cls["armour"]]) if cls["armour"] else None,
                "unarmoured": cls["unarmoured"],
                "ability_order": list(srd.ABILITY_ORDER[key]),
            }
            for key, cls in srd.CLASSES.items()
        ],
        "ancestries": [
            {
                "key": key,
                "name": ancestry["name"],
                "increases": dict(ancestry["increases"]),
                "choose": ancestry["choose"],
            }
            for key, ancestry in srd.ANCESTRIES.items()
        ],
        "standard_array": list(srd.STANDARD_ARRAY),
        "point_buy": {
            "budget": srd.POINT_BUY_BUDGET,
            "min": srd.POINT_BUY_MIN,
            "max": srd.POINT_BUY_MAX,
            "costs": {str(score): cost for score, cost in srd.POINT_BUY_COSTS.items()},
        },
        "roll": {"formula": srd.ROLL_FORMULA, "count": srd.ROLL_COUNT},
        "attribution": {"text": ATTRIBUTION, "srd_url": SRD_URL, "licence_url": LICENCE_URL},
    }


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


class CharacterOptionsApi(APIView):
    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        operation_id="campaigns_characters_options",
        description="What a creation form offers: `sheet` (5e or light), the SRD 5.1 "
        "classes and ancestries with their numbers, the ability methods, the attribution.",
    )
    def get(self, request: Request, campaign_id: uuid.UUID) -> Response:
        membership = membership_required(request, campaign_id)
        return Response(sheet_options(membership.campaign.edition))


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
