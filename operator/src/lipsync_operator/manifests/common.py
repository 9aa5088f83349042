"""Pieces shared by every child manifest: metadata, owner reference, pod security, placement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lipsync_contract.api import KIND, api_version
from lipsync_operator.config import OperatorConfig
from lipsync_operator.observed import GFD_PRODUCT, GFD_SHARING

Manifest = dict[str, Any]

RUN_AS_USER = 10001


@dataclass(frozen=True)
class Owner:
    """The LipSyncModel that owns the children."""

    name: str
    namespace: str
    uid: str
    generation: int = 1

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": api_version(),
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def gpu_node_affinity(product_labels: list[str], sharing_rule: Manifest | None = None) -> Manifest:
    """Require nodes of the product (its plain or -SHARED label) and, optionally, a sharing mode."""
    expressions = [{"key": GFD_PRODUCT, "operator": "In", "values": product_labels}]
    if sharing_rule is not None:
        expressions.append(sharing_rule)
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def sharing_rule(strategy: str | None, strategies: list[str]) -> Manifest:
    """Node selector expression: exactly this strategy, or none of the sharing strategies."""
    if strategy is None:
        return {"key": GFD_SHARING, "operator": "NotIn", "values": strategies}
    return {"key": GFD_SHARING, "operator": "In", "values": [strategy]}


def gpu_tolerations(config: OperatorConfig) -> list[Manifest]:
    return [{"key": config.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]


def cache_volume(config: OperatorConfig, read_only: bool) -> Manifest:
    cache = config.cache
    if cache.kind == "pvc":
        return {
            "name": "cache",
            "persistentVolumeClaim": {"claimName": cache.claim_name, "readOnly": read_only},
        }
    return {"name": "cache", "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}


def cache_mount(mount_path: str, subdir: str, *, read_only: bool) -> Manifest:
    """The engine cache (or ``subdir`` of it) at ``mount_path``."""
    mount: Manifest = {"name": "cache", "mountPath": mount_path}
    if subdir:
        mount["subPath"] = subdir
    if read_only:
        mount["readOnly"] = True
    return mount


def pod_identity(config: OperatorConfig) -> Manifest:
    """Server and build pods never call the API server: no service-account token in them."""
    identity: Manifest = {"automountServiceAccountToken": False}
    if config.service_account:
        identity["serviceAccountName"] = config.service_account
    return identity


def tmp_volume() -> Manifest:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
