"""How many server pods a product gets, and how they roll, given the GPUs free for this model.

The policy (docs/operator.md, "Capacity"):
- A product's servers never ask for more GPU units than its nodes have beyond what other
  workloads hold, so no server pod waits Pending for a GPU that does not exist (and a node
  autoscaler is not fed pods that the operator itself would then fill).
- A spare unit means today's surge rollout: one new pod is Ready before an old one goes.
- No spare unit (every GPU of the product in use): a build Job borrows one unit from the
  product's own servers while it runs, and the rollout then replaces one GPU's worth of pods at
  a time (maxSurge 0), never more than the PodDisruptionBudget allows (a quarter, rounded up).
- A product served by a single pod lends that pod too (it is down while its new engine builds;
  the model's other products keep serving): a build that waits for a GPU nobody frees never ends.
- Without an autoscaler, nodes a node autoscaler added count only up to the GPUs the product
  held there at its first rollout: a node added for a Pending pod empties again and goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from lipsync_operator.observed import GpuNode
from lipsync_operator.pools import GpuPool

# The PodDisruptionBudget's maxUnavailable (manifests/service.py), as a fraction.
DISRUPTION_FRACTION = 0.25


@dataclass(frozen=True)
class Capacity:
    """GPU units of a pool's nodes, and how many of them other pods hold."""

    units: int
    used_by_others: int

    @property
    def available(self) -> int:
        """Units this model's servers and builds may use."""
        return max(0, self.units - self.used_by_others)


def wanted_servers(
    pool: GpuPool,
    pods_per_gpu: int,
    serving: Mapping[str, int],
    autoscaled_gpus: int | None = None,
) -> int:
    """Server pods a product wants: ``pods_per_gpu`` per GPU, except on cordoned nodes, which
    keep only the pods still running there (a drain then completes: each evicted pod's place
    is given up instead of waiting Pending for a GPU the cordon withholds).

    ``autoscaled_gpus``: without an autoscaler, the GPUs of node-autoscaled nodes the product
    holds (``claimed_autoscaled_gpus``); those nodes add no more than that. A node a node
    autoscaler added for a Pending pod (a build, a surge pod, another model's server) is
    not filled, so it empties and the node autoscaler removes it again.
    """

    def on(node: GpuNode) -> int:
        per_gpu = pods_per_gpu * node.gpus
        return min(per_gpu, serving.get(node.name, 0)) if node.cordoned else per_gpu

    fixed = sum(on(node) for node in pool.nodes if not node.autoscaled)
    grown = sum(on(node) for node in pool.nodes if node.autoscaled)
    if autoscaled_gpus is not None:
        grown = min(grown, pods_per_gpu * autoscaled_gpus)
    return fixed + grown


def claimed_autoscaled_gpus(pool: GpuPool, recorded: int | None) -> int | None:
    """GPUs on node-autoscaled nodes a product without an autoscaler serves on: those present
    at its first rollout (``recorded`` is None), then never more than recorded, and fewer once
    such nodes are gone (a node lost is given up, as without a node autoscaler).

    None (nothing claimed yet, no limit) while such a node of the product is still arriving:
    its GPUs are not registered yet, and a claim made now would leave them out for good."""
    present = pool.autoscaled_gpus
    if recorded is None:
        return None if pool.arriving else present
    return min(recorded, present)


def pool_capacity(
    pool: GpuPool, used_by_others: Mapping[str, int], serving: Mapping[str, int]
) -> Capacity:
    """Units of the pool's nodes; a cordoned node offers only what its pods already hold."""
    units = 0
    for node in pool.nodes:
        held = serving.get(node.name, 0) + used_by_others.get(node.name, 0)
        units += min(node.allocatable, held) if node.cordoned else node.allocatable
    return Capacity(
        units=units, used_by_others=sum(used_by_others.get(n.name, 0) for n in pool.nodes)
    )


@dataclass(frozen=True)
class RolloutPlan:
    """Replicas and rolling-update bounds of one product's Deployment."""

    replicas: int
    max_surge: int
    max_unavailable: int
    lent_to_build: int  # units the servers give up while a build Job runs

    @property
    def strategy(self) -> dict[str, object]:
        return {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable},
        }


def disruption_allowance(replicas: int) -> int:
    """Pods the PodDisruptionBudget lets go at once (25%, rounded up as the API does)."""
    return max(1, math.ceil(DISRUPTION_FRACTION * replicas))


def plan_rollout(
    wanted: int,
    capacity: Capacity,
    *,
    building: bool,
    pods_per_gpu: int,
    fixed_replicas: int | None = None,
) -> RolloutPlan:
    """Replicas and bounds for ``wanted`` servers (replicasPerGPU x GPUs), one unit per pod.

    ``building``: a build Job for this product is running or about to start while servers
    serve. ``fixed_replicas``: an autoscaler owns the count; only the bounds are planned.
    """
    if fixed_replicas is not None:
        replicas, lent = fixed_replicas, 0
    else:
        fits = min(wanted, capacity.available)
        no_room_for_build = capacity.available < fits + 1
        lent = 1 if building and no_room_for_build and fits >= 1 else 0
        replicas = fits - lent
    spare = capacity.available - replicas - (1 if building else 0)
    if spare >= 1:
        return RolloutPlan(replicas, max_surge=1, max_unavailable=0, lent_to_build=lent)
    step = min(max(1, pods_per_gpu), disruption_allowance(replicas))
    return RolloutPlan(replicas, max_surge=0, max_unavailable=step, lent_to_build=lent)
