"""Int8 calibration samples from an avatar and audio features, read back by the builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsync_contract.errors import ContractError
from lipsync_contract.modelio import preset
from lipsync_engine_builder.calibration import load_npz_samples
from lipsync_server.audio import build_windows, synthetic_features
from lipsync_server.avatar.calibration import calibration_arrays, write_calibration
from lipsync_server.avatar.store import AvatarStore

pytestmark = pytest.mark.unit

CONTRACT = preset("unet328-ave")


@pytest.fixture(scope="module")
def store(small_avatar: Path) -> AvatarStore:
    return AvatarStore.load(small_avatar)


def test_samples_are_the_served_inputs_of_frames_spread_over_the_clip(store: AvatarStore) -> None:
    features = synthetic_features(10, CONTRACT.audio_feature_dim, seed=3)
    arrays = calibration_arrays(store, features, CONTRACT, count=4)
    images, audio = arrays["input"], arrays["audio"]
    assert images.shape == (4, 6, 320, 320)
    assert audio.shape == (4, 32, 16, 16)
    assert images.dtype == audio.dtype == np.float32
    # Clip frames 0, 3, 6, 9 use avatar frames 0, 3, 0, 3 (ping-pong over 4 frames).
    for row, avatar_frame in enumerate([0, 3, 0, 3]):
        np.testing.assert_allclose(images[row] * 255, store.model_inputs[avatar_frame], atol=1e-3)
    np.testing.assert_array_equal(audio, build_windows(features, [0, 3, 6, 9], CONTRACT))


def test_a_short_clip_gives_one_sample_per_frame(store: AvatarStore) -> None:
    features = synthetic_features(3, CONTRACT.audio_feature_dim)
    assert calibration_arrays(store, features, CONTRACT, count=50)["input"].shape[0] == 3


def test_features_of_the_wrong_length_are_refused(store: AvatarStore) -> None:
    with pytest.raises(ContractError, match=r"must be \[frames, 512\], got \[10, 80\]"):
        calibration_arrays(store, np.zeros((10, 80), np.float32), CONTRACT, count=4)


def test_the_builder_reads_what_is_written(store: AvatarStore, tmp_path: Path) -> None:
    features = synthetic_features(8, CONTRACT.audio_feature_dim)
    arrays = calibration_arrays(store, features, CONTRACT, count=8)
    written = write_calibration(tmp_path / "calib", arrays)
    assert written == tmp_path / "calib" / "calibration.npz"
    samples = load_npz_samples(written.parent, CONTRACT, limit=16)
    assert len(samples) == 8
    assert samples[0]["input"].shape == (1, 6, 320, 320)
