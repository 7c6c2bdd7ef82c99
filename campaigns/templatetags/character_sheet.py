"""`{% character_options campaign.edition as options %}`: what the room's character
form offers (campaigns.character_api.sheet_options), for `json_script` in the page, so
that the form needs no request of its own before it can be shown."""

from __future__ import annotations

from typing import Any

from django import template

from campaigns.character_api import sheet_options

register = template.Library()


@register.simple_tag
def character_options(edition: str) -> dict[str, Any]:
    return sheet_options(edition)
