"""Build results as the operator reads them: a build Job's termination message."""

from __future__ import annotations

import json

from pydantic import ValidationError

from lipsync_contract.result import BuildResult

__all__ = ["BuildResult", "parse_build_result"]


def parse_build_result(text: str) -> BuildResult | None:
    """Parse a termination message; None when it is not a build result."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    try:
        return BuildResult.model_validate(document)
    except ValidationError:
        return None
