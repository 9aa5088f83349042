"""GPU instance types the test bed's Karpenter can launch, and the NodePools that offer them.

A cloud's catalogue in miniature: each `GpuInstanceType` is a machine shape (CPUs, memory,
N GPUs of one product) with an on-demand price. From the catalogue come the three things the
autoscaling components need, all pure data:

- `karpenter_instance_types(types)`: the instance-types file of Karpenter's KWOK provider
  (`--instance-types-file-path`), each with its `nvidia.com/gpu` capacity;
- `node_pools(types)`: one Karpenter NodePool per GPU product. Its requirements declare the
  product label (`nvidia.com/gpu.product In [<product>]`), which Karpenter copies onto the nodes
  it launches, so a pod with node affinity on that label can make Karpenter provision; and they
  restrict the instance types to those of that product (Karpenter knows nothing of the label
  otherwise and would offer any GPU machine);
- `gfd_labels(instance_type)`: the labels GPU Feature Discovery writes on such a node once it
  runs (`nvidia.com/gpu.count`, `.memory`, `.compute.major/minor`, `.family`, ...), which the
  operator reads (lipsync_operator.observed).

Prices are illustrative hourly on-demand figures: they only order the choices Karpenter makes
(the cheapest shape that fits the pending pods).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lipsync_testbed.nodes import GPU_PRODUCT_LABEL, GPU_RESOURCE, GpuSpec

KWOK_NODE_CLASS = "default"
KWOK_NODE_CLASS_GROUP = "karpenter.kwok.sh"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
ZONE_LABEL = "topology.kubernetes.io/zone"
ZONE = "test-zone-a"
# Empty or underused nodes go after this long; seconds keep the tests short (Karpenter's own
# default is 0s, most clusters use minutes).
DEFAULT_CONSOLIDATE_AFTER = "5s"


@dataclass(frozen=True)
class GpuInstanceType:
    """A machine shape of the catalogue: its GPUs and the rest of the machine."""

    name: str
    gpu: GpuSpec
    cpu: int
    memory_gib: int
    price: float  # per hour, on demand

    @property
    def product(self) -> str:
        return self.gpu.product


_H100 = ("NVIDIA-H100-80GB-HBM3", 81559, 9, 0, "hopper")
_L4 = ("NVIDIA-L4", 23034, 8, 9, "ada-lovelace")


def _gpus(spec: tuple[str, int, int, int, str], count: int) -> GpuSpec:
    product, memory_mib, major, minor, family = spec
    return GpuSpec(product, count, memory_mib, major, minor, family)


DEFAULT_INSTANCE_TYPES: tuple[GpuInstanceType, ...] = (
    GpuInstanceType("h100-80gb-x1", _gpus(_H100, 1), cpu=24, memory_gib=256, price=12.5),
    GpuInstanceType("h100-80gb-x8", _gpus(_H100, 8), cpu=192, memory_gib=2048, price=98.3),
    GpuInstanceType("l4-24gb-x1", _gpus(_L4, 1), cpu=8, memory_gib=32, price=0.98),
    GpuInstanceType("l4-24gb-x4", _gpus(_L4, 4), cpu=48, memory_gib=192, price=4.6),
)


def karpenter_instance_types(types: Sequence[GpuInstanceType]) -> list[dict[str, Any]]:
    """The KWOK provider's instance-types JSON (the format of its embedded default file)."""
    return [
        {
            "name": it.name,
            "offerings": [
                {
                    "Price": it.price,
                    "Available": True,
                    "Requirements": [
                        {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["on-demand"]},
                        {"key": ZONE_LABEL, "operator": "In", "values": [ZONE]},
                    ],
                }
            ],
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": {
                "cpu": str(it.cpu),
                "memory": f"{it.memory_gib}Gi",
                "pods": "110",
                GPU_RESOURCE: str(it.gpu.allocatable),
            },
        }
        for it in types
    ]


# A startup taint of every pool's nodes, removed once the node's machine has booted and its GPUs
# are registered (as GPU nodes keep one until their driver and device plugin are ready): no pod
# is bound to a node before its kubelet can admit it.
BOOTING_TAINT = {"key": "testbed.lipsync.dev/booting", "effect": "NoSchedule"}


def node_pool_name(product: str) -> str:
    """The NodePool of a GPU product: `NVIDIA-L4` -> `gpu-nvidia-l4`."""
    return "gpu-" + re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")


def products(types: Sequence[GpuInstanceType]) -> list[str]:
    return sorted({it.product for it in types})


def node_pool(
    product: str,
    types: Sequence[GpuInstanceType],
    *,
    consolidate_after: str = DEFAULT_CONSOLIDATE_AFTER,
    gpu_limit: int | None = None,
) -> dict[str, Any]:
    """The NodePool offering `product`: its instance types, the product label declared."""
    names = sorted(it.name for it in types if it.product == product)
    if not names:
        raise ValueError(f"no instance type of the catalogue has GPU product {product!r}")
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "nodeClassRef": {
                    "group": KWOK_NODE_CLASS_GROUP,
                    "kind": "KWOKNodeClass",
                    "name": KWOK_NODE_CLASS,
                },
                "requirements": [
                    {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [product]},
                    {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": names},
                    {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["on-demand"]},
                ],
                "startupTaints": [BOOTING_TAINT],
                "expireAfter": "Never",
            }
        },
        "disruption": {
            "consolidationPolicy": "WhenEmptyOrUnderutilized",
            "consolidateAfter": consolidate_after,
        },
    }
    if gpu_limit is not None:
        spec["limits"] = {GPU_RESOURCE: str(gpu_limit)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": node_pool_name(product)},
        "spec": spec,
    }


def node_pools(
    types: Sequence[GpuInstanceType], *, consolidate_after: str = DEFAULT_CONSOLIDATE_AFTER
) -> list[dict[str, Any]]:
    """One NodePool per GPU product of the catalogue."""
    return [node_pool(p, types, consolidate_after=consolidate_after) for p in products(types)]


def kwok_node_class() -> dict[str, Any]:
    """The KWOKNodeClass the NodePools refer to (nodes register at once)."""
    return {
        "apiVersion": f"{KWOK_NODE_CLASS_GROUP}/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": KWOK_NODE_CLASS},
        "spec": {},
    }


def instance_type_named(
    types: Sequence[GpuInstanceType], name: str | None
) -> GpuInstanceType | None:
    return next((it for it in types if it.name == name), None)


def gfd_labels(instance_type: GpuInstanceType) -> dict[str, str]:
    """What GPU Feature Discovery labels a node of this shape with."""
    return instance_type.gpu.labels()
