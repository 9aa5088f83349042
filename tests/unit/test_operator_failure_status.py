"""Child names, specs the API server would refuse, refused children on status, marks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from kubernetes.client.exceptions import ApiException

from lipsync_contract.api import Condition, LipSyncModelSpec, LipSyncModelStatus
from lipsync_operator import naming
from lipsync_operator.applied import RecentApplies
from lipsync_operator.kube import api_message
from lipsync_operator.marks import Marks, NodeFacts, node_facts, products_touched
from lipsync_operator.observed import GpuNode
from lipsync_operator.reconcile import ChildFailure, failures_message, retry_delay
from lipsync_operator.status import CHILD_FAILED, child_failure_status, once_per_message
from lipsync_operator.validation import spec_problem

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 0, 5, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"


def spec(**changes: object) -> LipSyncModelSpec:
    base = {
        "model": {"uri": "https://m.example/m/unet.onnx"},
        "avatar": {"uri": "pvc://avatars/anna"},
    }
    return LipSyncModelSpec.model_validate({**base, **changes})


# -- names --------------------------------------------------------------------------------------


def test_distinct_model_names_never_share_child_names() -> None:
    dotted, dashed = "anna.v2", "anna-v2"
    for name_of in (
        naming.service_name,
        lambda m: naming.deployment_name(m, H100),
        lambda m: naming.job_name(m, "abc123"),
    ):
        assert name_of(dotted) != name_of(dashed)
    assert naming.service_name(dashed) == "anna-v2"  # valid names keep their children's names
    assert naming.service_name(dotted).startswith("anna-v2-")


def test_child_names_are_dns_labels_for_any_valid_model_name() -> None:
    long_dotted = "a" + ".b" * 100  # a valid 201-character DNS-1123 subdomain
    for model in ("anna", "anna.v2", "Anna", long_dotted):
        for name in (naming.service_name(model), naming.deployment_name(model, H100)):
            assert len(name) <= naming.MAX_NAME
            assert naming.name_problem(name) is None
            assert name == naming.model_base(name)  # already a DNS-1035 label


def test_a_name_that_cannot_name_a_service_is_a_spec_problem() -> None:
    problem = spec_problem("1anna", spec())
    assert problem is not None
    assert "'1anna'" in problem
    assert "must start with a letter" in problem
    assert spec_problem("anna.v2", spec()) is None


def test_a_target_fps_that_renders_as_a_zero_quantity_is_a_spec_problem() -> None:
    tiny = spec(autoscaling={"enabled": True, "targetFps": 0.0004})
    problem = spec_problem("anna", tiny)
    assert problem is not None
    assert problem.startswith("spec.autoscaling.targetFps: 0.0004")
    assert spec_problem("anna", spec(autoscaling={"enabled": True, "targetFps": 0.001})) is None
    assert spec_problem("anna", spec(autoscaling={"enabled": False, "targetFps": 0.0004})) is None
    per_product = spec(autoscaling={"enabled": True, "productTargetFps": {"NVIDIA-L4": 0.0002}})
    problem = spec_problem("anna", per_product)
    assert problem is not None
    assert problem.startswith("spec.autoscaling.productTargetFps[NVIDIA-L4]: 0.0002")


# -- refused children -----------------------------------------------------------------------


def _status(phase: str, ready: int) -> LipSyncModelStatus:
    degraded = Condition(type="Degraded", status="False", reason="AsExpected", message="",
                         last_transition_time=NOW, observed_generation=3)  # fmt: skip
    return LipSyncModelStatus(observed_generation=3, phase=phase, conditions=[degraded],
                              replicas=2, ready_replicas=ready)  # fmt: skip


def test_a_refused_child_replaces_the_phase_it_would_have_hidden() -> None:
    message = 'apply Service anna: 403 services "anna" is forbidden: exceeded quota'
    failed = child_failure_status(_status("Ready", 0), message, None, LATER)
    assert failed.phase == "Failed"
    degraded = failed.condition("Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason, degraded.message) == ("True", CHILD_FAILED, message)
    assert degraded.last_transition_time == LATER
    # Pods still serve: Degraded, not Failed.
    assert child_failure_status(_status("Ready", 2), message, None, LATER).phase == "Degraded"


def test_a_refusal_is_one_event_per_distinct_message() -> None:
    first = child_failure_status(_status("Ready", 0), "quota", None, NOW)
    assert [e.reason for e in once_per_message(None, CHILD_FAILED, "quota")] == [CHILD_FAILED]
    assert once_per_message(first, CHILD_FAILED, "quota") == []
    [event] = once_per_message(first, CHILD_FAILED, "quota changed")
    assert (event.type, event.message) == ("Warning", "quota changed")


def test_refused_children_are_named_with_the_api_servers_message() -> None:
    body = '{"kind":"Status","message":"Service \\"1anna\\" is invalid: metadata.name: bad"}'
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = body
    assert api_message(exc) == 'Service "1anna" is invalid: metadata.name: bad'
    assert api_message(ApiException(status=503, reason="Service Unavailable")) == (
        "Service Unavailable"
    )
    failures = [
        ChildFailure("apply", "Service", "anna", 403, "forbidden"),
        ChildFailure("delete", "Job", "anna-build-1", 500, "etcd"),
    ]
    assert failures_message(failures) == (
        "apply Service anna: 403 forbidden; delete Job anna-build-1: 500 etcd"
    )


def test_retries_back_off_doubling_to_a_cap() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert retry_delay(20) == 300.0


# -- marks ------------------------------------------------------------------------------------


def _facts(product: str = H100, *, ready: bool = True) -> NodeFacts:
    node = GpuNode(name="n", product=product, product_label=product, gpus=8,
                   compute_capability="9.0", memory_mib=81559, allocatable=8,
                   sharing_strategy="none", sharing_replicas=1)  # fmt: skip
    facts = node_facts(node)
    assert facts is not None
    return replace(facts, ready=ready)


def test_node_changes_touch_the_products_on_both_sides() -> None:
    assert products_touched(_facts(), _facts()) == frozenset()  # a heartbeat
    assert products_touched(None, _facts()) == {H100}  # joined
    assert products_touched(_facts(), None) == {H100}  # left, or lost its GPU labels
    assert products_touched(_facts(), _facts(ready=False)) == {H100}
    assert products_touched(_facts(), _facts("NVIDIA-L4")) == {H100, "NVIDIA-L4"}
    assert products_touched(None, None) == frozenset()
    assert node_facts(None) is None


def test_many_marks_before_a_wait_wake_it_once() -> None:
    async def scenario() -> list[bool]:
        marks = Marks()
        for _ in range(1000):
            marks.mark("uid-1")
        woke = [await marks.wait("uid-1", 1.0)]
        marks.clear("uid-1")
        woke.append(await marks.wait("uid-1", 0.05))  # nothing new: times out
        waiter = asyncio.ensure_future(marks.wait("uid-1", 5.0))
        await asyncio.sleep(0)
        marks.mark("uid-1")
        woke.append(await waiter)
        marks.forget("uid-1")
        woke.append(marks.marked("uid-1"))
        return woke

    assert asyncio.run(scenario()) == [True, False, True, False]


# -- applies not repeated -------------------------------------------------------------------


def test_an_unchanged_child_applied_a_moment_ago_is_not_applied_again() -> None:
    now = [0.0]
    recent = RecentApplies(ttl=60.0, clock=lambda: now[0])
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "anna", "namespace": "ns"}, "spec": {"ports": [1]}}  # fmt: skip
    assert not recent.fresh(service)
    recent.record(service)
    assert recent.fresh(service)
    assert not recent.fresh({**service, "spec": {"ports": [2]}})  # changed: applied
    now[0] = 61.0
    assert not recent.fresh(service)  # past the bound: applied again, taking back others' edits
    recent.record(service)
    recent.forget("ns", "Service", "anna")
    assert not recent.fresh(service)
