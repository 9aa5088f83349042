"""Building the artifact for one backend from the prepared (optimized, precision-set) ONNX."""

from lipsync_engine_builder.targets.base import BuildContext, BuiltArtifact
from lipsync_engine_builder.targets.select import build_artifact, preflight
from lipsync_engine_builder.targets.tensorrt import TensorRTSettings

__all__ = ["BuildContext", "BuiltArtifact", "TensorRTSettings", "build_artifact", "preflight"]
