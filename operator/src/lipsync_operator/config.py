"""Operator settings: images, backend, cache, build limits. Read from the environment (Helm)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lipsync_contract.errors import LipSyncError
from lipsync_contract.kinds import BackendKind

ENV_PREFIX = "LIPSYNC_"


class ConfigError(LipSyncError):
    """The operator's own settings are invalid."""


class CacheConfig(BaseModel):
    """Where engines live: ROOT/engines/<key-hex>/{artifact, manifest.json}.

    Build and server pods mount it as a volume (a ReadWriteMany PVC in production, a hostPath
    on a one-node test bed). The operator never reads it: it learns engines from build Jobs'
    results and from each model's status.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["pvc", "hostPath"] = "pvc"
    claim_name: str = "lipsync-engine-cache"
    host_path: str = "/var/lib/lipsync/cache"
    mount_path: str = "/cache"


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: str
    memory: str
    memory_limit: str

    def manifest(self, gpu_resource: str) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu, "memory": self.memory},
            "limits": {"memory": self.memory_limit, gpu_resource: "1"},
        }


_NESTED_SETTINGS: dict[str, type[BaseModel]] = {
    "cache": CacheConfig,
    "server_resources": Resources,
    "builder_resources": Resources,
}


class OperatorConfig(BaseModel):
    """Everything the operator needs that is not in a LipSyncModel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime_image: str = "ghcr.io/lipsync/runtime:0.1.0"
    server_image: str = ""
    builder_image: str = ""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    backend: BackendKind = "tensorrt"
    runtime: str = Field("", description="Runtime identity in the engine key; default the image.")
    builder_version: str = "0.1.0"
    cache: CacheConfig = Field(default_factory=CacheConfig)
    gpu_resource: str = "nvidia.com/gpu"
    build_backoff_limit: int = Field(1, ge=0)
    build_deadline_seconds: int = Field(3600, ge=60)
    build_ttl_seconds: int = Field(3600, ge=0)
    # How much the builder checks and times each engine (not part of the engine key).
    build_verify_samples: int = Field(4, ge=1)
    build_measure_frames: int = Field(8, ge=1)
    server_resources: Resources = Resources(cpu="2", memory="4Gi", memory_limit="8Gi")
    builder_resources: Resources = Resources(cpu="2", memory="8Gi", memory_limit="16Gi")
    service_account: str = ""
    # The key build Jobs are signed with (the chart mounts it from a Secret; see signing.py).
    build_signing_key_file: Path | None = None
    # What the servers bind: "0.0.0.0", or "$(POD_IP)" (expanded by the kubelet) on hosts
    # where every pod shares one network namespace.
    server_listen_address: str = Field("0.0.0.0", min_length=1)
    # Every model converges this often even when nothing marks it.
    resync_seconds: float = Field(60.0, gt=0)
    # Liveness fails when a reconcile runs this long, or reconciles cannot reach the API server
    # for this long (three resync periods by default).
    reconcile_stall_seconds: float = Field(180.0, gt=0)
    # A NotReady node's GPUs still count this long (kube-controller-manager's eviction default).
    node_grace_seconds: int = Field(300, ge=0)
    # What scales a model's Deployments when spec.autoscaling.enabled (docs/operator.md,
    # "Autoscaling"): an autoscaling/v2 HPA, or a KEDA ScaledObject on Prometheus queries.
    autoscaler: Literal["hpa", "keda"] = "hpa"
    # hpa: a custom-metrics adapter serves the lipsync_frames_per_second Pods metric.
    hpa_frames_metric: bool = False
    # keda: the Prometheus that scrapes the server pods; how often KEDA asks it, and how long
    # a product stays idle before its last pod goes (minReplicas 0).
    prometheus_address: str = ""
    keda_polling_seconds: int = Field(15, ge=1)
    keda_cooldown_seconds: int = Field(300, ge=0)
    # Nodes carrying this label were added by a node autoscaler (empty: none are).
    autoscaled_node_label: str = "karpenter.sh/nodepool"
    # Isolation (docs/operator.md, "Security and multi-tenancy"). Node path prefixes file:// URIs
    # may name (none: file:// is refused); whether specs may override images; builder images
    # besides the operator's own that may write the shared engine cache; GPUs one model's
    # servers may take (0: no limit).
    allowed_host_paths: tuple[str, ...] = ()
    allow_image_overrides: bool = False
    trusted_builder_images: tuple[str, ...] = ()
    max_gpus_per_model: int = Field(0, ge=0)
    # A NetworkPolicy per model: gRPC from its own namespace and these ("*": any), metrics
    # from the monitoring namespace ("": none).
    network_policy: bool = True
    grpc_client_namespaces: tuple[str, ...] = ()
    metrics_namespace: str = "monitoring"

    @model_validator(mode="after")
    def _keda_needs_prometheus(self) -> OperatorConfig:
        if self.autoscaler == "keda" and not self.prometheus_address:
            raise ValueError("autoscaler keda needs prometheus_address")
        return self

    @field_validator(
        "allowed_host_paths", "trusted_builder_images", "grpc_client_namespaces", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """The environment carries lists as ``a,b``."""
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("allowed_host_paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"{path!r} is not an absolute node path")
        return paths

    # The server and the builder must share one TensorRT: by default they are one image.
    @property
    def default_server_image(self) -> str:
        return self.server_image or self.runtime_image

    @property
    def default_builder_image(self) -> str:
        return self.builder_image or self.runtime_image

    @property
    def runtime_id(self) -> str:
        """The runtime identity that goes into engine keys."""
        return self.runtime or self.default_builder_image

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Settings from ``LIPSYNC_*`` variables, e.g. LIPSYNC_RUNTIME_IMAGE, LIPSYNC_CACHE_KIND."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in cls.model_fields:
            raw = env.get(f"{ENV_PREFIX}{field.upper()}")
            if raw is not None and field not in _NESTED_SETTINGS:
                values[field] = raw
        # Nested settings: LIPSYNC_<FIELD>_<SUBFIELD>, e.g. LIPSYNC_SERVER_RESOURCES_CPU.
        for field, model in _NESTED_SETTINGS.items():
            nested = {
                sub: raw
                for sub in model.model_fields
                if (raw := env.get(f"{ENV_PREFIX}{field.upper()}_{sub.upper()}")) is not None
            }
            if nested:
                default = cls.model_fields[field].get_default(call_default_factory=True)
                values[field] = {**default.model_dump(), **nested}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            subject = f"operator setting {where}" if where else "operator settings"
            raise ConfigError(f"{subject}: {first['msg']}") from None
