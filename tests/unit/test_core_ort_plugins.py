"""The TensorRT-RTX plugin EP: a missing plugin is a one-line error that says what to install."""

from __future__ import annotations

import pytest

from lipsync_core.backends.onnxruntime import available_kinds
from lipsync_core.backends.ort_plugins import RTX_DISTRIBUTION, rtx_devices, rtx_plugin_installed
from lipsync_core.errors import BackendError

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
