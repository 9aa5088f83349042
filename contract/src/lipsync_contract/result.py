"""The Job contract: a small JSON result on the termination-message path, and the exit code.

See JOB_CONTRACT.md. Kubernetes keeps at most 4096 bytes of a termination message.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
_REASON_LIMIT = 1024


class BuildResult(BaseModel):
    """What the operator reads back from a finished build Job (camelCase on the wire)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str = ""
    state: Literal["Ready", "Failed"]
    reason: str = ""
    psnr_db: float | None = Field(None, alias="psnrDb")
    max_abs_error: float | None = Field(None, alias="maxAbsError")
    frames_per_second: float | None = Field(None, alias="framesPerSecond")
    build_seconds: float = Field(0.0, alias="buildSeconds")
    artifact: str = Field("", description="URI of the artifact in the cache.")
    artifact_sha256: str = Field(
        "", alias="artifactSha256", description="Hex sha256 of the artifact file."
    )
    cache_hit: bool = Field(False, alias="cacheHit")
    exit_code: int = Field(0, alias="exitCode")
    audio_encoder: BuildResult | None = Field(
        None, alias="audioEncoder", description="The audio encoder's own build, when requested."
    )

    def _dump(self) -> str:
        """Camel-case JSON; ``audioEncoder`` only when an encoder was built."""
        exclude = {"audio_encoder"} if self.audio_encoder is None else set()
        return self.model_dump_json(by_alias=True, exclude=exclude)

    def to_json(self) -> str:
        """Compact JSON, always under the termination-message limit (the reason is cut first)."""
        result = self
        if len(result.reason) > _REASON_LIMIT:
            result = result.model_copy(
                update={"reason": result.reason[: _REASON_LIMIT - 3] + "..."}
            )
        text = result._dump()
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            inner = result.audio_encoder
            if inner is not None:
                inner = inner.model_copy(update={"reason": inner.reason[:200]})
            text = result.model_copy(
                update={"reason": "", "artifact": "", "audio_encoder": inner}
            )._dump()
        return text


def termination_log_path(configured: str) -> Path | None:
    """The configured path, or the Kubernetes default only where it is writable."""
    if configured:
        return Path(configured)
    default = Path(DEFAULT_TERMINATION_LOG)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_termination_log(result: BuildResult, configured: str) -> Path | None:
    path = termination_log_path(configured)
    if path is None:
        return None
    try:
        path.write_text(result.to_json())
    except OSError as exc:
        log.warning("cannot write the build result to %s: %s", path, exc)
        return None
    return path


def parse_build_result(text: str) -> BuildResult | None:
    """A build Job's termination message as a result; None when it is not one."""
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
