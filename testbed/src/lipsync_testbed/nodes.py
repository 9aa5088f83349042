"""Fake GPU nodes: a YAML node-pool file, GPU Feature Discovery labels, add/remove/relabel."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.resources import delete_and_wait, delete_if_present
from lipsync_testbed.waiting import wait_for

log = logging.getLogger(__name__)

# The test bed's KWOK manages the nodes it creates, marked with this annotation, and no
# others: Karpenter's nodes carry KWOK's usual `kwok.x-k8s.io/node` and boot as real nodes.
KWOK_NODE_ANNOTATION = "testbed.lipsync.dev/kwok-node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
POOL_LABEL = "testbed.lipsync.dev/pool"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class GpuSpec:
    """The GPUs of a node as GPU Feature Discovery and the device plugin report them."""

    product: str
    count: int
    memory_mib: int
    compute_major: int
    compute_minor: int
    family: str | None = None
    sharing_strategy: str | None = None  # e.g. "time-slicing"
    replicas: int = 1

    @property
    def allocatable(self) -> int:
        return self.count * (self.replicas if self.sharing_strategy else 1)

    def labels(self) -> dict[str, str]:
        product = self.product
        labels = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(self.count),
            "nvidia.com/gpu.memory": str(self.memory_mib),
            "nvidia.com/gpu.compute.major": str(self.compute_major),
            "nvidia.com/gpu.compute.minor": str(self.compute_minor),
        }
        if self.family:
            labels["nvidia.com/gpu.family"] = self.family
        if self.sharing_strategy:
            product = f"{product}-SHARED"
            labels["nvidia.com/gpu.replicas"] = str(self.replicas)
            labels["nvidia.com/gpu.sharing-strategy"] = self.sharing_strategy
        labels[GPU_PRODUCT_LABEL] = product
        return labels


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    gpu: GpuSpec | None = None
    pool: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def resources(self) -> dict[str, str]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        if self.gpu:
            resources[GPU_RESOURCE] = str(self.gpu.allocatable)
        return resources

    def all_labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "kwok",
            "type": "kwok",
        }
        if self.pool:
            labels[POOL_LABEL] = self.pool
        if self.gpu:
            labels.update(self.gpu.labels())
        labels.update(self.labels)
        return labels

    def manifest(self) -> dict[str, Any]:
        resources = self.resources()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.all_labels(),
                "annotations": {
                    KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                    "node.alpha.kubernetes.io/ttl": "0",
                },
            },
            "spec": {},
            "status": {"allocatable": dict(resources), "capacity": dict(resources)},
        }


def _gpu_from_yaml(data: Mapping[str, Any]) -> GpuSpec:
    sharing = data.get("sharing") or {}
    return GpuSpec(
        product=str(data["product"]),
        count=int(data["count"]),
        memory_mib=int(data["memoryMiB"]),
        compute_major=int(data["computeMajor"]),
        compute_minor=int(data["computeMinor"]),
        family=str(data["family"]) if data.get("family") else None,
        sharing_strategy=str(sharing["strategy"]) if sharing else None,
        replicas=int(sharing.get("replicas", 1)) if sharing else 1,
    )


def parse_node_pool(document: Mapping[str, Any]) -> list[NodeSpec]:
    """Expand a node-pool document (see hack/cluster/nodepool.yaml) into node specs."""
    defaults = document.get("defaults") or {}
    specs: list[NodeSpec] = []
    for pool in document.get("pools") or []:
        merged = {**defaults, **pool}
        gpu = _gpu_from_yaml(merged["gpu"]) if merged.get("gpu") else None
        for index in range(int(merged.get("replicas", 1))):
            specs.append(
                NodeSpec(
                    name=f"{merged['name']}-{index}",
                    cpu=str(merged.get("cpu", "64")),
                    memory=str(merged.get("memory", "512Gi")),
                    pods=str(merged.get("pods", "110")),
                    gpu=gpu,
                    pool=str(merged["name"]),
                    labels={str(k): str(v) for k, v in (merged.get("labels") or {}).items()},
                )
            )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in node pool: {sorted(names)}")
    return specs


def load_node_pool(path: Path) -> list[NodeSpec]:
    with path.open(encoding="utf-8") as fh:
        document = yaml.safe_load(fh) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping with 'pools'")
    return parse_node_pool(document)


def _node_ready(node: client.V1Node) -> bool:
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def _node_ready_by_name(core: client.CoreV1Api, name: str) -> bool:
    return _node_ready(core.read_node(name))


def add_node(
    api: client.ApiClient, spec: NodeSpec, *, wait_ready: bool = True, timeout: float = 60.0
) -> None:
    """Create a fake node (KWOK makes it Ready), like a cluster autoscaler scaling up."""
    core = client.CoreV1Api(api)
    core.create_node(client.V1Node.model_validate(spec.manifest()))
    log.info("added node %s", spec.name)
    if wait_ready:
        wait_for(
            lambda: _node_ready(core.read_node(spec.name)),
            timeout=timeout,
            description=f"node {spec.name} Ready",
        )


def add_nodes(api: client.ApiClient, specs: list[NodeSpec], *, timeout: float = 60.0) -> None:
    for spec in specs:
        add_node(api, spec, wait_ready=False)
    core = client.CoreV1Api(api)
    for spec in specs:
        wait_for(
            functools.partial(_node_ready_by_name, core, spec.name),
            timeout=timeout,
            description=f"node {spec.name} Ready",
        )


def remove_node(
    api: client.ApiClient, name: str, *, wait: bool = True, timeout: float = 60.0
) -> None:
    """Delete a node, like a cluster autoscaler scaling down (its pods are garbage collected);
    without `wait`, return once the deletion is asked for."""
    core = client.CoreV1Api(api)
    log.info("removing node %s", name)
    if not wait:
        delete_if_present(lambda: core.delete_node(name))
        return
    delete_and_wait(
        lambda: core.delete_node(name),
        lambda: core.read_node(name),
        description=f"node {name}",
        timeout=timeout,
    )


def relabel_node(api: client.ApiClient, name: str, labels: Mapping[str, str | None]) -> None:
    """Set labels on a node; a value of None removes the label."""
    client.CoreV1Api(api).patch_node(name, {"metadata": {"labels": dict(labels)}})
    log.info("relabelled node %s: %s", name, dict(labels))


def set_node_gpus(api: client.ApiClient, name: str, gpu: GpuSpec | None) -> None:
    """Change a node's GPUs: GFD labels and capacity/allocatable nvidia.com/gpu."""
    core = client.CoreV1Api(api)
    node = core.read_node(name)
    current = (node.metadata.labels if node.metadata else None) or {}
    labels: dict[str, str | None] = {k: None for k in current if k.startswith("nvidia.com/")}
    if gpu:
        labels.update(gpu.labels())
    relabel_node(api, name, labels)
    count = str(gpu.allocatable) if gpu else "0"
    body = {"status": {"capacity": {GPU_RESOURCE: count}, "allocatable": {GPU_RESOURCE: count}}}
    core.patch_node_status(name, body)


