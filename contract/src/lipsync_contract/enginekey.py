"""The engine key: a content address over everything that changes an engine's bytes.

Both the engine builder and the operator compute it from the same inputs, so the operator can look
the engine up in the cache (and name the build Job) without building anything. Same key, never
built twice.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from lipsync_contract.kinds import BackendKind, Precision
from lipsync_contract.modelio import EncoderContract, ModelContract

KEY_PREFIX = "sha256:"
KEY_SCHEMA_VERSION = 1


def unpinned_digest(uri: str) -> str:
    """Digest stand-in for a model or calibration set given by URI without a pinned sha256."""
    return f"unpinned:{uri}"


class BatchProfile(BaseModel):
    """TensorRT-style optimization profile over the batch dimension (min <= opt <= max)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int = Field(1, ge=1)
    opt: int = Field(4, ge=1)
    max: int = Field(8, ge=1)

    def sizes(self) -> list[int]:
        """Batch sizes the builder measures: powers of two in [min, max], plus opt and max."""
        sizes = {self.min, self.opt, self.max}
        size = 1
        while size <= self.max:
            if size >= self.min:
                sizes.add(size)
            size *= 2
        return sorted(sizes)


class EngineKeyInputs(BaseModel):
    """Everything that changes the artifact. Change any field and the key changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_digest: str = Field(min_length=1, description="sha256 of the ONNX file, or unpinned:URI")
    precision: Precision
    contract: ModelContract | EncoderContract
    batch: BatchProfile
    backend: BackendKind
    runtime: str = Field(min_length=1, description="Builder image or backend library version")
    gpu_product: str = Field("cpu", description="nvidia.com/gpu.product, or cpu")
    compute_capability: str = Field("", description="e.g. 9.0; empty on CPU")
    calibration_digest: str = ""
    builder_version: str = Field(min_length=1)

    def canonical_json(self) -> str:
        document = {"schema": KEY_SCHEMA_VERSION, **self.model_dump(mode="json")}
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def engine_key(inputs: EngineKeyInputs) -> str:
    """``sha256:<hex>`` of the canonical JSON of the inputs (key order and formatting ignored)."""
    return KEY_PREFIX + hashlib.sha256(inputs.canonical_json().encode()).hexdigest()


def short_key(key: str, length: int = 12) -> str:
    """The first hex digits of a key, for object names (Job, Deployment suffixes)."""
    return key.removeprefix(KEY_PREFIX)[:length]
