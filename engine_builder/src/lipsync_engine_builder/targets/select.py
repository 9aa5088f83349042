"""Dispatch to the target of a backend, and check early that the backend can build here."""

from __future__ import annotations

from lipsync_core.backends.base import BackendConfig
from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.request import BuildBackend
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.tensorrt import TensorRTSettings

_ORT_PROVIDERS: dict[BuildBackend, str] = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "tensorrt-rtx": "NvTensorRTRTXExecutionProvider",
}


def preflight(backend: BuildBackend) -> None:
    """Raise BuildFailedError before any work when this machine cannot build for ``backend``."""
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
) -> BuiltArtifact:
    if backend == "tensorrt":
        from lipsync_engine_builder.targets.tensorrt import build_engine

        return build_engine(context, tensorrt_settings)
    from lipsync_engine_builder.targets import onnxruntime as ort_targets

    if backend == "tensorrt-rtx":
        return ort_targets.build_rtx_context_model(context, config)
    return ort_targets.build_onnx_model(context, config)
