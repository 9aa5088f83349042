"""What the API server, the scheduler and the kubelet refuse shows on the LipSyncModel's status,
and names never collide.

The operator as the chart installs it (image overrides allowed), on real nodes: a model whose
name cannot name a Service, a namespace whose ResourceQuota forbids Services, a model whose
avatar claim does not exist and one whose server image cannot be pulled, and two models whose
names differ only in a dot and a dash, both served side by side.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lipsync_testbed import GpuSpec, LocalCluster, NodeSpec, create_namespace, wait_for
from lipsync_testbed.lsm import (
    apply,
    condition,
    engines,
    items,
    kubectl_json,
    model_selector,
    status,
    wait_phase,
)
from lipsync_testbed.nodebed import REAL_NODE_PRODUCT, added_real_nodes, node_operator_bed
from lipsync_testbed.operatorchart import OperatorBed, small_model

pytestmark = pytest.mark.cluster

T4 = "Tesla-T4"
BUILD_TIMEOUT = 600.0  # two ORT CPU builds side by side on a shared 2-core machine
REPORTED_WITHIN_S = 60.0
ABSENT_IMAGE = "localhost:1/lipsync/absent:1"  # nothing listens there: the pull fails at once
NODE = NodeSpec(
    name="t4-names",
    pool="t4",
    gpu=GpuSpec(product=T4, count=1, memory_mib=15360, compute_major=7, compute_minor=5,
                sharing_strategy="time-slicing", replicas=8),
)  # fmt: skip


def model(name: str, avatar: str) -> dict[str, Any]:
    return small_model(name, avatar, T4, sharing="timeSlicing")


def events_for(bed: OperatorBed, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    found = kubectl_json(
        bed.cluster, "get", "events", "-n", namespace,
        "--field-selector", f"involvedObject.name={name},reason={reason}",
    )  # fmt: skip
    return list(found["items"])


def children(bed: OperatorBed, namespace: str, name: str) -> list[dict[str, Any]]:
    kinds = "services,deployments,jobs,poddisruptionbudgets"
    return items(bed.cluster, kinds, namespace, model_selector(name))


@pytest.fixture(scope="module")
def bed(
    node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, reference_model: Path
) -> Iterator[OperatorBed]:
    """The documented test-bed values, with image overrides allowed."""
    yield from node_operator_bed(
        node_cluster,
        tmp_path_factory.mktemp("bed"),
        reference_model,
        {"images.allowOverrides": "true"},
    )


@pytest.fixture
def quota_namespace(bed: OperatorBed) -> Iterator[str]:
    """A namespace of its own whose ResourceQuota allows no Service at all."""
    core = client.CoreV1Api(bed.api)
    namespace = create_namespace(bed.api, "quota")
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-services"),
        spec=client.V1ResourceQuotaSpec(hard={"services": "0"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)
    yield namespace
    core.delete_namespace(namespace)


def test_a_name_that_cannot_name_a_service_fails_on_status_and_creates_nothing(
    bed: OperatorBed,
) -> None:
    apply(bed.cluster, bed.namespace, model("1anna", "pvc://lipsync-avatars/anna"))
    failed = wait_phase(bed.cluster, bed.namespace, "1anna", "Failed", timeout=60)
    degraded = condition(failed, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "must start with a letter" in degraded["message"]
    printed = bed.cluster.kubectl("get", "lsm", "1anna", "-n", bed.namespace).stdout
    assert "Failed" in printed
    assert children(bed, bed.namespace, "1anna") == []
    [event] = events_for(bed, bed.namespace, "1anna", "InvalidSpec")
    assert event["type"] == "Warning"
    bed.cluster.kubectl("delete", "lsm", "1anna", "-n", bed.namespace)


def test_a_service_the_quota_refuses_is_on_status_within_30_seconds_then_recovers(
    bed: OperatorBed, quota_namespace: str
) -> None:
    namespace = quota_namespace
    apply(bed.cluster, namespace, model("quota-anna", "pvc://lipsync-avatars/anna"))

    def refused() -> dict[str, Any] | None:
        current = status(bed.cluster, namespace, "quota-anna")
        return (
            current if condition(current, "Degraded").get("reason") == "ChildApplyFailed" else None
        )

    found = wait_for(refused, timeout=30, interval=1.0, description="quota refusal on status")
    message = condition(found, "Degraded")["message"]
    assert "apply Service quota-anna: 403" in message
    assert "exceeded quota: no-services" in message  # the API server's own words
    assert found["phase"] == "Failed"  # nothing serves; never the phase the refusal hid
    assert "Failed" in bed.cluster.kubectl("get", "lsm", "quota-anna", "-n", namespace).stdout
    # Retries (after 5 s, then 10 s more) post no second event for the same message.
    time.sleep(20)
    [event] = events_for(bed, namespace, "quota-anna", "ChildApplyFailed")
    assert (event["type"], event["message"]) == ("Warning", message)
    assert condition(status(bed.cluster, namespace, "quota-anna"), "Degraded")["message"] == (
        message
    )

    client.CoreV1Api(bed.api).delete_namespaced_resource_quota("no-services", namespace)
    # No GPU node has the product: once the Service is created the model waits for one.
    pending = wait_phase(bed.cluster, namespace, "quota-anna", "Pending", timeout=120)
    assert condition(pending, "Degraded").get("reason") != "ChildApplyFailed"
    services = items(bed.cluster, "services", namespace, model_selector("quota-anna"))
    assert [s["metadata"]["name"] for s in services] == ["quota-anna"]


def test_models_named_with_a_dot_and_a_dash_are_both_ready_on_children_of_their_own(
    bed: OperatorBed,
) -> None:
    namespace = bed.namespace
    avatar = bed.avatar("anna")
    with added_real_nodes(bed.cluster, NODE):
        try:
            for name in ("anna.v2", "anna-v2"):
                apply(bed.cluster, namespace, model(name, avatar))
            ready = {
                name: wait_phase(bed.cluster, namespace, name, "Ready", timeout=BUILD_TIMEOUT)
                for name in ("anna.v2", "anna-v2")
            }
            for name in ready:
                assert engines(ready[name])[T4]["state"] == "Ready"
            owned = {name: children(bed, namespace, name) for name in ready}
            names = {name: {c["metadata"]["name"] for c in owned[name]} for name in ready}
            assert names["anna.v2"].isdisjoint(names["anna-v2"])
            assert "anna-v2" in names["anna-v2"]  # a DNS-1035 name keeps its Service name
            for name, objects in owned.items():
                uid = bed.model(name)["metadata"]["uid"]
                for obj in objects:
                    assert [ref["uid"] for ref in obj["metadata"]["ownerReferences"]] == [uid]
            endpoints = {ready[name]["endpoint"] for name in ready}
            assert len(endpoints) == 2
        finally:
            for name in ("anna.v2", "anna-v2"):
                bed.cluster.kubectl("delete", "lsm", name, "-n", namespace, "--wait=false")


def _delete_model(bed: OperatorBed, namespace: str, name: str) -> None:
    """Delete the model and wait for its pods to go (they hold the node's GPUs)."""
    bed.cluster.kubectl("delete", "lsm", name, "-n", namespace)
    wait_for(
        lambda: not items(bed.cluster, "pods", namespace, model_selector(name)),
        timeout=120,
        description=f"{name}'s pods gone",
    )


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


@dataclass(frozen=True)
class Unstartable:
    """A model whose server pod cannot start, and what its status must say."""

    name: str
    avatar: str  # "" for the bed's demo avatar
    change: dict[str, Any]
    reasons: frozenset[str]
    words: str


UNSTARTABLE = [
    Unstartable(
        "no-claim", "pvc://no-such-claim/anna", {},
        frozenset({"Unschedulable"}), 'persistentvolumeclaim "no-such-claim" not found',
    ),
    Unstartable(
        "no-image", "", {"images": {"server": ABSENT_IMAGE}},
        frozenset({"ErrImagePull", "ImagePullBackOff"}), ABSENT_IMAGE,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", UNSTARTABLE, ids=[case.name for case in UNSTARTABLE])
def test_a_pod_that_cannot_start_shows_the_schedulers_or_kubelets_reason_within_60_seconds(
    bed: OperatorBed, case: Unstartable
) -> None:
    namespace, name = bed.namespace, case.name
    avatar = case.avatar or bed.avatar("anna")
    apply(bed.cluster, namespace, small_model(name, avatar, REAL_NODE_PRODUCT, **case.change))
    try:
        # The build runs first (its pod needs neither the avatar nor the server image).
        def reported() -> dict[str, Any] | None:
            found = condition(status(bed.cluster, namespace, name), "PodsHealthy")
            return found if found.get("reason") in case.reasons else None

        pods_healthy = wait_for(
            reported, timeout=BUILD_TIMEOUT, interval=1.0, description=f"{name}: PodsHealthy"
        )
        assert pods_healthy["status"] == "False"
        assert case.words in pods_healthy["message"]
        selector = f"{model_selector(name)},app.kubernetes.io/component=server"
        [pod] = items(bed.cluster, "pods", namespace, selector)
        assert pod["metadata"]["name"] in pods_healthy["message"]
        created = _time(pod["metadata"]["creationTimestamp"])
        reported_after = _time(pods_healthy["lastTransitionTime"]) - created
        assert reported_after.total_seconds() <= REPORTED_WITHIN_S
        warnings = events_for(bed, namespace, name, pods_healthy["reason"])
        assert warnings, f"no {pods_healthy['reason']} event"
        assert {event["type"] for event in warnings} == {"Warning"}
        assert case.words in warnings[0]["message"]
    finally:
        _delete_model(bed, namespace, name)  # the next case needs the node's one GPU


def test_an_engine_file_changed_after_its_build_is_refused_and_the_status_says_why(
    bed: OperatorBed,
) -> None:
    namespace, name = bed.namespace, "tampered"
    apply(bed.cluster, namespace, small_model(name, bed.avatar("anna"), REAL_NODE_PRODUCT))
    selector = f"{model_selector(name)},app.kubernetes.io/component=server"
    try:
        ready = wait_phase(bed.cluster, namespace, name, "Ready", timeout=BUILD_TIMEOUT)
        engine = engines(ready)[REAL_NODE_PRODUCT]
        entry = bed.cache_dir() / "engines" / engine["key"].removeprefix("sha256:")
        artifact = entry / engine["artifact"]
        built = artifact.read_bytes()
        assert engine["artifactSha256"] == hashlib.sha256(built).hexdigest()
        try:
            artifact.write_bytes(built + b"\0")  # what a writer of the cache could do
            [pod] = items(bed.cluster, "pods", namespace, selector)
            bed.cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace)

            def refused() -> dict[str, Any] | None:
                found = condition(status(bed.cluster, namespace, name), "PodsHealthy")
                return found if "changed after its build" in found.get("message", "") else None

            pods_healthy = wait_for(refused, timeout=180, interval=1.0, description="refusal")
        finally:
            artifact.write_bytes(built)
        assert pods_healthy["status"] == "False"
        assert pods_healthy["reason"] == "CrashLoopBackOff"
        assert f"model artifact /engine/{engine['artifact']} has sha256" in pods_healthy["message"]
    finally:
        _delete_model(bed, namespace, name)
