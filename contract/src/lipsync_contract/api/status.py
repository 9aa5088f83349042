"""``LipSyncModel.status``: what the operator observed and did, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from lipsync_contract.api.base import ApiModel

Phase = Literal["Pending", "Building", "Rolling", "Ready", "Degraded", "Failed"]
EngineState = Literal["Pending", "Building", "Ready", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]

CONDITION_TYPES = ("EnginesReady", "Available", "Progressing", "Degraded")

# metav1.Condition's validation of reason (CamelCase words).
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class _StatusModel(ApiModel):
    # Status written by a newer operator may carry fields this version does not know.
    model_config = ConfigDict(extra="ignore")


class Condition(_StatusModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="EnginesReady, Available, Progressing, Degraded.")
    status: ConditionStatus
    reason: str = Field(max_length=1024, pattern=REASON_PATTERN, description="CamelCase cause.")
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="Spec generation judged.")


class EngineStatus(_StatusModel):
    """The engine and the servers of one GPU product."""

    gpu_product: str = Field(description="nvidia.com/gpu.product of the nodes.")
    compute_capability: str = Field("", description="major.minor of the product's GPUs.")
    key: str = Field("", description="Engine key the current spec asks for.")
    state: EngineState
    reason: str = Field("", description="Why the engine is not Ready (the builder's reason).")
    psnr_db: float | None = Field(None, description="PSNR of the engine vs the FP32 reference.")
    frames_per_second: float | None = Field(None, description="Measured by the builder.")
    build_seconds: float | None = Field(None, description="Build wall time.")
    job: str = Field("", description="Name of the build Job.")
    artifact: str = Field("", description="File name of the Ready engine in its cache entry.")
    encoder_key: str = Field("", description="Engine key of the audio encoder, when there is one.")
    encoder_artifact: str = Field("", description="File name of the Ready audio encoder engine.")
    artifact_sha256: str = Field("", description="Hex sha256 of the engine file, as built.")
    encoder_artifact_sha256: str = Field(
        "", description="Hex sha256 of the audio encoder engine file, as built."
    )
    serving_key: str = Field("", description="Engine key the product's servers run now.")
    gpus: int = Field(0, ge=0, description="GPUs of this product the servers may use.")
    replicas: int = Field(0, ge=0, description="Server pods of this product.")
    ready_replicas: int = Field(0, ge=0, description="Ready server pods of this product.")


class LipSyncModelStatus(_StatusModel):
    """Observed state of a LipSyncModel."""

    observed_generation: int = Field(0, ge=0, description="Spec generation this status reflects.")
    phase: Phase = Field("Pending", description="Summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    engines: list[EngineStatus] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["gpuProduct"],
        },
    )
    gpu_products: str = Field("", description="Comma-separated GPU products served (for kubectl).")
    replicas: int = Field(0, ge=0, description="Server pods over all products.")
    ready_replicas: int = Field(0, ge=0, description="Ready server pods over all products.")
    endpoint: str = Field("", description="gRPC endpoint of the model's Service (host:port).")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
