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

from lipsync_core.errors import BackendError

log = logging.getLogger(__name__)

RTX_MODULE = "onnxruntime_ep_nv_tensorrt_rtx"
RTX_DISTRIBUTION = "onnxruntime-ep-nv-tensorrt-rtx-cu13"


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


def rtx_session_options(options: ort.SessionOptions, device_id: int) -> ort.SessionOptions:
    """``options`` with the TensorRT-RTX EP added for GPU ``device_id``."""
    options.add_provider_for_devices(rtx_devices(device_id), {})
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
