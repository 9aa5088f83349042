"""What every backend target takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.kinds import Precision
from lipsync_contract.modelio import IOContract


@dataclass(frozen=True)
class BuildContext:
    model: Path  # the optimized ONNX at the artifact's precision (fp32 for TensorRT fp16)
    workdir: Path
    contract: IOContract
    batch: BatchProfile
    precision: Precision
    timing_cache: bytes = b""


@dataclass(frozen=True)
class BuiltArtifact:
    path: Path
    session_options: dict[str, str | int] = field(default_factory=dict)
    timing_cache: bytes = b""  # updated TensorRT timing cache to save, if any
