"""Pods that cannot start: read off the pod's status, indexed per model, on the model's status as
the PodsHealthy condition with the kubelet's or scheduler's reason, and one Warning per cause."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from lipsync_contract.api import Condition, LipSyncModelSpec
from lipsync_operator.clusterview import ClusterView, ModelRef, pod_problem_entry
from lipsync_operator.config import OperatorConfig
from lipsync_operator.desired import DesiredState, desired_state
from lipsync_operator.manifests.common import Owner
from lipsync_operator.observed import Observed
from lipsync_operator.podhealth import PodProblem, pod_problem, summary
from lipsync_operator.status import EventNote, transition_events

pytestmark = pytest.mark.unit

PULL_MESSAGE = 'failed to pull image "localhost:1/absent:1": connection refused'
NO_CLAIM = '0/2 nodes are available: persistentvolumeclaim "no-such-claim" not found.'


def pod(
    name: str = "anna-l4-7d9f-x2x",
    *,
    containers: Sequence[Mapping[str, Any]] = (),
    init: Sequence[Mapping[str, Any]] = (),
    conditions: Sequence[Mapping[str, Any]] = (),
    phase: str = "Pending",
    labels: Mapping[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "labels": {"lipsync.dev/model": "anna"} if labels is None else dict(labels),
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    status = {
        "phase": phase,
        "containerStatuses": list(containers),
        "initContainerStatuses": list(init),
        "conditions": list(conditions),
    }
    return {"metadata": meta, "status": status}


def waiting(reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return {"name": "server", "state": state, **extra}


UNSCHEDULABLE = {
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": NO_CLAIM,
}  # fmt: skip


def test_the_kubelets_failures_are_problems_with_its_reason_and_message() -> None:
    pulling = pod_problem(pod(containers=[waiting("ImagePullBackOff", PULL_MESSAGE)]))
    assert pulling == PodProblem(
        "anna-l4-7d9f-x2x", "ImagePullBackOff", f"container server; {PULL_MESSAGE}"
    )
    crashed = waiting(
        "CrashLoopBackOff",
        "back-off 20s restarting failed container",
        lastState={"terminated": {"exitCode": 2, "reason": "Error"}},
    )
    problem = pod_problem(pod(containers=[crashed], phase="Running"))
    assert problem is not None
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message == (
        "container server; back-off 20s restarting failed container; last exit code 2 (Error)"
    )
    config = pod_problem(pod(init=[{**waiting("CreateContainerConfigError"), "name": "fetch"}]))
    assert config == PodProblem("anna-l4-7d9f-x2x", "CreateContainerConfigError", "container fetch")


def test_a_crash_loop_carries_the_containers_last_words() -> None:
    last_words = "loading...\nerror: model artifact /engine/e.plan has sha256 0f..., not 9a...\n"
    crashed = waiting(
        "CrashLoopBackOff",
        "back-off 10s",
        lastState={"terminated": {"exitCode": 2, "reason": "Error", "message": last_words}},
    )
    problem = pod_problem(pod(containers=[crashed], phase="Running"))
    assert problem is not None
    assert problem.message.endswith(
        "last exit code 2 (Error): error: model artifact /engine/e.plan has sha256 0f..., not 9a..."
    )


def test_the_schedulers_unschedulable_is_a_problem_with_its_message() -> None:
    assert pod_problem(pod(conditions=[UNSCHEDULABLE])) == PodProblem(
        "anna-l4-7d9f-x2x", "Unschedulable", NO_CLAIM
    )


@pytest.mark.parametrize(
    "healthy",
    [
        pod(containers=[waiting("ContainerCreating")]),
        pod(containers=[{"name": "server", "state": {"running": {}}}], phase="Running"),
        pod(containers=[waiting("ImagePullBackOff")], deleting=True),
        pod(containers=[waiting("CrashLoopBackOff")], phase="Succeeded"),
        pod(conditions=[{"type": "PodScheduled", "status": "True"}]),
    ],
    ids=["creating", "running", "deleting", "finished", "scheduled"],
)
def test_pods_that_start_run_or_went_away_are_no_problem(healthy: dict[str, Any]) -> None:
    assert pod_problem(healthy) is None


def test_problems_are_indexed_by_namespace_and_model_and_read_by_that_model_only() -> None:
    broken = pod(conditions=[UNSCHEDULABLE])
    other = pod("olga-l4-1", conditions=[UNSCHEDULABLE], labels={"lipsync.dev/model": "olga"})
    assert pod_problem_entry(pod(labels={}, conditions=[UNSCHEDULABLE])) is None
    assert pod_problem_entry(pod()) is None
    view = ClusterView(
        pod_problems={
            key: [value]
            for obj in (broken, other)
            for key, value in (pod_problem_entry(obj) or {}).items()
        },
        models={"NVIDIA-L4": [ModelRef("default", "anna", "uid-1")]},
    )
    [problem] = view.observed("default", "anna", "uid-1").pod_problems
    assert problem.pod == "anna-l4-7d9f-x2x"
    assert view.observed("other", "anna", "uid-2").pod_problems == ()
    assert view.models_labelled("default", "anna") == {ModelRef("default", "anna", "uid-1")}
    assert view.models_labelled("other", "anna") == set()


def test_the_condition_names_the_kubelets_failure_first_and_counts_past_three() -> None:
    problems = [PodProblem(f"p{i}", "Unschedulable", "no node") for i in range(4)]
    problems.append(PodProblem("z", "ErrImagePull", "refused"))
    reason, message = summary(problems)
    assert reason == "ErrImagePull"
    assert message == (
        "pod z: ErrImagePull: refused; pod p0: Unschedulable: no node; "
        "pod p1: Unschedulable: no node; and 2 more pods"
    )


def _pod_warnings(events: Sequence[EventNote]) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in events if e.type == "Warning"]


def _pods_healthy(state: DesiredState) -> Condition:
    found = state.status.condition("PodsHealthy")
    assert found is not None
    return found


def test_status_says_why_pods_cannot_start_with_one_warning_per_cause() -> None:
    model = LipSyncModelSpec.model_validate(
        {
            "model": {"uri": "https://m.example/m/unet.onnx"},
            "avatar": {"uri": "pvc://no-such-claim/anna"},
        }
    )
    owner = Owner(name="anna", namespace="default", uid="uid-1", generation=1)
    now = datetime(2025, 1, 1, tzinfo=UTC)

    def step(previous: DesiredState | None, *problems: PodProblem) -> DesiredState:
        return desired_state(
            owner, model, Observed(pod_problems=problems), OperatorConfig(),
            previous=previous.status if previous else None, now=now,
        )  # fmt: skip

    healthy = step(None)
    assert _pods_healthy(healthy).status == "True"
    pulling = step(healthy, PodProblem("anna-a", "ErrImagePull", "refused"))
    condition = _pods_healthy(pulling)
    assert (condition.status, condition.reason) == ("False", "ErrImagePull")
    assert condition.message == "pod anna-a: ErrImagePull: refused"
    assert pulling.status.phase == healthy.status.phase  # the condition says it; phase as before
    assert _pod_warnings(pulling.events) == [("ErrImagePull", "pod anna-a: ErrImagePull: refused")]
    # The kubelet alternates between the two while it backs off: one cause, one Warning.
    backing_off = step(pulling, PodProblem("anna-a", "ImagePullBackOff", "back-off"))
    assert _pod_warnings(backing_off.events) == []
    crashing = step(backing_off, PodProblem("anna-a", "CrashLoopBackOff", "exit 1"))
    assert [reason for reason, _ in _pod_warnings(crashing.events)] == ["CrashLoopBackOff"]
    recovered = step(crashing)
    assert _pods_healthy(recovered).status == "True"
    assert _pod_warnings(recovered.events) == []
    assert _pod_warnings(transition_events(None, crashing.status)) == [
        ("CrashLoopBackOff", "pod anna-a: CrashLoopBackOff: exit 1")
    ]
