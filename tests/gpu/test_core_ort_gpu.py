"""ONNX Runtime on a GPU: the CUDA EP with reused device tensors, the TensorRT-RTX plugin EP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lipsync_contract.errors import BackendError
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.backends.ort_plugins import rtx_devices, rtx_plugin_installed
from lipsync_core.samples import random_inputs

pytestmark = pytest.mark.gpu

CONTRACT = preset("unet328-ave")


def _compare_with_cpu(reference_model: Path, config: BackendConfig) -> None:
    cpu = load_backend(reference_model, CONTRACT, BackendConfig(kind="onnxruntime-cpu"))
    gpu = load_backend(reference_model, CONTRACT, config)
    assert gpu.describe().kind == config.kind
    rng = np.random.default_rng(11)
    # Repeated batch sizes with fresh inputs: reused device tensors must carry the new data.
    for batch in (1, 2, 1, 2):
        inputs = random_inputs(CONTRACT, batch, rng)
        np.testing.assert_allclose(gpu.infer(inputs), cpu.infer(inputs), atol=5e-3)
    gpu.close()
    cpu.close()


def test_ort_cuda_matches_cpu_with_reused_device_tensors(reference_model: Path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("ONNX Runtime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    _compare_with_cpu(reference_model, BackendConfig(kind="onnxruntime-cuda", max_batch=2))


def test_ort_tensorrt_rtx_plugin_matches_cpu(reference_model: Path) -> None:
    if not rtx_plugin_installed():
        pytest.skip("the TensorRT-RTX plugin EP is not installed (onnxruntime-ep-nv-tensorrt-rtx)")
    try:
        rtx_devices(0)
    except BackendError as exc:
        pytest.skip(str(exc))
    _compare_with_cpu(reference_model, BackendConfig(kind="tensorrt-rtx", max_batch=2))
