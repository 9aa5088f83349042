"""Dispatch to the target of a backend, and check early that the backend can build here."""

from __future__ import annotations

import importlib.util

from lipsync_contract.request import TORCH_BACKENDS, BuildBackend
from lipsync_core.backends.base import BackendConfig
from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.tensorrt import TensorRTSettings

_ORT_PROVIDERS: dict[str, str] = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
}


def preflight(backend: BuildBackend, compute_capability: str = "") -> None:
    """Raise BuildFailedError before any work when this machine cannot build for ``backend``
    (for the GPU of ``compute_capability``, when the request names it)."""
    if backend == "tensorrt-rtx":
        from lipsync_core.backends.ort_plugins import rtx_support_refusal, rtx_unavailable_reason

        reason = rtx_support_refusal(compute_capability) or rtx_unavailable_reason()
        if reason:
            shown = reason if reason.startswith("tensorrt-rtx") else f"tensorrt-rtx: {reason}"
            raise BuildFailedError(shown)
        return
    if backend in TORCH_BACKENDS:
        if importlib.util.find_spec("torch") is None:
            raise BuildFailedError(f"{backend} backend: torch is not installed ([torch] extra)")
        return
    if backend == "tensorrt":
        from lipsync_engine_builder.targets.tensorrt import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise BuildFailedError(f"tensorrt backend: {reason}")
        return
    import onnxruntime as ort

    provider = _ORT_PROVIDERS[backend]
    if provider not in ort.get_available_providers():
        raise BuildFailedError(
            f"{backend} backend: ONNX Runtime here has no {provider} "
            f"(available: {', '.join(ort.get_available_providers())})"
        )


def build_artifact(
    backend: BuildBackend,
    context: BuildContext,
    config: BackendConfig,
    tensorrt_settings: TensorRTSettings,
    compute_capability: str = "",
) -> BuiltArtifact:
    if backend in TORCH_BACKENDS:
        from lipsync_engine_builder.targets import torch as torch_targets

        if backend == "torch-aoti":
            return torch_targets.build_aoti_package(context, config, compute_capability)
        return torch_targets.build_torch_program(context)
    if backend == "tensorrt":
        from lipsync_engine_builder.targets.tensorrt import build_engine

        return build_engine(context, tensorrt_settings)
    from lipsync_engine_builder.targets import onnxruntime as ort_targets

    if backend == "tensorrt-rtx":
        return ort_targets.build_rtx_context_model(context, config)
    return ort_targets.build_onnx_model(context, config)
