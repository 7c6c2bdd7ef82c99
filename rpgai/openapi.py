"""The OpenAPI schema class (drf-spectacular).

Views follow the styleguide's nested `InputSerializer` / `OutputSerializer`, which
drf-spectacular would all name "Input" and "Output": colliding components, a wrong
schema and a W001 warning (which `check --deploy` reports). A nested serializer is
named after its view instead: `RegisterApi.InputSerializer` becomes `RegisterApiInput`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        name = super().get_serializer_name(serializer, direction)
        qualname = type(serializer).__qualname__
        if name == type(serializer).__name__ and "." in qualname and "<locals>" not in qualname:
            return qualname.replace(".", "")
        return name
