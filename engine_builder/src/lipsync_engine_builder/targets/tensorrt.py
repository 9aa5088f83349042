"""TensorRT 10 target: network from the ONNX parser, one optimization profile over the batch,
precision flags, workspace limit, builder optimization level, and a timing cache per GPU product.

TensorRT is imported only when building; where only the type stubs are installed, ``import
tensorrt`` yields an empty namespace package, so availability is probed by the ``Builder`` class.
Its API is typed through the narrow protocols of ``tensorrt_api``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import cast

from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.profiles import profile_shapes, tensorrt_flag_names
from lipsync_engine_builder.targets.tensorrt_api import TensorRTModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTSettings:
    workspace_bytes: int = 4 << 30
    optimization_level: int = 3  # TensorRT's default; 5 searches longest


def _import_tensorrt() -> TensorRTModule | str:
    """The tensorrt module, or why it cannot be used here."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        return f"TensorRT is not installed ({exc})"
    if not hasattr(module, "Builder"):
        return "TensorRT is not installed (only its type stubs are)"
    return cast("TensorRTModule", module)


def unavailable_reason() -> str:
    """Why TensorRT cannot build here, or an empty string when it can."""
    found = _import_tensorrt()
    return found if isinstance(found, str) else ""


def build_engine(context: BuildContext, settings: TensorRTSettings) -> BuiltArtifact:
    """Build a serialized engine (``.plan``) valid for this GPU and TensorRT version only."""
    trt = _import_tensorrt()
    if isinstance(trt, str):
        raise BuildFailedError(f"tensorrt backend: {trt}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(context.model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildFailedError(f"TensorRT ONNX parser failed: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    for flag in tensorrt_flag_names(context.precision):
        config.set_flag(getattr(trt.BuilderFlag, flag))

    profile = builder.create_optimization_profile()
    for name, (minimum, optimum, maximum) in profile_shapes(
        context.contract, context.batch
    ).items():
        profile.set_shape(name, minimum, optimum, maximum)
    config.add_optimization_profile(profile)

    timing_cache = config.create_timing_cache(context.timing_cache)
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("TensorRT timing cache does not match this GPU or version; starting empty")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailedError("TensorRT could not build the engine (see the log above)")
    target = context.workdir / "artifact.plan"
    target.write_bytes(bytes(memoryview(serialized)))
    updated = bytes(memoryview(config.get_timing_cache().serialize()))
    return BuiltArtifact(
        path=target,
        session_options={
            "workspace_bytes": settings.workspace_bytes,
            "builder_optimization_level": settings.optimization_level,
            "flags": ",".join(tensorrt_flag_names(context.precision)) or "none",
        },
        timing_cache=updated,
    )
