"""The in-memory avatar: every frame decoded once, the per-frame model input precomputed.

For each frame: the face box is cropped and resized to 328x328 (CROP), its inner 320x320
(INNER, a 4-pixel border) is the face input, and a copy with the mouth region blanked is the
masked input: 6 channels, channel-first, stored as uint8 and turned into floats only when a batch
is assembled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lipsync_server.avatar.format import AvatarError, AvatarManifest, ImageFrames, read_manifest

log = logging.getLogger(__name__)

CROP = 328
INNER = 320
BORDER = (CROP - INNER) // 2


def ping_pong(index: int, frames: int) -> int:
    """Avatar frame for output frame ``index``: 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ..."""
    if frames <= 1:
        return 0
    period = 2 * frames - 2
    position = index % period
    return position if position < frames else period - position


def _decode_frames(root: Path, manifest: AvatarManifest) -> Iterator[np.ndarray]:
    if isinstance(manifest.frames, ImageFrames):
        for index in range(manifest.frame_count):
            path = manifest.frames.path(root, index)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise AvatarError(f"{path}: missing or not an image")
            yield image
        return
    path = root / manifest.frames.path
    capture = cv2.VideoCapture(str(path))
    try:
        for index in range(manifest.frame_count):
            ok, image = capture.read()
            if not ok:
                raise AvatarError(
                    f"{path}: ends after {index} frames, manifest says {manifest.frame_count}"
                )
            yield image
    finally:
        capture.release()


def _mask_for(root: Path, manifest: AvatarManifest, index: int) -> np.ndarray | None:
    if manifest.masks is None:
        return None
    path = root / manifest.masks.format(index=index)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise AvatarError(f"{path}: missing or not an image")
    return mask


@dataclass(frozen=True)
class AvatarStore:
    """Decoded frames, 328 crops, boxes and uint8 model inputs ``[N, 6, 320, 320]``."""

    manifest: AvatarManifest
    frames: np.ndarray
    crops: np.ndarray
    boxes: np.ndarray
    model_inputs: np.ndarray

    @property
    def frame_count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes + self.crops.nbytes + self.model_inputs.nbytes)

    def fill_image_batch(self, indices: list[int], out: np.ndarray) -> None:
        """Write the float inputs (values in [0, 1]) of avatar frames ``indices`` into ``out``."""
        for row, index in enumerate(indices):
            np.multiply(
                self.model_inputs[index], np.float32(1 / 255), out=out[row], casting="unsafe"
            )

    @classmethod
    def load(cls, root: Path) -> AvatarStore:
        manifest = read_manifest(root)
        count, height, width = manifest.frame_count, manifest.height, manifest.width
        frames = np.empty((count, height, width, 3), np.uint8)
        crops = np.empty((count, CROP, CROP, 3), np.uint8)
        model_inputs = np.empty((count, 6, INNER, INNER), np.uint8)
        boxes = np.asarray(manifest.face_boxes, dtype=np.int32)
        mx1, my1, mx2, my2 = manifest.mask_rect
        for index, image in enumerate(_decode_frames(root, manifest)):
            if image.shape != (height, width, 3):
                raise AvatarError(
                    f"{root}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                    f"manifest says {width}x{height}"
                )
            frames[index] = image
            x1, y1, x2, y2 = boxes[index]
            crops[index] = cv2.resize(
                image[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_AREA
            )
            inner = crops[index, BORDER : BORDER + INNER, BORDER : BORDER + INNER]
            masked = inner.copy()
            mask = _mask_for(root, manifest, index)
            if mask is None:
                masked[my1:my2, mx1:mx2] = 0
            else:
                mask_crop = cv2.resize(
                    mask[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_NEAREST
                )
                masked[mask_crop[BORDER : BORDER + INNER, BORDER : BORDER + INNER] > 0] = 0
            model_inputs[index, :3] = inner.transpose(2, 0, 1)
            model_inputs[index, 3:] = masked.transpose(2, 0, 1)
        store = cls(manifest, frames, crops, boxes, model_inputs)
        log.info(
            "avatar %r: %d frames of %dx%d decoded, %.1f MiB in memory (frames %.1f, crops %.1f, "
            "model inputs %.1f)",
            manifest.name,
            count,
            width,
            height,
            store.nbytes / 2**20,
            frames.nbytes / 2**20,
            crops.nbytes / 2**20,
            model_inputs.nbytes / 2**20,
        )
        return store
