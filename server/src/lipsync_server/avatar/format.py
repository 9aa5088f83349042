"""The avatar package format (version 1), documented in server/AVATAR_FORMAT.md.

A directory with ``manifest.json``, the frames (numbered images or one video), per-frame face boxes
``[x1, y1, x2, y2]`` (pixels, x2/y2 exclusive) and optional per-frame mouth masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lipsync_contract.errors import LipSyncError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "lipsync-avatar"
FORMAT_VERSION = 1


class AvatarError(LipSyncError):
    """An avatar package is missing, malformed or inconsistent."""


class ImageFrames(BaseModel):
    """Frames as numbered images; ``pattern`` is a Python format string with ``{index}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["images"] = "images"
    pattern: str = Field("frames/{index:06d}.jpg")

    def path(self, root: Path, index: int) -> Path:
        return root / self.pattern.format(index=index)


class VideoFrames(BaseModel):
    """Frames as one video file, decoded in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["video"] = "video"
    path: str = "frames.mp4"


class AvatarManifest(BaseModel):
    """``manifest.json`` of an avatar package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["lipsync-avatar"] = "lipsync-avatar"
    version: Literal[1] = 1
    name: str = Field(min_length=1)
    fps: float = Field(25.0, gt=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    frame_count: int = Field(gt=0)
    frames: ImageFrames | VideoFrames = Field(discriminator="kind")
    face_boxes: list[tuple[int, int, int, int]] = Field(
        description="One [x1, y1, x2, y2] per frame, in pixels, x2 and y2 exclusive."
    )
    masks: str | None = Field(
        None,
        description="Optional pattern of per-frame grayscale mask images (frame-sized); "
        "non-zero pixels are blanked in the model's masked input.",
    )
    mask_rect: tuple[int, int, int, int] = Field(
        (16, 160, 304, 312),
        description="Without masks: the rectangle [x1, y1, x2, y2] of the 320x320 face crop "
        "that is blanked (the mouth region).",
    )

    @model_validator(mode="after")
    def _check_boxes(self) -> AvatarManifest:
        if len(self.face_boxes) != self.frame_count:
            raise ValueError(
                f"face_boxes has {len(self.face_boxes)} entries for {self.frame_count} frames"
            )
        for index, (x1, y1, x2, y2) in enumerate(self.face_boxes):
            if not (0 <= x1 < x2 <= self.width and 0 <= y1 < y2 <= self.height):
                raise ValueError(
                    f"face box {index} [{x1},{y1},{x2},{y2}] is empty or outside the "
                    f"{self.width}x{self.height} frame"
                )
        x1, y1, x2, y2 = self.mask_rect
        if not (0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320):
            raise ValueError(f"mask_rect {list(self.mask_rect)} is outside the 320x320 crop")
        return self


def read_manifest(root: Path) -> AvatarManifest:
    """Load and validate ``root/manifest.json``; errors name the file and the problem."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise AvatarError(f"{root}: not an avatar package (no {MANIFEST_NAME})")
    try:
        return AvatarManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise AvatarError(f"{path}: {where}: {first['msg']}") from None


def write_manifest(root: Path, manifest: AvatarManifest) -> Path:
    path = root / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path
