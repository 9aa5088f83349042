"""GPU builds: TensorRT 10 engines, ORT CUDA fp16 and the TensorRT-RTX EP-context model.

Each test skips with the reason where its backend cannot run here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.modelio import preset
from lipsync_core.backends.ort_plugins import rtx_unavailable_reason
from lipsync_engine_builder.targets import BuildContext
from lipsync_engine_builder.targets.tensorrt import (
    TensorRTSettings,
    build_engine,
    unavailable_reason,
)

pytestmark = pytest.mark.gpu

LIPSYNC = str(Path(sys.executable).parent / "lipsync")


def require_provider(provider: str) -> None:
    if provider == "NvTensorRTRTXExecutionProvider":
        reason = rtx_unavailable_reason()
        if reason:
            pytest.skip(f"TensorRT-RTX: {reason}")
    elif provider not in ort.get_available_providers():
        pytest.skip(f"ONNX Runtime here has no {provider}")


def test_tensorrt_engine_and_timing_cache(reference_model: Path, tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    context = BuildContext(
        model=reference_model, workdir=tmp_path, contract=preset("unet328-ave"),
        batch=BatchProfile(min=1, opt=4, max=8), precision="fp16",
    )  # fmt: skip
    built = build_engine(context, TensorRTSettings(workspace_bytes=2 << 30, optimization_level=2))
    assert built.path.suffix == ".plan"
    assert built.path.stat().st_size > 1_000_000
    assert built.timing_cache


@pytest.mark.parametrize(
    ("backend", "provider", "precision"),
    [
        ("onnxruntime-cuda", "CUDAExecutionProvider", "fp16"),
        ("tensorrt-rtx", "NvTensorRTRTXExecutionProvider", "fp16"),
    ],
)
def test_gpu_build_through_the_cli(
    reference_model: Path, tmp_path: Path, backend: str, provider: str, precision: str
) -> None:
    require_provider(provider)
    done = subprocess.run(
        [LIPSYNC, "build", "--model", str(reference_model), "--cache", str(tmp_path),
         "--backend", backend, "--precision", precision, "--gpu-product", "test-gpu"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, result["reason"]
    assert result["psnrDb"] >= 40.0
    assert result["framesPerSecond"] > 0
