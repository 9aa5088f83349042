"""plan_rollout: replicas and rolling-update bounds from the GPUs free for one model."""

from __future__ import annotations

import pytest

from lipsync_operator.capacity import Capacity, disruption_allowance, plan_rollout

pytestmark = pytest.mark.unit


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
