"""plan_rollout and wanted_servers: replicas and rollout bounds from the GPUs free for one model;
the per-pod load targets of autoscaled products."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from lipsync_contract.api import Autoscaling, LipSyncModelSpec
from lipsync_operator.capacity import (
    Capacity,
    claimed_autoscaled_gpus,
    disruption_allowance,
    plan_rollout,
    wanted_servers,
)
from lipsync_operator.observed import GpuNode
from lipsync_operator.pools import GpuPool, gpu_pools
from lipsync_operator.targets import FALLBACK_FPS, streams_per_pod, target_fps

pytestmark = pytest.mark.unit

ANY_PRODUCT = LipSyncModelSpec.model_validate(
    {"model": {"uri": "file:///m.onnx"}, "avatar": {"uri": "file:///a"}}
)


def test_free_gpus_surge_one_pod_and_never_go_below_the_serving_count() -> None:
    plan = plan_rollout(4, Capacity(units=8, used_by_others=0), building=False, pods_per_gpu=1)
    assert (plan.replicas, plan.max_surge, plan.max_unavailable, plan.lent_to_build) == (4, 1, 0, 0)


def test_a_full_product_lends_one_gpu_to_its_build_then_rolls_one_gpu_at_a_time() -> None:
    full = Capacity(units=8, used_by_others=0)
    during = plan_rollout(8, full, building=True, pods_per_gpu=1)
    assert (during.replicas, during.lent_to_build) == (7, 1)
    after = plan_rollout(8, full, building=False, pods_per_gpu=1)
    assert (after.replicas, after.max_surge, after.max_unavailable) == (8, 0, 1)


def test_time_sliced_gpus_move_one_gpus_worth_of_pods_within_the_disruption_budget() -> None:
    full = Capacity(units=48, used_by_others=0)  # 8 GPUs x 6 slices
    plan = plan_rollout(48, full, building=False, pods_per_gpu=6)
    assert (plan.max_surge, plan.max_unavailable) == (0, 6)
    small = plan_rollout(6, Capacity(units=6, used_by_others=0), building=False, pods_per_gpu=6)
    assert small.max_unavailable == disruption_allowance(6) == 2


def test_a_single_serving_pod_is_lent_or_its_build_would_never_run() -> None:
    plan = plan_rollout(1, Capacity(units=1, used_by_others=0), building=True, pods_per_gpu=1)
    assert (plan.replicas, plan.lent_to_build) == (0, 1)
    roomy = plan_rollout(1, Capacity(units=2, used_by_others=0), building=True, pods_per_gpu=1)
    assert (roomy.replicas, roomy.lent_to_build) == (1, 0)


def test_replicas_never_exceed_what_other_workloads_leave() -> None:
    plan = plan_rollout(8, Capacity(units=8, used_by_others=5), building=False, pods_per_gpu=1)
    assert plan.replicas == 3
    none_left = plan_rollout(8, Capacity(units=8, used_by_others=9), building=False, pods_per_gpu=1)
    assert none_left.replicas == 0


def test_an_autoscaled_count_is_kept_and_only_the_bounds_follow_capacity() -> None:
    roomy = plan_rollout(
        8, Capacity(units=8, used_by_others=0), building=False, pods_per_gpu=1, fixed_replicas=3
    )
    assert (roomy.replicas, roomy.max_surge) == (3, 1)
    tight = plan_rollout(
        8, Capacity(units=8, used_by_others=0), building=False, pods_per_gpu=1, fixed_replicas=8
    )
    assert (tight.replicas, tight.max_surge, tight.max_unavailable) == (8, 0, 1)


@pytest.mark.parametrize(("replicas", "allowed"), [(1, 1), (2, 1), (4, 1), (5, 2), (16, 4)])
def test_disruption_allowance_rounds_up_like_the_api_server(replicas: int, allowed: int) -> None:
    assert disruption_allowance(replicas) == allowed


def _pool(*nodes: GpuNode) -> GpuPool:
    return GpuPool(product="P", nodes=nodes, unfit=())


def _node(name: str, gpus: int, *, autoscaled: bool) -> GpuNode:
    return GpuNode(
        name=name,
        product="P",
        product_label="P",
        gpus=gpus,
        compute_capability="9.0",
        memory_mib=0,
        allocatable=gpus,
        sharing_strategy="none",
        sharing_replicas=1,
        autoscaled=autoscaled,
    )


def test_node_autoscaled_gpus_add_no_more_than_the_product_claimed() -> None:
    pool = _pool(
        _node("fixed", 2, autoscaled=False), *(_node(n, 1, autoscaled=True) for n in "abc")
    )
    assert pool.autoscaled_gpus == 3
    assert claimed_autoscaled_gpus(pool, None) == 3  # first rollout: the GPUs present
    assert claimed_autoscaled_gpus(pool, 2) == 2
    assert claimed_autoscaled_gpus(pool, 5) == 3  # nodes gone: given up
    assert wanted_servers(pool, 6, {}, 2) == 6 * 2 + 6 * 2
    assert wanted_servers(pool, 6, {}) == 6 * 5  # no claim (autoscaled): every GPU counts


def test_a_first_rollout_claims_nothing_while_an_autoscaled_node_still_registers_its_gpus() -> None:
    """A kubelet registers a node before its device plugin reports the GPUs (and resets them
    when it adopts a Node a node autoscaler created): claiming then would claim none."""
    joining = _node("b", 0, autoscaled=True)
    pools = gpu_pools(
        ANY_PRODUCT,
        [_node("a", 1, autoscaled=True), joining, _node("fixed", 1, autoscaled=False)],
        now=datetime.now(UTC),
        grace=timedelta(seconds=60),
    )
    [pool] = pools
    assert ([n.name for n in pool.nodes], pool.arriving) == (["a", "fixed"], 1)
    assert claimed_autoscaled_gpus(pool, None) is None  # decided once b's GPUs are known
    assert wanted_servers(pool, 1, {}, None) == 2
    assert claimed_autoscaled_gpus(pool, 1) == 1  # a recorded claim stands
    # A node NotReady past the grace period is dead, not arriving: it holds nothing back.
    now = datetime.now(UTC)
    dead = dataclasses.replace(joining, ready=False, not_ready_since=now - timedelta(seconds=600))
    [pool] = gpu_pools(
        ANY_PRODUCT,
        [_node("a", 1, autoscaled=True), dead],
        now=now,
        grace=timedelta(seconds=60),
    )
    assert (pool.arriving, claimed_autoscaled_gpus(pool, None)) == (0, 1)


@pytest.mark.parametrize(
    ("policy", "measured", "pods_per_gpu", "expected"),
    [
        ({"targetFps": 40}, 250.0, 1, 40.0),
        ({"targetFps": 40, "productTargetFps": {"P": 90}}, 250.0, 1, 90.0),
        ({}, 250.0, 1, 200.0),
        ({}, 250.0, 4, 50.0),
        ({}, None, 1, FALLBACK_FPS),
    ],
)
def test_per_pod_frame_targets(
    policy: dict[str, object], measured: float | None, pods_per_gpu: int, expected: float
) -> None:
    assert target_fps(Autoscaling.model_validate(policy), "P", measured, pods_per_gpu) == expected


def test_streams_per_pod_is_at_least_one() -> None:
    assert (streams_per_pod(200.0), streams_per_pod(10.0)) == (8, 1)
