"""Reading LipSyncModels and their children the way a user does, with kubectl."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from typing import Any

import yaml

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.waiting import wait_for

BUILD_SELECTOR = "app.kubernetes.io/component=engine-build"
SERVER_SELECTOR = "app.kubernetes.io/component=server"


def kubectl_json(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return out


def model(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", "lsm", name, "-n", namespace)


def status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(model(cluster, namespace, name).get("status") or {})


def condition(found: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions") or [] if c["type"] == type_), {})


def engines(found: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A status's engines by GPU product."""
    return {e["gpuProduct"]: e for e in found.get("engines") or []}


def items(cluster: LocalCluster, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = kubectl_json(cluster, "get", kind, "-n", namespace, "-l", selector)
    return list(found["items"])


def model_selector(name: str) -> str:
    return f"lipsync.dev/model={name}"


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def ready(pod: Mapping[str, Any]) -> bool:
        conditions = pod.get("status", {}).get("conditions") or []
        return (
            pod.get("status", {}).get("phase") == "Running"
            and pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        )

    return [pod for pod in pods if ready(pod)]


def nodes_of(pods: list[dict[str, Any]]) -> Counter[str]:
    return Counter(pod["spec"]["nodeName"] for pod in pods)


def wait_phase(
    cluster: LocalCluster, namespace: str, name: str, phase: str, timeout: float
) -> dict[str, Any]:
    """Wait until the status is ``phase`` for the current generation; returns the status."""

    def reached() -> dict[str, Any] | None:
        found = model(cluster, namespace, name)
        current = found.get("status") or {}
        generation = found["metadata"]["generation"]
        if current.get("phase") == phase and current.get("observedGeneration") == generation:
            return dict(current)
        return None

    return wait_for(reached, timeout=timeout, interval=1.0, description=f"{name} phase {phase}")


def apply(cluster: LocalCluster, namespace: str, document: Mapping[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8") as file:
        yaml.safe_dump(dict(document), file)
        file.flush()
        cluster.kubectl("apply", "-n", namespace, "-f", file.name)


def patch_spec(cluster: LocalCluster, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    cluster.kubectl(
        "patch", "lsm", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def jobs(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return items(cluster, "jobs", namespace, f"{model_selector(name)},{BUILD_SELECTOR}")


def deployments(cluster: LocalCluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The model's server Deployments by GPU product."""
    found = items(cluster, "deployments", namespace, model_selector(name))
    return {d["metadata"]["labels"]["lipsync.dev/gpu-product"]: d for d in found}


def server_pods(
    cluster: LocalCluster, namespace: str, name: str, product: str
) -> list[dict[str, Any]]:
    """Ready server pods of one product."""
    selector = f"{SERVER_SELECTOR},{model_selector(name)},lipsync.dev/gpu-product={product}"
    return ready_pods(items(cluster, "pods", namespace, selector))


def serving(
    cluster: LocalCluster, namespace: str, name: str, product: str, replicas: int
) -> list[dict[str, Any]]:
    """The product's Deployment wants ``replicas`` and exactly that many pods are Ready."""
    deployment = deployments(cluster, namespace, name).get(product)
    if deployment is None or deployment["spec"].get("replicas") != replicas:
        return []
    pods = server_pods(cluster, namespace, name, product)
    return pods if len(pods) == replicas else []


def wait_serving(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    product: str,
    replicas: int,
    *,
    timeout: float = 180,
) -> list[dict[str, Any]]:
    return wait_for(
        lambda: serving(cluster, namespace, name, product, replicas),
        timeout=timeout,
        interval=1.0,
        description=f"{replicas} ready {product} pods of {name}",
    )
