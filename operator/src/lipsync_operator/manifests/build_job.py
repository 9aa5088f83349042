"""The engine build Job: ``lipsync build`` on one node of the target GPU product."""

from __future__ import annotations

from lipsync_contract.enginekey import short_key
from lipsync_contract.request import (
    SOURCE_CA_ENV,
    SOURCE_CA_KEY,
    SOURCE_TOKEN_ENV,
    SOURCE_TOKEN_KEY,
    BuildRequest,
)
from lipsync_operator import naming
from lipsync_operator.config import OperatorConfig
from lipsync_operator.engines import TERMINATION_LOG
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
    tmp_volume,
)
from lipsync_operator.manifests.sources import build_source_mounts

# Builder exit codes: 1 = the build or its accuracy gate failed, 2 = bad arguments. Both are
# deterministic, so the Job fails at once instead of retrying; other failures use backoffLimit.
DETERMINISTIC_EXIT_CODES = [1, 2]


def build_job_labels(owner: Owner, product: str, key: str) -> dict[str, str]:
    return {
        **naming.model_labels(owner.name),
        naming.LABEL_COMPONENT: naming.COMPONENT_BUILD,
        naming.LABEL_PRODUCT: naming.label_value(product),
        naming.LABEL_ENGINE: short_key(key),
    }


def private_cache_init(config: OperatorConfig, cache_dir: str) -> Manifest:
    """Creates the model's private cache directory as the pods' user, before the builder mounts
    it as a subPath: the kubelet creates a missing subPath as root, which the non-root builder
    could not write. Runs the operator's own runtime image, never the model's builder."""
    return {
        "name": "cache-dir",
        "image": config.runtime_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["mkdir", "-p", f"{config.cache.mount_path}/{cache_dir}"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [cache_mount(config.cache.mount_path, "", read_only=False)],
    }


def build_job(
    owner: Owner,
    request: BuildRequest,
    *,
    key: str,
    product_labels: list[str],
    image: str,
    config: OperatorConfig,
    cache_dir: str = "",
    credentials_secret: str | None = None,
) -> Manifest:
    """One Job per engine key; its name is derived from the key, so it is never created twice.

    ``cache_dir``: the part of the engine cache the builder sees as its cache root ("" for all
    of it; a model's own directory for a builder image the operator does not trust).
    ``credentials_secret``: its key ``token`` (and ``ca.crt``, if there is one) reaches the
    builder as an environment variable (never in arguments or annotations) for https:// sources.
    """
    labels = build_job_labels(owner, request.gpu_product, key)
    annotations = {naming.ANNOTATION_ENGINE_KEY: key}
    source_volumes, source_mounts, source_env = build_source_mounts(
        [request.model, request.calibration, request.audio_encoder]
    )
    container: Manifest = {
        "name": "builder",
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["lipsync"],
        "args": request.to_args(),
        "resources": config.builder_resources.manifest(config.gpu_resource),
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            cache_mount(config.cache.mount_path, cache_dir, read_only=False),
            {"name": "tmp", "mountPath": "/tmp"},
            *source_mounts,
        ],
    }
    if credentials_secret:
        token = {"secretKeyRef": {"name": credentials_secret, "key": SOURCE_TOKEN_KEY}}
        ca = {"secretKeyRef": {"name": credentials_secret, "key": SOURCE_CA_KEY, "optional": True}}
        source_env = [
            *source_env,
            {"name": SOURCE_TOKEN_ENV, "valueFrom": token},
            {"name": SOURCE_CA_ENV, "valueFrom": ca},
        ]
    if source_env:
        container["env"] = source_env
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "affinity": gpu_node_affinity(product_labels),
        "tolerations": gpu_tolerations(config),
        "securityContext": pod_security_context(),
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [cache_volume(config, read_only=False), tmp_volume(), *source_volumes],
        **({"initContainers": [private_cache_init(config, cache_dir)]} if cache_dir else {}),
        **pod_identity(config),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            owner, naming.job_name(owner.name, short_key(key)), labels, annotations
        ),
        "spec": {
            "backoffLimit": config.build_backoff_limit,
            "activeDeadlineSeconds": config.build_deadline_seconds,
            "ttlSecondsAfterFinished": config.build_ttl_seconds,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "builder",
                            "operator": "In",
                            "values": DETERMINISTIC_EXIT_CODES,
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
