"""The server Deployment of one GPU product: N model instances per GPU, spread over its nodes."""

from __future__ import annotations

import posixpath
from pathlib import Path

from lipsync_contract.api import LipSyncModelSpec
from lipsync_contract.cache import entry_dir
from lipsync_contract.enginekey import short_key
from lipsync_contract.server_options import ServerOptions
from lipsync_operator import naming
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.access import server_access
from lipsync_operator.manifests.common import (
    Manifest,
    Owner,
    cache_mount,
    cache_volume,
    container_security_context,
    gpu_node_affinity,
    gpu_tolerations,
    metadata,
    pod_identity,
    pod_security_context,
    sharing_rule,
    tmp_volume,
)
from lipsync_operator.manifests.sources import avatar_volume
from lipsync_operator.observed import ServedEngine
from lipsync_operator.pools import STRATEGY_LABELS, instances_per_pod

GRPC_PORT = 8001
METRICS_PORT = 8002
HEALTH_PORT = 8003  # plaintext health alone: probes speak neither TLS nor tokens
ENGINE_DIR = "/engine"
ENCODER_DIR = "/audio-encoder"
AVATAR_DIR = "/avatar"


def server_options(
    spec: LipSyncModelSpec, model: str, engine: ServedEngine, config: OperatorConfig
) -> ServerOptions:
    """The server's settings for one product's pods (the server's own typed contract)."""
    speech: dict[str, object] = {}
    if engine.encoder_key and spec.audio_encoder is not None:
        speech = {
            "audio_encoder": Path(ENCODER_DIR) / engine.encoder_artifact,
            "encoder_io_preset": spec.audio_encoder.io,
            "encoder_backend": config.backend,
        }
        if engine.encoder_artifact_sha256:
            speech["audio_encoder_sha256"] = engine.encoder_artifact_sha256
    digest = {"model_sha256": engine.artifact_sha256} if engine.artifact_sha256 else {}
    return ServerOptions(
        model=Path(ENGINE_DIR) / engine.artifact,
        avatar=Path(AVATAR_DIR),
        model_name=model,
        io_preset=spec.io.preset,
        backend=config.backend,
        host=config.server_listen_address,
        grpc_port=GRPC_PORT,
        metrics_port=METRICS_PORT,
        health_port=HEALTH_PORT,
        instances=instances_per_pod(spec),
        max_batch_size=spec.batching.max_batch,
        max_queue_delay_microseconds=spec.batching.max_queue_delay_microseconds,
        **speech,
        **digest,
        **server_access(spec.access).options,
    )


def server_args(
    spec: LipSyncModelSpec, model: str, engine: ServedEngine, config: OperatorConfig
) -> list[str]:
    return ["serve", *server_options(spec, model, engine, config).to_args()]


def _engine_mounts(engine: ServedEngine, cache_dir: str) -> list[Manifest]:
    def entry(key: str) -> str:
        return posixpath.join(cache_dir, entry_dir(key))

    mounts = [cache_mount(ENGINE_DIR, entry(engine.key), read_only=True)]
    if engine.encoder_key:
        mounts.append(cache_mount(ENCODER_DIR, entry(engine.encoder_key), read_only=True))
    return mounts


def _probes() -> Manifest:
    grpc = {"port": HEALTH_PORT}
    return {
        # Loading an engine and decoding an avatar can take minutes; liveness waits for it.
        "startupProbe": {"grpc": grpc, "periodSeconds": 5, "failureThreshold": 120},
        "readinessProbe": {"grpc": grpc, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"grpc": grpc, "periodSeconds": 10, "failureThreshold": 3},
    }


def server_deployment(
    owner: Owner,
    spec: LipSyncModelSpec,
    *,
    product: str,
    product_labels: list[str],
    engine: ServedEngine,
    replicas: int | None,
    rollout_strategy: Manifest,
    config: OperatorConfig,
    autoscaled_gpus: int | None = None,
    cache_dir: str = "",
) -> Manifest:
    """The Deployment; ``replicas=None`` leaves the count to the autoscaler (not applied).

    ``cache_dir``: where in the engine cache the model's engines are ("": the shared cache).

    ``rollout_strategy``: rolling-update bounds that fit the free GPUs (``plan_rollout``).
    ``autoscaled_gpus``: recorded for a Deployment without an autoscaler (``wanted_servers``).
    """
    name = naming.deployment_name(owner.name, product)
    selector = naming.server_selector(owner.name, product)
    labels = {**naming.model_labels(owner.name), **selector}
    annotations = {
        naming.ANNOTATION_ENGINE_KEY: engine.key,
        naming.ANNOTATION_ARTIFACT: engine.artifact,
    }
    if engine.artifact_sha256:
        annotations[naming.ANNOTATION_ARTIFACT_SHA256] = engine.artifact_sha256
    if engine.encoder_key:
        annotations[naming.ANNOTATION_ENCODER_KEY] = engine.encoder_key
        annotations[naming.ANNOTATION_ENCODER_ARTIFACT] = engine.encoder_artifact
    if engine.encoder_artifact_sha256:
        annotations[naming.ANNOTATION_ENCODER_ARTIFACT_SHA256] = engine.encoder_artifact_sha256
    pod_labels = {**labels, naming.LABEL_ENGINE: short_key(engine.key)}
    strategies = sorted(STRATEGY_LABELS.values())
    strategy = STRATEGY_LABELS.get(spec.sharing) if spec.sharing != "exclusive" else None
    avatar_vol, avatar_mount = avatar_volume(spec.avatar.uri, AVATAR_DIR)
    access = server_access(spec.access)
    container: Manifest = {
        "name": "server",
        "image": spec.images.server or config.default_server_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["lipsync"],
        "args": server_args(spec, owner.name, engine, config),
        # A server that exits at start says why on its last log line (PodsHealthy shows it).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # For "$(POD_IP)" in the listen address (expanded by the kubelet).
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        **_probes(),
        "resources": config.server_resources.manifest(config.gpu_resource),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *_engine_mounts(engine, cache_dir),
            avatar_mount,
            {"name": "tmp", "mountPath": "/tmp"},
            *access.mounts,
        ],
    }
    pod_spec: Manifest = {
        "affinity": gpu_node_affinity(product_labels, sharing_rule(strategy, strategies)),
        "tolerations": gpu_tolerations(config),
        "topologySpreadConstraints": [
            {
                # Soft: nodes of one product may hold different GPU counts; the GPU request
                # already caps pods per node, the spread only evens them out.
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
                "matchLabelKeys": ["pod-template-hash"],
            }
        ],
        "securityContext": pod_security_context(),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 45,
        "containers": [container],
        "volumes": [
            cache_volume(config, read_only=True),
            avatar_vol,
            tmp_volume(),
            *access.volumes,
        ],
        **pod_identity(config),
    }
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 3,
        "strategy": rollout_strategy,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    **annotations,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    recorded = {naming.ANNOTATION_SERVING_SPEC: spec.model_dump_json(by_alias=True)}
    if autoscaled_gpus is not None:
        recorded[naming.ANNOTATION_AUTOSCALED_GPUS] = str(autoscaled_gpus)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            owner,
            name,
            labels,
            {**annotations, **recorded},
        ),
        "spec": deployment_spec,
    }