class FakeNodes:
    """Cached facts about nodes: whether KWOK fakes them, and their InternalIP."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self._core = core
        self._nodes: dict[str, client.V1Node | None] = {}

    def _node(self, name: str) -> client.V1Node | None:
        if name not in self._nodes:
            try:
                self._nodes[name] = self._core.read_node(name)
            except ApiException:
                return None  # not cached: the node may appear later
        return self._nodes[name]

    def is_fake(self, name: str) -> bool:
        node = self._node(name)
        annotations = (node.metadata.annotations if node and node.metadata else None) or {}
        return annotations.get(KWOK_NODE_ANNOTATION) == KWOK_NODE_ANNOTATION_VALUE

    def internal_ip(self, name: str) -> str | None:
        node = self._node(name)
        addresses = (node.status.addresses if node and node.status else None) or []
        return next((a.address for a in addresses if a.type == "InternalIP"), None)


def set_node_ready(api: client.ApiClient, name: str, ready: bool, *, timeout: float = 60.0) -> None:
    """Make a fake node NotReady (a kubelet that stopped reporting) or Ready again.

    KWOK heartbeats every node it manages and turns any Ready condition that is not True back
    to True, so NotReady first takes the node out of KWOK's management (its annotation is
    removed: no more heartbeats or lease renewals, as with a dead kubelet) and then sets the
    Ready condition False. Ready gives the node back to KWOK, which initialises it Ready.
    """
    core = client.CoreV1Api(api)
    if ready:
        core.patch_node(
            name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE}}}
        )
        wait_node_ready(api, name, timeout=timeout)
        return
    core.patch_node(name, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: None}}})
    mark_node_not_ready(api, name, timeout=timeout)


def wait_node_ready(api: client.ApiClient, name: str, *, timeout: float = 60.0) -> None:
    core = client.CoreV1Api(api)
    wait_for(
        functools.partial(_node_ready_by_name, core, name),
        timeout=timeout,
        description=f"node {name} Ready",
    )
    log.info("node %s Ready again", name)


def mark_node_not_ready(api: client.ApiClient, name: str, *, timeout: float = 60.0) -> None:
    """Set the node's Ready condition False, as the node controller does when its kubelet
    stops reporting (whoever heartbeats the node must have stopped first)."""
    core = client.CoreV1Api(api)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletNotReady",
        "message": "the test bed stopped this node's kubelet",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    # A strategic merge patch of conditions merges by type: the other conditions stay.
    core.patch_node_status(name, {"status": {"conditions": [condition]}})
    wait_for(
        lambda: not _node_ready_by_name(core, name),
        timeout=timeout,
        description=f"node {name} NotReady",
    )
    log.info("node %s NotReady", name)
