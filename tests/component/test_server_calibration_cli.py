"""``lipsync avatar calibration``: an avatar package and audio features -> builder .npz."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipsync_contract.modelio import preset
from lipsync_server.audio import synthetic_features

pytestmark = pytest.mark.component

CONTRACT = preset("unet328-ave")
LIPSYNC = str(Path(sys.executable).parent / "lipsync")


def test_cli_writes_calibration_from_an_avatar_and_features(
    small_avatar: Path, tmp_path: Path
) -> None:
    features = tmp_path / "features.npy"
    np.save(features, synthetic_features(20, CONTRACT.audio_feature_dim))
    out = tmp_path / "calib.npz"
    done = subprocess.run(
        [LIPSYNC, "avatar", "calibration", str(small_avatar), "-o", str(out),
         "--features", str(features), "--samples", "5"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 5 samples" in done.stdout
    bad = np.zeros((4, 7), np.float32)
    np.save(features, bad)
    failed = subprocess.run(
        [LIPSYNC, "avatar", "calibration", str(small_avatar), "-o", str(out),
         "--features", str(features)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert failed.returncode == 2
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line == "error: audio features must be [frames, 512], got [4, 7]"
