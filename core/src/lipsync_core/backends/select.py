"""Choosing and loading a backend. The choice is explicit configuration with a documented
automatic default, and it is always logged and reported (``BackendInfo.reason``)."""

from __future__ import annotations

import logging
from pathlib import Path

from lipsync_core.backends.base import Backend, BackendConfig, BackendKind
from lipsync_core.backends.onnxruntime import OnnxRuntimeBackend, available_kinds
from lipsync_core.contract import IOContract
from lipsync_core.errors import BackendError

log = logging.getLogger(__name__)

TENSORRT_SUFFIXES = (".plan", ".engine", ".trt")


def choose_kind(
    artifact: Path, ort_kinds: list[BackendKind], tensorrt_loadable: bool
) -> tuple[BackendKind, str]:
    """Automatic default: a loadable TensorRT engine -> TensorRT; CUDA -> ORT CUDA; else CPU."""
    if artifact.suffix in TENSORRT_SUFFIXES:
        if tensorrt_loadable:
            return "tensorrt", f"{artifact.name} is a TensorRT engine and TensorRT is importable"
        raise BackendError(f"{artifact}: a TensorRT engine, but TensorRT is not installed here")
    if "onnxruntime-cuda" in ort_kinds:
        return "onnxruntime-cuda", "ONNX Runtime has the CUDA execution provider"
    return "onnxruntime-cpu", "no TensorRT engine and no CUDA execution provider: ORT on CPU"


def load_backend(artifact: Path, contract: IOContract, config: BackendConfig) -> Backend:
    """Load ``artifact`` with the configured (or automatic) backend and log the choice."""
    kind, reason = config.kind, "configured explicitly"
    if kind == "auto":
        from lipsync_core.backends import tensorrt

        kind, reason = choose_kind(artifact, available_kinds(), tensorrt.is_available())
    backend: Backend
    if kind == "tensorrt":
        from lipsync_core.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(artifact, contract, config, reason=reason)
    else:
        backend = OnnxRuntimeBackend(artifact, contract, config, kind=kind, reason=reason)
    info = backend.describe()
    log.info(
        "backend %s (%s, %s, %s) for %s: %s",
        info.kind,
        info.provider,
        info.precision,
        info.device,
        artifact.name,
        reason,
    )
    return backend
