"""Base class of the API types: Python names in snake_case, Kubernetes names in camelCase."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Parses and dumps the camelCase names the resource uses; Python code uses snake_case."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    def to_api(self) -> dict[str, Any]:
        """The JSON document as it appears on the resource (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
