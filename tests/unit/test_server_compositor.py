"""Compositing: the generated face lands inside the face box, the rest of the frame is unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.store import AvatarStore
from lipsync_server.compositor import (
    composite,
    decode,
    encode,
    face_to_uint8,
    jpeg_subsampling,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> AvatarStore:
    root: Path = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(root, frames=2, width=320, height=240)
    return AvatarStore.load(root)


def test_output_becomes_rounded_bgr_uint8() -> None:
    output = np.zeros((3, 320, 320), np.float32)
    output[0] = 1.0  # blue
    output[2] = 0.5
    face = face_to_uint8(output)
    assert face.shape == (320, 320, 3)
    assert face[0, 0].tolist() == [255, 0, 128]


def test_face_is_pasted_only_inside_the_box(store: AvatarStore) -> None:
    white = np.ones((3, 320, 320), np.float32)
    frame = composite(store, 1, white)
    x1, y1, x2, y2 = store.boxes[1]
    original = store.frames[1]
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(frame[outside], original[outside])
    centre = frame[(y1 + y2) // 2, (x1 + x2) // 2]
    assert centre.min() >= 250


def test_raw_encoding_round_trips_and_jpeg_decodes_to_the_frame_size(store: AvatarStore) -> None:
    frame = store.frames[0]
    np.testing.assert_array_equal(decode(encode(frame, "raw-bgr", 90), "raw-bgr", 320, 240), frame)
    jpeg = encode(frame, "jpeg", 90)
    assert jpeg[:2] == b"\xff\xd8"
    decoded = decode(jpeg, "jpeg", 320, 240)
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 4


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_the_subsampling_a_jpeg_declares_is_read_back(store: AvatarStore, subsampling: str) -> None:
    data = encode(store.frames[0], "jpeg", 85, subsampling)  # type: ignore[arg-type]
    assert jpeg_subsampling(data) == subsampling


def test_no_subsampling_for_a_grey_jpeg_or_bytes_that_are_not_one(store: AvatarStore) -> None:
    grey = np.ascontiguousarray(store.frames[0][..., :1])
    assert jpeg_subsampling(bytes(simplejpeg.encode_jpeg(grey, colorspace="GRAY"))) is None
    assert jpeg_subsampling(b"\xff\xd8 not a jpeg") is None
    assert jpeg_subsampling(b"") is None
