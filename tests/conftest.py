"""Shared test configuration: tiers are pytest markers (unit, component, cluster, gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsync_core.reference.ave_encoder import build_ave_encoder
from lipsync_core.reference.unet328 import build_unet328

# The cluster tier in several workers (hack/test-cluster.sh): the controller reads these here.
from lipsync_testbed.workers import pytest_collection_modifyitems, pytest_xdist_make_scheduler

__all__ = ["pytest_collection_modifyitems", "pytest_xdist_make_scheduler"]


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference UNet-328 (seed 0) written once per test session."""
    path = tmp_path_factory.mktemp("models") / "unet328.onnx"
    path.write_bytes(build_unet328(seed=0).SerializeToString())
    return path


@pytest.fixture(scope="session")
def reference_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference "ave" audio encoder (seed 0) written once per test session."""
    path = tmp_path_factory.mktemp("models") / "ave.onnx"
    path.write_bytes(build_ave_encoder(seed=0).SerializeToString())
    return path


@pytest.fixture(scope="session")
def small_avatar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame 320x240 demo avatar package, written once per test session."""
    from lipsync_server.avatar.demo import write_demo_avatar  # OpenCV: only where it is needed

    root = tmp_path_factory.mktemp("avatar")
    write_demo_avatar(root, frames=4, width=320, height=240)
    return root
