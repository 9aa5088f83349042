"""ORT's GPU execution providers without a GPU: a missing TensorRT-RTX plugin is a one-line error
that says what to install, GPUs outside TensorRT-RTX's support matrix are refused, a CUDA EP that
did not load is detected."""

from __future__ import annotations

import pytest

from lipsync_contract.errors import BackendError
from lipsync_core.backends import BackendConfig
from lipsync_core.backends.onnxruntime import (
    available_kinds,
    cuda_fallback_reason,
    cuda_provider_options,
)
from lipsync_core.backends.ort_plugins import (
    RTX_DISTRIBUTION,
    rtx_devices,
    rtx_plugin_installed,
    rtx_support_refusal,
)
from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.targets import preflight

pytestmark = pytest.mark.unit


def test_missing_rtx_plugin_names_the_package_to_install() -> None:
    if rtx_plugin_installed():
        pytest.skip("the TensorRT-RTX plugin is installed here")
    assert "tensorrt-rtx" not in available_kinds()
    with pytest.raises(BackendError) as info:
        rtx_devices(0)
    assert str(info.value) == (
        "tensorrt-rtx: the ONNX Runtime TensorRT-RTX plugin is not installed "
        f"(pip install {RTX_DISTRIBUTION})"
    )


@pytest.mark.parametrize("capability", ["7.5", "8.6", "8.9", "12.0", "12.1", ""])
def test_rtx_runs_on_its_support_matrix(capability: str) -> None:
    assert rtx_support_refusal(capability) == ""


@pytest.mark.parametrize(
    ("capability", "gpu"), [("8.0", "A100"), ("9.0", "H100"), ("10.0", "B200"), ("7.0", "V100")]
)
def test_rtx_refuses_data_center_gpus_in_one_line(capability: str, gpu: str) -> None:
    reason = rtx_support_refusal(capability)
    assert reason.startswith("tensorrt-rtx: TensorRT-RTX supports compute capability 7.5, 8.6")
    assert f"this GPU has {capability}" in reason
    assert "\n" not in reason


def test_rtx_build_for_an_h100_is_refused_before_any_work() -> None:
    with pytest.raises(BuildFailedError, match=r"this GPU has 9\.0 \(A100, H100"):
        preflight("tensorrt-rtx", "9.0")


def test_the_cuda_ep_fallback_to_cpu_is_detected_with_its_reason() -> None:
    assert cuda_fallback_reason(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ""
    reason = cuda_fallback_reason(["CPUExecutionProvider"])
    assert reason.startswith("ONNX Runtime could not load the CUDA execution provider")
    assert reason.endswith("fell back to CPUExecutionProvider")


def test_cuda_ep_options_prefer_nhwc_and_cuda_graphs_on_request() -> None:
    assert cuda_provider_options(BackendConfig(device_id=1)) == {
        "device_id": "1",
        "prefer_nhwc": "1",
    }
    assert cuda_provider_options(BackendConfig(cuda_graphs=True))["enable_cuda_graph"] == "1"
