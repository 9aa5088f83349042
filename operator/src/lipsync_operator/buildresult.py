"""Build results as the operator reads them: the Job's termination message or the cache manifest."""

from __future__ import annotations

import json

from pydantic import ValidationError

from lipsync_engine_builder.manifest import Manifest
from lipsync_engine_builder.result import BuildResult

__all__ = ["BuildResult", "parse_build_result", "result_from_manifest"]


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


def result_from_manifest(manifest: Manifest) -> BuildResult:
    """A published cache entry, seen as the Ready result that produced it."""
    return BuildResult(
        key=manifest.key,
        state="Ready",
        psnr_db=manifest.accuracy.psnr_db,
        max_abs_error=manifest.accuracy.max_abs_error,
        frames_per_second=manifest.best_frames_per_second(),
        build_seconds=manifest.build_seconds,
        artifact=manifest.artifact,
        cache_hit=True,
    )
