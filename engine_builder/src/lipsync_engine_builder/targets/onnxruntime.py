"""ONNX Runtime targets: the ONNX model itself (CPU, CUDA) or a compiled EP-context model (RTX)."""

from __future__ import annotations

import shutil

from lipsync_core.backends.base import BackendConfig
from lipsync_engine_builder.errors import BuildFailedError, one_line
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.profiles import shapes_option


def recorded_session_options(config: BackendConfig) -> dict[str, str | int]:
    """The session options the artifact is verified and measured with (stored in the manifest)."""
    return {
        "graph_optimization_level": config.graph_optimization,
        "intra_op_num_threads": config.intra_op_threads,
        "inter_op_num_threads": config.inter_op_threads,
    }


def build_onnx_model(context: BuildContext, config: BackendConfig) -> BuiltArtifact:
    """ORT CPU and CUDA run the prepared ONNX; ORT applies its own graph passes at load time."""
    target = context.workdir / "artifact.onnx"
    shutil.copyfile(context.model, target)
    return BuiltArtifact(path=target, session_options=recorded_session_options(config))


def build_rtx_context_model(context: BuildContext, config: BackendConfig) -> BuiltArtifact:
    """Compile the model with the TensorRT-RTX EP into an EP-context model (engine embedded),
    through the plugin's registration and devices, as the runtime loads it."""
    import onnxruntime as ort

    from lipsync_contract.errors import BackendError
    from lipsync_core.backends.ort_plugins import rtx_session_options

    target = context.workdir / "artifact.onnx"
    options = ort.SessionOptions()
    options.add_session_config_entry("ep.context_enable", "1")
    options.add_session_config_entry("ep.context_embed_mode", "1")
    options.add_session_config_entry("ep.context_file_path", str(target))
    provider_options = {
        "device_id": str(config.device_id),
        "nv_profile_min_shapes": shapes_option(context.contract, context.batch.min),
        "nv_profile_opt_shapes": shapes_option(context.contract, context.batch.opt),
        "nv_profile_max_shapes": shapes_option(context.contract, context.batch.max),
    }
    try:
        options = rtx_session_options(options, config.device_id, provider_options)
    except BackendError as exc:
        raise BuildFailedError(str(exc)) from None
    try:
        ort.InferenceSession(str(context.model), sess_options=options)
    except Exception as exc:  # the EP refuses GPUs it does not support with a runtime error
        raise BuildFailedError(f"TensorRT-RTX refused to compile: {one_line(exc)}") from None
    if not target.is_file():
        raise BuildFailedError("TensorRT-RTX wrote no EP-context model")
    return BuiltArtifact(
        path=target, session_options={**recorded_session_options(config), **provider_options}
    )
