"""The manifest stored next to each artifact in the cache: what was built, from what, how well."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from lipsync_contract.enginekey import EngineKeyInputs
from lipsync_contract.kinds import Precision

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


class Accuracy(BaseModel):
    model_config = ConfigDict(frozen=True)

    psnr_db: float = Field(description="PSNR of the artifact's output vs the FP32 reference.")
    max_abs_error: float
    min_psnr_db: float = Field(description="The gate it passed.")
    samples: int


class Throughput(BaseModel):
    """Self-measurement at one batch size."""

    model_config = ConfigDict(frozen=True)

    batch: int
    ms_per_frame: float
    frames_per_second: float


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = MANIFEST_SCHEMA_VERSION
    key: str
    key_inputs: EngineKeyInputs
    artifact: str = Field(description="Artifact file name, next to the manifest.")
    artifact_sha256: str
    artifact_bytes: int
    precision: Precision
    backend: str
    runtime: str
    model_uri: str
    model_sha256: str = Field(description="Digest of the bytes actually built (pinned or not).")
    session_options: dict[str, str | int] = Field(default_factory=dict)
    optimization: dict[str, int] = Field(default_factory=dict, description="Node counts.")
    accuracy: Accuracy
    throughput: list[Throughput]
    build_seconds: float
    created: str = Field(description="UTC time of publication, ISO 8601.")

    def best_frames_per_second(self) -> float:
        return max((t.frames_per_second for t in self.throughput), default=0.0)
