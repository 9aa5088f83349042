"""GPU Feature Discovery for the nodes Karpenter launches in the test bed.

On a real cluster, a node Karpenter launches joins with the labels its NodePool declares
(`nvidia.com/gpu.product`); once the NVIDIA device plugin and GPU Feature Discovery run on it,
the node reports `nvidia.com/gpu` capacity and gets the GFD labels of its GPUs. Here the nodes
are real nodes without GPUs (lipsync_testbed.karpenternodes). `GpuFeatureDiscovery` plays the
part of GFD and the device plugin: it watches nodes carrying `karpenter.sh/nodepool`, looks
their instance type up in the catalogue and writes the labels and GPU capacity that GFD and the
device plugin would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.gpucatalog import (
    INSTANCE_TYPE_LABEL,
    NODEPOOL_LABEL,
    GpuInstanceType,
    gfd_labels,
    instance_type_named,
)
from lipsync_testbed.nodes import GPU_RESOURCE
from lipsync_testbed.waiting import watch_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFix:
    """What a node lacks: labels to set and, if wrong, its GPU capacity."""

    labels: dict[str, str] = field(default_factory=dict)
    gpu_capacity: str | None = None

    def __bool__(self) -> bool:
        return bool(self.labels) or self.gpu_capacity is not None


def node_fix(node: client.V1Node, catalog: Sequence[GpuInstanceType]) -> NodeFix:
    """The GFD labels and GPU capacity a Karpenter node of the catalogue still lacks."""
    labels = (node.metadata.labels if node.metadata else None) or {}
    if NODEPOOL_LABEL not in labels:
        return NodeFix()
    shape = instance_type_named(catalog, labels.get(INSTANCE_TYPE_LABEL))
    if shape is None:
        return NodeFix()
    missing = {k: v for k, v in gfd_labels(shape).items() if labels.get(k) != v}
    capacity = (node.status.capacity if node.status else None) or {}
    want = str(shape.gpu.allocatable)
    return NodeFix(
        labels=missing, gpu_capacity=None if capacity.get(GPU_RESOURCE) == want else want
    )


def apply_fix(core: client.CoreV1Api, name: str, fix: NodeFix) -> None:
    if fix.labels:
        core.patch_node(name, {"metadata": {"labels": fix.labels}})
    if fix.gpu_capacity is not None:
        count = fix.gpu_capacity
        core.patch_node_status(
            name,
            {"status": {"capacity": {GPU_RESOURCE: count}, "allocatable": {GPU_RESOURCE: count}}},
        )


class GpuFeatureDiscovery:
    """Labels Karpenter's nodes as GPU Feature Discovery would, until stopped."""

    def __init__(self, api: client.ApiClient, catalog: Sequence[GpuInstanceType]) -> None:
        self._core = client.CoreV1Api(api)
        self._catalog = tuple(catalog)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpuFeatureDiscovery:
        self._thread = threading.Thread(
            target=self._loop, name="gpu-feature-discovery", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for event in watch_events(
                    self._core.list_node, label_selector=NODEPOOL_LABEL, timeout_seconds=5
                ):
                    if self._stop.is_set():
                        return
                    node: client.V1Node = event["object"]
                    if event["type"] == "DELETED" or node.metadata is None:
                        continue
                    fix = node_fix(node, self._catalog)
                    if fix:
                        apply_fix(self._core, str(node.metadata.name), fix)
                        log.info("labelled node %s: %s", node.metadata.name, fix)
            except ApiException as exc:
                if exc.status != 404:  # a node deleted between event and patch is fine
                    log.warning("gpu feature discovery: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # a dropped watch connection: watch again
                log.warning("gpu feature discovery: watch failed", exc_info=True)
                self._stop.wait(1.0)
