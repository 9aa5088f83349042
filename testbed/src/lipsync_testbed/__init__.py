"""Local Kubernetes test bed: a real control plane with KWOK fake GPU nodes and real nodes
(kubelet + containerd) that run the project's images."""

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.jobs import finish_pod
from lipsync_testbed.nodes import (
    GpuSpec,
    NodeSpec,
    add_node,
    load_node_pool,
    relabel_node,
    remove_node,
    set_node_gpus,
    set_node_ready,
)
from lipsync_testbed.resources import apply_custom_object, create_namespace
from lipsync_testbed.versions import Binaries, ClusterSetupError, Versions
from lipsync_testbed.waiting import WaitTimeoutError, wait_for, watch_events

__all__ = [
    "Binaries",
    "ClusterSetupError",
    "GpuSpec",
    "LocalCluster",
    "NodeSpec",
    "Versions",
    "WaitTimeoutError",
    "add_node",
    "apply_custom_object",
    "create_namespace",
    "finish_pod",
    "load_node_pool",
    "relabel_node",
    "remove_node",
    "set_node_gpus",
    "set_node_ready",
    "wait_for",
    "watch_events",
]
