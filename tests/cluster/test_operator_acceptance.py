"""The operator as the chart installs it: its own replicas (leader election), build Jobs running
the builder CLI (ORT CPU standing in for TensorRT) and server pods, all containers of the
project's images on real nodes (fake GPUs) that the tests add and remove like a node autoscaler.

The tests share one install and run in file order: a model on a product whose nodes come and go,
then a small time-sliced model through an operator crash, a spec change, a failed build and
hand scaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from lipsync_contract.enginekey import short_key
from lipsync_testbed import GpuSpec, NodeSpec, operatorchart, wait_for
from lipsync_testbed.lsm import (
    BUILD_SELECTOR,
    apply,
    condition,
    deployments,
    engines,
    items,
    jobs,
    kubectl_json,
    model_selector,
    nodes_of,
    patch_spec,
    ready_pods,
    server_pods,
    serving,
    status,
    wait_phase,
    wait_serving,
)
from lipsync_testbed.nodebed import added_real_nodes
from lipsync_testbed.operatorchart import OperatorBed
from lipsync_testbed.versions import repo_root

pytestmark = pytest.mark.cluster

EXAMPLES = repo_root() / "examples"
A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"
MODEL_URI = "pvc://lipsync-models/unet328/unet_328.onnx"
BUILD_TIMEOUT = 420.0  # an ORT CPU build on a shared 2-core machine

# One server pod per A100 with one model instance: light enough to run for real.
LENA = {
    "apiVersion": "lipsync.dev/v1alpha1",
    "kind": "LipSyncModel",
    "metadata": {"name": "lena"},
    "spec": {
        "model": {"uri": MODEL_URI},
        "avatar": {"uri": "pvc://lipsync-avatars/lena"},
        "precision": "fp32",
        "gpus": {"products": [A100]},
        "replicasPerGPU": 1,
        "sharing": "exclusive",
        "batching": {"maxBatch": 1},
    },
}
# One time-sliced T4 with 4 slices, 2 pods per GPU, so a build Job and a rollout's surge pod find
# a free slice while the servers run.
MIRA = {
    "apiVersion": "lipsync.dev/v1alpha1",
    "kind": "LipSyncModel",
    "metadata": {"name": "mira"},
    "spec": {
        "model": {"uri": MODEL_URI},
        "avatar": {"uri": "pvc://lipsync-avatars/mira"},
        "precision": "fp32",
        "gpus": {"products": [T4]},
        "replicasPerGPU": 2,
        "sharing": "timeSlicing",
        "batching": {"maxBatch": 1},
    },
}
T4_NODE = NodeSpec(
    name="t4-0",
    pool="t4",
    gpu=GpuSpec(
        product=T4,
        count=1,
        memory_mib=15360,
        compute_major=7,
        compute_minor=5,
        sharing_strategy="time-slicing",
        replicas=4,
    ),
)


def _a100(index: int) -> NodeSpec:
    gpu = GpuSpec(product=A100, count=1, memory_mib=81920, compute_major=8, compute_minor=0)
    return NodeSpec(name=f"a100-{index}", pool="a100", gpu=gpu)


@pytest.fixture(scope="module")
def t4_node(bed: OperatorBed) -> Iterator[str]:
    with added_real_nodes(bed.cluster, T4_NODE):
        yield T4_NODE.name


def _build_pods(bed: OperatorBed, name: str) -> list[dict[str, Any]]:
    return items(bed.cluster, "pods", bed.namespace, f"{model_selector(name)},{BUILD_SELECTOR}")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["status"]["containerStatuses"]
    return dict(container["state"].get("terminated") or {})


# -- install -------------------------------------------------------------------------------------


def test_operator_runs_with_the_charts_service_account_and_least_privilege(
    bed: OperatorBed,
) -> None:
    deployment = next(o for o in bed.objects if o["kind"] == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{operatorchart.RELEASE_NAMESPACE}:{account}"

    def can(verb: str, resource: str, *scope: str) -> bool:
        out = bed.cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={user}", *(scope or ("-A",)), check=False
        )
        return out.stdout.strip() == "yes"

    for verb, resource in [
        ("patch", "lipsyncmodels.lipsync.dev/status"),
        ("create", "jobs.batch"),
        ("patch", "deployments.apps"),
        ("create", "horizontalpodautoscalers.autoscaling"),
        ("watch", "nodes"),
        ("create", "events"),
    ]:
        assert can(verb, resource), f"the chart's role lacks {verb} {resource}"
    for verb, resource in [
        ("get", "secrets"),
        ("create", "pods"),
        ("delete", "nodes"),
        ("delete", "lipsyncmodels.lipsync.dev"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
    ]:
        assert not can(verb, resource), f"the chart's role allows {verb} {resource}"
    # The Lease only in the release namespace.
    assert can("update", "leases.coordination.k8s.io", "-n", operatorchart.RELEASE_NAMESPACE)
    # The operator's own pods came up under that account and one of them holds the Lease.
    leader = operatorchart.wait_leader(bed.cluster.api_client)
    pod = client.CoreV1Api(bed.cluster.api_client).read_namespaced_pod(
        leader, operatorchart.RELEASE_NAMESPACE
    )
    assert pod.spec is not None
    assert pod.spec.service_account_name == account


# -- nodes come and go ---------------------------------------------------------------------------


def test_a_new_gpu_product_gets_a_build_then_servers_and_replicas_follow_its_nodes(
    bed: OperatorBed,
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    bed.avatar("lena")
    apply(cluster, namespace, LENA)
    pending = wait_phase(cluster, namespace, "lena", "Pending", timeout=60)
    assert "no schedulable node" in engines(pending)[A100]["reason"]
    with added_real_nodes(bed.cluster, _a100(0), _a100(1)):
        ready = wait_phase(cluster, namespace, "lena", "Ready", timeout=BUILD_TIMEOUT)
        pods = wait_serving(cluster, namespace, "lena", A100, 2)
        assert nodes_of(pods) == {"a100-0": 1, "a100-1": 1}
        [job] = jobs(cluster, namespace, "lena")
        key = job["metadata"]["annotations"]["lipsync.dev/engine-key"]
        assert engines(ready)[A100]["key"] == key
        # The builder ran in the Job's pod and said what it built in its termination message.
        [build] = _build_pods(bed, "lena")
        terminated = _terminated(build)
        assert terminated["exitCode"] == 0
        assert f'"key":"{key}"' in terminated["message"].replace(" ", "")
        assert (bed.cache_dir() / "engines" / key.removeprefix("sha256:")).is_dir()

        cluster.remove_real_node("a100-1")
        # The Deployment shrinks at once; the pod on the deleted node goes when the pod garbage
        # collector reaps it.
        wait_for(
            lambda: nodes_of(serving(cluster, namespace, "lena", A100, 1)) == {"a100-0": 1},
            timeout=180,
            interval=1.0,
            description="1 ready A100 pod of lena, on a100-0",
        )
    wait_for(
        lambda: A100 not in deployments(cluster, namespace, "lena"),
        timeout=60,
        description="the A100 Deployment deleted with the last A100 node",
    )


CHILD_KINDS = "jobs,deployments,replicasets,pods,services,poddisruptionbudgets"


@pytest.fixture
def lena(bed: OperatorBed) -> str:
    """lena applied (again, if the test before did) with children of its own."""
    bed.avatar("lena")
    apply(bed.cluster, bed.namespace, LENA)
    wait_for(
        lambda: items(bed.cluster, CHILD_KINDS, bed.namespace, model_selector("lena")) or None,
        timeout=60,
        description="lena's first children",
    )
    return "lena"


def test_deleting_the_model_garbage_collects_every_child(bed: OperatorBed, lena: str) -> None:
    cluster, namespace, kinds = bed.cluster, bed.namespace, CHILD_KINDS
    cluster.kubectl("delete", "lsm", "lena", "-n", namespace, "--wait=true")

    def children() -> list[str]:
        found = items(cluster, kinds, namespace, model_selector("lena"))
        return [f"{o['kind']}/{o['metadata']['name']}" for o in found]

    wait_for(lambda: not children(), timeout=120, interval=1.0, description="lena's children gone")


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "int8"}, "precision int8 needs spec.calibration"),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
        ),
        ({"replicasPerGPU": 0}, "spec.replicasPerGPU: Invalid value: 0"),
        ({"sharing": "everything"}, 'spec.sharing: Unsupported value: "everything"'),
    ],
)
def test_invalid_specs_are_rejected_by_the_api_server_with_a_readable_message(
    bed: OperatorBed, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    document = yaml.safe_load((EXAMPLES / "lipsyncmodel.yaml").read_text(encoding="utf-8"))
    document["metadata"]["name"] = "invalid"
    document["spec"].update(change)
    path = tmp_path / "invalid.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert cluster.kubectl("get", "lsm", "invalid", "-n", namespace, check=False).returncode != 0


@pytest.fixture
def mira(bed: OperatorBed, t4_node: str) -> str:
    """The time-sliced model the lifecycle tests share: the first test makes it; a test run on
    its own (``pytest -k``) gets it made and Ready here."""
    found = bed.cluster.kubectl("get", "lsm", "mira", "-n", bed.namespace, check=False)
    if found.returncode != 0:
        bed.avatar("mira")
        apply(bed.cluster, bed.namespace, MIRA)
        wait_phase(bed.cluster, bed.namespace, "mira", "Ready", timeout=BUILD_TIMEOUT)
    return t4_node


# -- lifecycle on a time-sliced node ------------------------------------------------------------


def test_operator_killed_mid_build_makes_no_twin_job_and_converges(
    bed: OperatorBed, t4_node: str
) -> None:
    cluster, namespace, api = bed.cluster, bed.namespace, bed.cluster.api_client
    bed.avatar("mira")
    apply(cluster, namespace, MIRA)

    def build_running() -> dict[str, Any] | None:
        found = jobs(cluster, namespace, "mira")
        return found[0] if len(found) == 1 and ready_pods(_build_pods(bed, "mira")) else None

    job = wait_for(build_running, timeout=120, interval=0.5, description="mira's build pod running")
    acting = operatorchart.wait_leader(api)
    # SIGKILL-like: the acting replica's pod goes with no grace, its Lease unreleased.
    client.CoreV1Api(api).delete_namespaced_pod(
        acting, operatorchart.RELEASE_NAMESPACE, grace_period_seconds=0
    )
    assert status(cluster, namespace, "mira")["phase"] == "Building"
    operatorchart.wait_leader(api, other_than=acting, timeout=60)

    ready = wait_phase(cluster, namespace, "mira", "Ready", timeout=BUILD_TIMEOUT)
    (after,) = jobs(cluster, namespace, "mira")
    assert after["metadata"]["uid"] == job["metadata"]["uid"]
    assert len(_build_pods(bed, "mira")) == 1
    assert engines(ready)[T4]["key"] == job["metadata"]["annotations"]["lipsync.dev/engine-key"]
    pods = wait_serving(cluster, namespace, "mira", T4, 2)
    assert nodes_of(pods) == {t4_node: 2}


def test_spec_change_builds_the_new_key_first_then_rolls_with_old_podsserving(
    bed: OperatorBed, mira: str
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    old_key = engines(status(cluster, namespace, "mira"))[T4]["key"]
    patch_spec(cluster, namespace, "mira", {"precision": "fp16"})
    building_seen = False

    def built(job: dict[str, Any]) -> bool:
        return int((job.get("status") or {}).get("succeeded") or 0) >= 1

    def key_of(item: dict[str, Any]) -> str:
        return str(item["metadata"]["annotations"]["lipsync.dev/engine-key"])

    def labels(pods: list[dict[str, Any]]) -> set[str]:
        return {p["metadata"]["labels"]["lipsync.dev/engine"] for p in pods}

    def rolled() -> list[dict[str, Any]] | None:
        # Each check reads the cluster in the order that makes it race-free: whatever a later
        # read shows happened no earlier than what an earlier read shows.
        nonlocal building_seen
        new_jobs = [j for j in jobs(cluster, namespace, "mira") if key_of(j) != old_key]
        pods = server_pods(cluster, namespace, "mira", T4)
        serving = key_of(deployments(cluster, namespace, "mira")[T4])
        if serving == old_key:
            if new_jobs and not any(built(j) for j in new_jobs):
                building_seen = True
                # Until the new engine is built, the old one keeps serving at full strength.
                assert len(pods) >= 2
                assert labels(pods) == {short_key(old_key)}
            return None
        # The Deployment serves a new engine: its build Job had finished before the roll.
        jobs_now = jobs(cluster, namespace, "mira")
        assert any(key_of(j) == serving and built(j) for j in jobs_now), (
            f"rolled to {serving} before its build finished"
        )
        pods = server_pods(cluster, namespace, "mira", T4)
        return pods if labels(pods) == {short_key(serving)} and len(pods) == 2 else None

    wait_for(
        rolled, timeout=BUILD_TIMEOUT, interval=0.5, description="mira rolled to the fp16 engine"
    )
    assert building_seen, "the new engine was never seen building before the roll"
    ready = wait_phase(cluster, namespace, "mira", "Ready", timeout=60)
    new_key = engines(ready)[T4]["key"]
    assert new_key != old_key
    built_jobs = jobs(cluster, namespace, "mira")
    assert [j["metadata"]["annotations"]["lipsync.dev/engine-key"] for j in built_jobs] == [new_key]


def test_failed_build_reports_the_builders_reason_and_the_previous_engine_keepsserving(
    bed: OperatorBed, mira: str
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    serving_key = engines(status(cluster, namespace, "mira"))[T4]["key"]
    good_uri = MIRA["spec"]["model"]["uri"]  # type: ignore[index]
    patch_spec(
        cluster,
        namespace,
        "mira",
        {"model": {"uri": "pvc://lipsync-models/unet328/missing.onnx"}},
    )

    degraded = wait_phase(cluster, namespace, "mira", "Degraded", timeout=120)
    engines_ready = condition(degraded, "EnginesReady")
    assert engines_ready["status"] == "False"
    assert engines_ready["reason"] == "BuildFailed"
    assert "missing.onnx: not found" in engines_ready["message"]
    assert engines(degraded)[T4]["state"] == "Failed"
    deployment = deployments(cluster, namespace, "mira")[T4]
    assert deployment["metadata"]["annotations"]["lipsync.dev/engine-key"] == serving_key
    assert len(serving(cluster, namespace, "mira", T4, 2)) == 2
    assert condition(degraded, "Available")["status"] == "True"
    events = kubectl_json(
        cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=mira",
    )["items"]
    assert any(e["reason"] == "EngineFailed" and "not found" in e["message"] for e in events)

    patch_spec(cluster, namespace, "mira", {"model": {"uri": good_uri}})
    restored = wait_phase(cluster, namespace, "mira", "Ready", timeout=60)
    assert engines(restored)[T4]["key"] == serving_key


def test_hand_scaling_within_autoscaling_bounds_is_not_undone(bed: OperatorBed, mira: str) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    patch_spec(
        cluster,
        namespace,
        "mira",
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}},
    )
    wait_phase(cluster, namespace, "mira", "Ready", timeout=60)
    (hpa,) = items(cluster, "horizontalpodautoscalers", namespace, model_selector("mira"))
    deployment = deployments(cluster, namespace, "mira")[T4]["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)

    cluster.kubectl("scale", "deployment", deployment, "-n", namespace, "--replicas=3")
    wait_serving(cluster, namespace, "mira", T4, 3)
    # Any spec change makes the operator reconcile; one that leaves the engine key alone.
    patch_spec(cluster, namespace, "mira", {"batching": {"maxQueueDelayMicroseconds": 2000}})
    wait_phase(cluster, namespace, "mira", "Ready", timeout=60)
    pods = wait_serving(cluster, namespace, "mira", T4, 3)
    assert len(pods) == 3
