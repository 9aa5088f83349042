"""A synthetic avatar drawn with OpenCV, so that demos and tests need no download."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from lipsync_server.avatar.format import AvatarManifest, ImageFrames, write_manifest

log = logging.getLogger(__name__)


def _draw_frame(
    index: int, frames: int, width: int, height: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One frame: a gradient background, a head that sways and bobs, eyes that blink, a mouth."""
    phase = 2 * math.pi * index / max(frames, 1)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (90 + 60 * ys + 20 * xs).astype(np.uint8)
    image[..., 1] = (60 + 40 * xs).astype(np.uint8)
    image[..., 2] = (40 + 30 * ys).astype(np.uint8)
    radius = int(min(width, height) * 0.22)
    cx = int(width / 2 + 0.05 * width * math.sin(phase))
    cy = int(height * 0.45 + 0.02 * height * math.sin(2 * phase))
    cv2.ellipse(
        image, (cx, cy + radius), (int(radius * 1.3), radius // 2), 0, 180, 360, (60, 50, 140), -1
    )
    cv2.ellipse(image, (cx, cy), (int(radius * 0.8), radius), 0, 0, 360, (120, 160, 215), -1)
    cv2.ellipse(
        image,
        (cx, cy - int(radius * 0.7)),
        (int(radius * 0.85), int(radius * 0.45)),
        0,
        180,
        360,
        (30, 40, 60),
        -1,
    )
    eye_open = max(1, int(radius * 0.08 * (0.2 if index % 37 in (0, 1) else 1.0)))
    for side in (-1, 1):
        eye = (cx + side * int(radius * 0.35), cy - int(radius * 0.15))
        cv2.ellipse(image, eye, (int(radius * 0.12), eye_open), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(image, eye, max(1, eye_open // 2 + 1), (40, 30, 20), -1)
    cv2.line(
        image,
        (cx, cy - int(radius * 0.05)),
        (cx - int(radius * 0.05), cy + int(radius * 0.25)),
        (90, 120, 180),
        2,
    )
    mouth_open = int(radius * (0.04 + 0.12 * abs(math.sin(3 * phase))))
    cv2.ellipse(
        image,
        (cx, cy + int(radius * 0.5)),
        (int(radius * 0.3), mouth_open + 2),
        0,
        0,
        360,
        (40, 30, 120),
        -1,
    )
    box = (
        max(0, cx - radius),
        max(0, cy - radius),
        min(width, cx + radius),
        min(height, cy + int(radius * 1.1)),
    )
    return image, box


def write_demo_avatar(
    root: Path, frames: int = 100, width: int = 1280, height: int = 720, fps: float = 25.0
) -> AvatarManifest:
    """Write a synthetic avatar package (JPEG frames, face boxes, manifest) into ``root``."""
    layout = ImageFrames()
    boxes: list[tuple[int, int, int, int]] = []
    for index in range(frames):
        image, box = _draw_frame(index, frames, width, height)
        path = layout.path(root, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"cannot write {path}")
        boxes.append(box)
    manifest = AvatarManifest(
        name="demo",
        fps=fps,
        width=width,
        height=height,
        frame_count=frames,
        frames=layout,
        face_boxes=boxes,
    )
    write_manifest(root, manifest)
    log.info("wrote demo avatar: %d frames of %dx%d to %s", frames, width, height, root)
    return manifest
