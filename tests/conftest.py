"""Shared test configuration: tiers are pytest markers (unit, component, cluster, gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsync_core.reference.unet328 import build_unet328


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference UNet-328 (seed 0) written once per test session."""
    path = tmp_path_factory.mktemp("models") / "unet328.onnx"
    path.write_bytes(build_unet328(seed=0).SerializeToString())
    return path
