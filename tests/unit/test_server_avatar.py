"""Avatar package: manifest validation, the demo avatar, precomputed model inputs, ping-pong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lipsync_server.avatar.demo import write_demo_avatar
from lipsync_server.avatar.format import AvatarError, read_manifest
from lipsync_server.avatar.store import AvatarStore, ping_pong

pytestmark = pytest.mark.unit


def test_ping_pong_runs_forward_then_back() -> None:
    assert [ping_pong(i, 4) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [ping_pong(i, 1) for i in range(3)] == [0, 0, 0]


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(root, frames=3, width=256, height=192)
    return root


def test_demo_avatar_loads_with_uint8_six_channel_inputs(avatar_dir: Path) -> None:
    store = AvatarStore.load(avatar_dir)
    assert store.frame_count == 3
    assert store.frames.shape == (3, 192, 256, 3)
    assert store.model_inputs.shape == (3, 6, 320, 320)
    assert store.model_inputs.dtype == np.uint8
    x1, y1, x2, y2 = store.manifest.mask_rect
    masked = store.model_inputs[:, 3:]
    assert not masked[:, :, y1:y2, x1:x2].any()  # mouth region blanked
    np.testing.assert_array_equal(masked[:, :, :y1], store.model_inputs[:, :3, :y1])


def test_batch_assembly_scales_to_unit_floats(avatar_dir: Path) -> None:
    store = AvatarStore.load(avatar_dir)
    out = np.empty((2, 6, 320, 320), np.float32)
    store.fill_image_batch([2, 0], out)
    np.testing.assert_allclose(out[0], store.model_inputs[2] / 255.0, atol=1e-6)
    np.testing.assert_allclose(out[1], store.model_inputs[0] / 255.0, atol=1e-6)


def test_box_outside_the_frame_is_rejected_with_the_frame_named(
    avatar_dir: Path, tmp_path: Path
) -> None:
    manifest = json.loads((avatar_dir / "manifest.json").read_text())
    manifest["face_boxes"][1] = [0, 0, 9999, 10]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AvatarError, match="face box 1"):
        read_manifest(tmp_path)


def test_missing_manifest_says_so(tmp_path: Path) -> None:
    with pytest.raises(AvatarError, match=r"not an avatar package \(no manifest.json\)"):
        AvatarStore.load(tmp_path)
