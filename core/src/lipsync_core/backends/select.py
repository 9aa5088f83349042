"""Choosing and loading a backend. The choice is explicit configuration with a documented
automatic default, and it is always logged and reported (``BackendInfo.reason``)."""

from __future__ import annotations

import logging
from pathlib import Path

from lipsync_contract.errors import BackendError
from lipsync_contract.kinds import BackendKind
from lipsync_contract.modelio import IOContract
from lipsync_core.backends.base import Backend, BackendConfig
from lipsync_core.backends.onnxruntime import OnnxRuntimeBackend, available_kinds
from lipsync_core.backends.torch_files import TORCH_SUFFIX, torch_artifact_kind

log = logging.getLogger(__name__)

TENSORRT_SUFFIXES = (".plan", ".engine", ".trt")


def choose_kind(
    artifact: Path, ort_kinds: list[BackendKind], tensorrt_loadable: bool
) -> tuple[BackendKind, str]:
    """Automatic default: a loadable TensorRT engine -> TensorRT; a PyTorch archive -> its torch
    backend; CUDA -> ORT CUDA; else CPU."""
    if artifact.suffix == TORCH_SUFFIX:
        kind = torch_artifact_kind(artifact)
        what = "an AOTInductor package" if kind == "torch-aoti" else "an exported program"
        return kind, f"{artifact.name} is {what} (PyTorch)"
    if artifact.suffix in TENSORRT_SUFFIXES:
        if tensorrt_loadable:
            return "tensorrt", f"{artifact.name} is a TensorRT engine and TensorRT is importable"
        raise BackendError(f"{artifact}: a TensorRT engine, but TensorRT is not installed here")
    if "onnxruntime-cuda" in ort_kinds:
        return "onnxruntime-cuda", "ONNX Runtime has the CUDA execution provider"
    return "onnxruntime-cpu", "no TensorRT engine and no CUDA execution provider: ORT on CPU"


def _load(
    artifact: Path, contract: IOContract, config: BackendConfig, kind: BackendKind, reason: str
) -> Backend:
    if kind == "tensorrt":
        from lipsync_core.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(artifact, contract, config, reason=reason)
    if kind in ("torch", "torch-aoti"):
        from lipsync_core.backends.torch_backend import TorchBackend

        return TorchBackend(artifact, contract, config, kind=kind, reason=reason)
    return OnnxRuntimeBackend(artifact, contract, config, kind=kind, reason=reason)


def load_backend(artifact: Path, contract: IOContract, config: BackendConfig) -> Backend:
    """Load ``artifact`` with the configured (or automatic) backend and log the choice."""
    kind, reason = config.kind, "configured explicitly"
    if kind == "auto":
        from lipsync_core.backends import tensorrt

        kind, reason = choose_kind(artifact, available_kinds(), tensorrt.is_available())
    try:
        backend = _load(artifact, contract, config, kind, reason)
    except BackendError as exc:
        if config.kind != "auto" or kind != "onnxruntime-cuda":
            raise
        # Chosen automatically: fall back to the CPU loudly, the reason on status and in logs.
        reason = f"{exc}; using ONNX Runtime on the CPU"
        log.warning("backend fallback for %s: %s", artifact.name, reason)
        backend = _load(artifact, contract, config, "onnxruntime-cpu", reason)
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
