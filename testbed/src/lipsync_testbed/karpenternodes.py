"""Real machines for the nodes Karpenter launches: a node that boots and joins.

Karpenter's KWOK provider creates a Node object for each NodeClaim, as a cloud's machine
would bring one up. In the test bed a real node (kubelet + containerd + kube-proxy +
kube-router, lipsync_testbed.realnode) starts for it under that name: its kubelet registers
against the existing Node (keeping Karpenter's labels, provider ID and taints), so the pods
scheduled there run as containers. KWOK does not manage these nodes (the test bed's KWOK
selects its own nodes by `nodes.KWOK_NODE_ANNOTATION`). Once Karpenter has drained a node
and its Node object is gone, the machine is taken away: its processes, containers, network
namespace and cgroups.

GPU Feature Discovery (lipsync_testbed.gfd) labels these nodes and sets their GPU capacity,
as on a real cluster; the machine sets them too, before its node takes pods: Karpenter's
NodePools give their nodes a startup taint (`gpucatalog.BOOTING_TAINT`), which the machine
removes once its kubelet is Ready with the node's GPUs, as a GPU node's device plugin would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.gpucatalog import (
    BOOTING_TAINT,
    INSTANCE_TYPE_LABEL,
    NODEPOOL_LABEL,
    GpuInstanceType,
    instance_type_named,
)
from lipsync_testbed.nodes import NodeSpec
from lipsync_testbed.waiting import wait_for, watch_events

REGISTERED_LABEL = "karpenter.sh/registered"

log = logging.getLogger(__name__)


class NodeHost(Protocol):
    """What starts and stops real nodes (a LocalCluster with real nodes)."""

    def add_real_node(self, spec: NodeSpec) -> object: ...

    def remove_real_node(self, name: str, *, missing_ok: bool = False) -> None: ...


@dataclass(frozen=True)
class Machines:
    """What to do next: boot a machine for these nodes, take these machines away."""

    boot: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()


def machines_to_change(
    nodes: Mapping[str, bool], running: Iterable[str], failed: Iterable[str] = ()
) -> Machines:
    """From Karpenter's nodes (name -> being deleted) and the machines running: boot one for
    each node not being deleted that has none (nor failed to boot); retire each machine whose
    Node object is gone (a node being deleted keeps its machine: its kubelet drains it)."""
    running, failed = set(running), set(failed)
    boot = sorted(n for n, deleting in nodes.items() if not deleting and n not in running | failed)
    retire = sorted(running - set(nodes))
    return Machines(boot=tuple(boot), retire=tuple(retire))


def node_spec(node: client.V1Node, catalog: Sequence[GpuInstanceType]) -> NodeSpec:
    """A Karpenter node as the test bed boots it: its name, the labels it already has and the
    GPUs of its instance type."""
    metadata = node.metadata or client.V1ObjectMeta()
    labels = dict(metadata.labels or {})
    shape = instance_type_named(catalog, labels.get(INSTANCE_TYPE_LABEL))
    return NodeSpec(
        name=str(metadata.name), labels=labels, gpu=shape.gpu if shape is not None else None
    )


def without_booting_taint(taints: Sequence[client.V1Taint]) -> list[dict[str, str | None]]:
    """A node's taints once its machine has booted."""
    return [
        {"key": t.key, "value": t.value, "effect": t.effect}
        for t in taints
        if (t.key, t.effect) != (BOOTING_TAINT["key"], BOOTING_TAINT["effect"])
    ]


class KarpenterMachines:
    """Boots a real node for each node Karpenter launches and retires it once the Node is
    gone, in a thread of the process that owns the test bed, until stopped."""

    def __init__(
        self, api: client.ApiClient, host: NodeHost, catalog: Sequence[GpuInstanceType]
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._host = host
        self._catalog = tuple(catalog)
        self._nodes: dict[str, client.V1Node] = {}
        self._running: set[str] = set()
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KarpenterMachines:
        self._thread = threading.Thread(target=self._loop, name="karpenter-machines", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; the machines stay (the test bed stops them with everything else)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._nodes = {
                    str(n.metadata.name): n
                    for n in self._core.list_node(label_selector=NODEPOOL_LABEL).items
                    if n.metadata is not None
                }
                self._converge()
                for event in watch_events(
                    self._core.list_node, label_selector=NODEPOOL_LABEL, timeout_seconds=5
                ):
                    if self._stop.is_set():
                        return
                    node: client.V1Node = event["object"]
                    name = str(node.metadata.name) if node.metadata else ""
                    if event["type"] == "DELETED":
                        self._nodes.pop(name, None)
                    else:
                        self._nodes[name] = node
                    self._converge()
            except Exception:  # a dropped watch or an API error: list and watch again
                log.warning("karpenter machines: watch failed", exc_info=True)
                self._stop.wait(1.0)

    def _converge(self) -> None:
        deleting = {
            name: node.metadata is not None and node.metadata.deletion_timestamp is not None
            for name, node in self._nodes.items()
        }
        change = machines_to_change(deleting, self._running, self._failed)
        for name in change.retire:
            self._host.remove_real_node(name, missing_ok=True)
            self._running.discard(name)
            log.info("machine of node %s retired", name)
        for name in change.boot:
            if self._stop.is_set():
                return
            self._boot(self._nodes[name])

    def _boot(self, node: client.V1Node) -> None:
        spec = node_spec(node, self._catalog)
        log.info("booting a machine for Karpenter's node %s", spec.name)
        self._running.add(spec.name)
        try:
            self._host.add_real_node(spec)
            self._open_for_pods(spec.name)
        except Exception as exc:  # whatever fails, the node gets no machine
            # As a machine that never joins: Karpenter's registration TTL replaces it.
            log.error("machine of node %s failed to boot: %s", spec.name, exc)
            self._running.discard(spec.name)
            self._failed.add(spec.name)
            self._host.remove_real_node(spec.name, missing_ok=True)

    def _open_for_pods(self, name: str) -> None:
        """Remove the startup taint Karpenter put on the node when it registered it."""

        def opened() -> bool:
            node = self._core.read_node(name)
            metadata, spec = node.metadata, node.spec
            if metadata is None or (metadata.labels or {}).get(REGISTERED_LABEL) != "true":
                return False  # Karpenter adds the startup taint when it registers the node
            taints = (spec.taints if spec else None) or []
            kept = without_booting_taint(taints)
            if len(kept) == len(taints):
                return True
            # A JSON patch replaces the list; its test keeps Karpenter's concurrent edits.
            patch: list[dict[str, Any]] = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": metadata.resource_version,
                },
                {"op": "replace", "path": "/spec/taints", "value": kept},
            ]
            try:
                self._core.patch_node(name, patch)
            except ApiException as exc:
                if exc.status in (409, 422):  # changed since read: read again
                    return False
                raise
            return True

        wait_for(opened, timeout=60, interval=0.5, description=f"node {name} open for pods")
        log.info("machine of node %s booted; node open for pods", name)
