"""ONNX Runtime plugin execution providers: the TensorRT-RTX EP from its own wheel.

A plugin EP is a shared library registered with ONNX Runtime once per process
(``register_execution_provider_library``); sessions then select it through the devices it claims
(``get_ep_devices`` + ``SessionOptions.add_provider_for_devices``). It never appears in
``get_available_providers()``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from typing import Any

import onnxruntime as ort

from lipsync_contract.errors import BackendError

log = logging.getLogger(__name__)

RTX_MODULE = "onnxruntime_ep_nv_tensorrt_rtx"
RTX_DISTRIBUTION = "onnxruntime-ep-nv-tensorrt-rtx-cu13"
# TensorRT-RTX's support matrix: Turing 7.5, Ampere GA10x 8.6, Ada 8.9, Blackwell RTX 12.x. Data
# center parts (A100 8.0, H100/H200 9.0, B200 10.0) are not supported: use TensorRT there.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.6", "8.9")
RTX_COMPUTE_MAJORS = (12,)


def rtx_support_refusal(capability: str) -> str:
    """Why TensorRT-RTX does not run on a GPU of this compute capability ("" when it does, or
    when the capability is unknown)."""
    if not capability:
        return ""
    major = capability.split(".", 1)[0]
    if capability in RTX_COMPUTE_CAPABILITIES or (
        major.isdigit() and int(major) in RTX_COMPUTE_MAJORS
    ):
        return ""
    return (
        f"tensorrt-rtx: TensorRT-RTX supports compute capability 7.5, 8.6, 8.9 and 12.x, this "
        f"GPU has {capability} (A100, H100, H200 and B200 need the tensorrt backend)"
    )


def _device_capability(device_id: int) -> str:
    """The GPU's compute capability through cuda-python, "" where cuda-python is missing."""
    from lipsync_core.backends import cuda_runtime

    try:
        return cuda_runtime.compute_capability(device_id)
    except BackendError:
        return ""


def rtx_plugin_installed() -> bool:
    return importlib.util.find_spec(RTX_MODULE) is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.cache
def _register_rtx_plugin() -> str:
    """Register the TensorRT-RTX plugin library (once per process); return its EP name."""
    try:
        plugin = importlib.import_module(RTX_MODULE)
    except ImportError:
        raise BackendError(
            f"tensorrt-rtx: the ONNX Runtime TensorRT-RTX plugin is not installed "
            f"(pip install {RTX_DISTRIBUTION})"
        ) from None
    name, library = str(plugin.get_ep_name()), str(plugin.get_library_path())
    try:
        ort.register_execution_provider_library(name, library)
    except Exception as exc:  # ORT raises its own untyped exceptions
        raise BackendError(
            f"tensorrt-rtx: ONNX Runtime cannot load the plugin {library}: {_first_line(exc)}"
        ) from None
    log.info("registered ONNX Runtime plugin EP %s from %s", name, library)
    return name


def rtx_devices(device_id: int) -> list[Any]:
    """The TensorRT-RTX EP device for GPU ``device_id``, or BackendError saying why not."""
    refusal = rtx_support_refusal(_device_capability(device_id))
    if refusal:
        raise BackendError(refusal)
    name = _register_rtx_plugin()
    gpus = [
        device
        for device in ort.get_ep_devices()
        if device.ep_name == name and device.device.type == ort.OrtHardwareDeviceType.GPU
    ]
    if not gpus:
        raise BackendError(
            "tensorrt-rtx: the plugin supports no GPU here (it needs an NVIDIA RTX-class GPU, "
            "Ampere or later, and a CUDA 13 driver)"
        )
    if device_id >= len(gpus):
        raise BackendError(
            f"tensorrt-rtx: GPU {device_id} requested, the plugin supports {len(gpus)} GPU(s)"
        )
    return [gpus[device_id]]


def rtx_session_options(
    options: ort.SessionOptions, device_id: int, ep_options: dict[str, str] | None = None
) -> ort.SessionOptions:
    """``options`` with the TensorRT-RTX EP added for GPU ``device_id`` (a plugin EP is selected
    through its devices; passed as a provider name it would be dropped)."""
    options.add_provider_for_devices(rtx_devices(device_id), ep_options or {})
    return options


def rtx_unavailable_reason(device_id: int = 0) -> str:
    """Why the TensorRT-RTX EP cannot run on GPU ``device_id`` here, or "" when it can."""
    if not rtx_plugin_installed():
        return f"the TensorRT-RTX plugin is not installed (pip install {RTX_DISTRIBUTION})"
    try:
        rtx_devices(device_id)
    except BackendError as exc:
        return str(exc)
    return ""
