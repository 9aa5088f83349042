"""GPU pools: the nodes of one GPU product, and how many GPUs the servers may use there."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from lipsync_contract.api import LipSyncModelSpec, Sharing
from lipsync_operator.observed import GpuNode

# nvidia.com/gpu.sharing-strategy values the GPU operator sets for each sharing mode.
STRATEGY_LABELS: dict[Sharing, str] = {"timeSlicing": "time-slicing", "mps": "mps"}


def node_fits_sharing(node: GpuNode, sharing: Sharing, replicas_per_gpu: int) -> bool:
    """Exclusive wants unshared GPUs; timeSlicing/mps want that strategy with >= N slices."""
    if sharing == "exclusive":
        return node.sharing_strategy not in STRATEGY_LABELS.values()
    return (
        node.sharing_strategy == STRATEGY_LABELS[sharing]
        and node.sharing_replicas >= replicas_per_gpu
    )


def pods_per_gpu(spec: LipSyncModelSpec) -> int:
    """Exclusive: one pod per GPU running N instances. Shared: N pods per GPU, one instance each."""
    return 1 if spec.sharing == "exclusive" else spec.replicas_per_gpu


def instances_per_pod(spec: LipSyncModelSpec) -> int:
    return spec.replicas_per_gpu if spec.sharing == "exclusive" else 1


@dataclass(frozen=True)
class GpuPool:
    """The schedulable nodes of one product, split by whether they fit the sharing mode."""

    product: str
    nodes: tuple[GpuNode, ...]
    unfit: tuple[GpuNode, ...]
    # An autoscaled product with no node left keeps the compute capability its engine was
    # built for, so its Deployment stays (at zero) and its pods bring nodes back.
    remembered_capability: str = ""
    # Nodes a node autoscaler added for the product whose GPUs have not registered yet (a
    # kubelet reports extended resources only once the device plugin has): not in `nodes`.
    arriving: int = 0

    @property
    def present(self) -> bool:
        return bool(self.nodes or self.unfit)

    @property
    def compute_capability(self) -> str:
        known = sorted(n.compute_capability for n in (*self.nodes, *self.unfit))
        return next((cc for cc in known if cc), self.remembered_capability)

    @property
    def gpus(self) -> int:
        """Physical GPUs the servers may use (on nodes that fit the sharing mode)."""
        return sum(node.gpus for node in self.nodes)

    @property
    def autoscaled_gpus(self) -> int:
        """Of ``gpus``, those on nodes a node autoscaler added."""
        return sum(node.gpus for node in self.nodes if node.autoscaled)

    @property
    def schedulable(self) -> bool:
        """A new pod (a build Job) can land on one of its nodes."""
        return any(node.schedulable for node in (*self.nodes, *self.unfit))

    @property
    def product_labels(self) -> list[str]:
        """Values of nvidia.com/gpu.product that select this product (plain and -SHARED)."""
        return sorted({self.product, f"{self.product}-SHARED"})


def gpu_pools(
    spec: LipSyncModelSpec,
    nodes: Iterable[GpuNode],
    *,
    now: datetime,
    grace: timedelta,
    remembered: Mapping[str, str] | None = None,
) -> list[GpuPool]:
    """One pool per target product, sorted by product.

    A node belongs while its GPUs count (``GpuNode.counts``): Ready or cordoned, or NotReady for
    less than ``grace``; a deleted node, or one NotReady for longer, leaves its pool.
    Targets are the spec's products, or every product present when it lists none.
    A listed product with no node gets an empty pool (reported, not built: no node to build on).
    ``remembered``: products (with their compute capability) that keep their pool with no node.
    """
    remembered = remembered or {}
    nodes = list(nodes)
    counted = [node for node in nodes if node.gpus > 0 and node.counts(now, grace)]
    arriving = Counter(node.product for node in nodes if _arriving(node, now, grace))
    present = {node.product for node in counted}
    targets = set(spec.gpus.products) if spec.gpus.products else present | set(remembered)
    pools = []
    for product in sorted(targets):
        members = sorted((n for n in counted if n.product == product), key=lambda n: n.name)
        fits = [n for n in members if node_fits_sharing(n, spec.sharing, spec.replicas_per_gpu)]
        unfit = [n for n in members if n not in fits]
        pools.append(
            GpuPool(
                product,
                tuple(fits),
                tuple(unfit),
                remembered.get(product, ""),
                arriving=arriving[product],
            )
        )
    return pools


def _arriving(node: GpuNode, now: datetime, grace: timedelta) -> bool:
    """A node autoscaler's node whose GPUs have not registered yet; not one NotReady past
    ``grace`` (a dead node must not hold a product's claim back for good)."""
    dead = node.not_ready_since is not None and now - node.not_ready_since >= grace
    return node.autoscaled and node.gpus == 0 and not dead
