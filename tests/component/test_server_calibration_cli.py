"""``lipsync avatar calibration``: an avatar package and audio features -> builder .npz."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipsync_core.contract import preset
from lipsync_server.audio import synthetic_features
from lipsync_server.avatar.demo import write_demo_avatar

pytestmark = pytest.mark.component

CONTRACT = preset("unet328-ave")
LIPSYNC = str(Path(sys.executable).parent / "lipsync")


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(root, frames=4, width=256, height=192)
    return root


def test_cli_writes_calibration_from_an_avatar_and_features(
    avatar_dir: Path, tmp_path: Path
) -> None:
    features = tmp_path / "features.npy"
    np.save(features, synthetic_features(20, CONTRACT.audio_feature_dim))
    out = tmp_path / "calib.npz"
    done = subprocess.run(
        [LIPSYNC, "avatar", "calibration", str(avatar_dir), "-o", str(out),
         "--features", str(features), "--samples", "5"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 5 samples" in done.stdout
    bad = np.zeros((4, 7), np.float32)
    np.save(features, bad)
    failed = subprocess.run(
        [LIPSYNC, "avatar", "calibration", str(avatar_dir), "-o", str(out),
         "--features", str(features)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert failed.returncode == 2
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line == "error: audio features must be [frames, 512], got [4, 7]"
