"""TensorRT target for TensorRT 10 and 11: network from the ONNX parser, a latency and a
throughput optimization profile, precision by the version's typing rules, workspace limit,
builder optimization level, and a timing cache per GPU product.

TensorRT 10 is weakly typed (precision from ``BuilderFlag``s over an fp32 ONNX); TensorRT 11 is
strongly typed only (precision from the ONNX: fp16 weights, or Q/DQ nodes), see
``profiles.tensorrt_typing``. TensorRT is imported only when building; where only the type stubs
are installed, ``import tensorrt`` yields an empty namespace package, so availability is probed by
the ``Builder`` class. Its API is typed through the narrow protocols of ``tensorrt_api``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import cast

from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.profiles import (
    TensorRTTyping,
    profile_sets,
    tensorrt_major,
    tensorrt_typing,
)
from lipsync_engine_builder.targets.tensorrt_api import (
    Builder,
    BuilderConfig,
    NetworkDefinition,
    TensorRTModule,
)

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
    if isinstance(found, str):
        return found
    try:
        tensorrt_major(found.__version__)
    except BuildFailedError as exc:
        return str(exc)
    return ""


def create_network(builder: Builder) -> NetworkDefinition:
    """``create_network(0)`` on both versions, with different meanings.

    TensorRT 10: a weakly typed network (explicit batch is the only mode since 10.0); the builder
    flags of ``set_precision_flags`` decide which reduced precisions TensorRT may choose.
    TensorRT 11: every network is strongly typed; ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
    is deprecated there and ignored, so no flag is passed and the ONNX's own types rule.
    """
    return builder.create_network(0)


def set_precision_flags(trt: TensorRTModule, config: BuilderConfig, typing: TensorRTTyping) -> None:
    """TensorRT 10 only: ``BuilderFlag.FP16``/``INT8``. TensorRT 11 removed these flags, so nothing
    is looked up there (``trt.BuilderFlag.FP16`` would raise AttributeError)."""
    if typing.strongly_typed:
        return
    for name in typing.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))


def build_engine(context: BuildContext, settings: TensorRTSettings) -> BuiltArtifact:
    """Build a serialized engine (``.plan``) valid for this GPU and TensorRT version only."""
    trt = _import_tensorrt()
    if isinstance(trt, str):
        raise BuildFailedError(f"tensorrt backend: {trt}")
    typing = tensorrt_typing(tensorrt_major(trt.__version__), context.precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(context.model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildFailedError(f"TensorRT ONNX parser failed: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    set_precision_flags(trt, config, typing)

    profiles = profile_sets(context.contract, context.batch)
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (minimum, optimum, maximum) in shapes.items():
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
    first = next(iter(profiles[-1].values()))
    return BuiltArtifact(
        path=target,
        session_options={
            "workspace_bytes": settings.workspace_bytes,
            "builder_optimization_level": settings.optimization_level,
            "typing": "strong" if typing.strongly_typed else "weak",
            "flags": ",".join(typing.builder_flags) or "none",
            "profiles": len(profiles),
            "max_batch": first[2][0],
        },
        timing_cache=updated,
    )
