"""Capacity and node churn with the chart's operator and server containers on real nodes: a
rollout on a full cluster while a client pod streams frames through the Service, a short
NotReady blip (a hung kubelet), a drain, a node taken away.

One model and one chart install for the module; the tests run in file order, each from the
state the previous one left: the model's product (two real H100 nodes, one GPU each) is full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lipsync_operator import naming
from lipsync_testbed import GpuSpec, LocalCluster, NodeSpec, wait_for
from lipsync_testbed.clientpods import (
    bench_command,
    bench_result,
    finished_client_pod,
    start_client_pod,
)
from lipsync_testbed.lsm import apply
from lipsync_testbed.nodebed import added_real_nodes, node_operator_bed
from lipsync_testbed.operatorchart import (
    MODEL_URI,
    OperatorBed,
    ServingSampler,
    disruption_floor,
)

pytestmark = pytest.mark.cluster

H100 = "NVIDIA-H100-80GB-HBM3"
NODES = ("h100-0", "h100-1")
GRACE_S = 25  # nodes.notReadyGraceSeconds for this module
RESYNC_S = 60  # the operator's resync timer
NAME = "cora"
GPUS = len(NODES)
BUILD_TIMEOUT = 600.0  # an ORT CPU build and two server starts on a shared 2-core machine


@pytest.fixture(scope="module")
def h100_nodes(node_cluster: LocalCluster) -> Iterator[tuple[str, ...]]:
    """Two real nodes with one H100 each (one small server per GPU)."""
    gpu = GpuSpec(product=H100, count=1, memory_mib=81559, compute_major=9, compute_minor=0)
    specs = [NodeSpec(name=name, pool="h100", gpu=gpu) for name in NODES]
    with added_real_nodes(node_cluster, *specs) as names:
        yield names


@pytest.fixture(scope="module")
def bed(
    node_cluster: LocalCluster,
    h100_nodes: tuple[str, ...],
    tmp_path_factory: pytest.TempPathFactory,
    reference_model: Path,
) -> Iterator[OperatorBed]:
    yield from node_operator_bed(
        node_cluster,
        tmp_path_factory.mktemp("capacity"),
        reference_model,
        {"nodes.notReadyGraceSeconds": str(GRACE_S)},
    )


def _document(bed: OperatorBed) -> dict[str, Any]:
    return {
        "apiVersion": "lipsync.dev/v1alpha1",
        "kind": "LipSyncModel",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"uri": MODEL_URI},
            "avatar": {"uri": bed.avatar(NAME)},
            "precision": "fp32",
            "gpus": {"products": [H100]},
            "replicasPerGPU": 1,
            "sharing": "exclusive",
            "batching": {"maxBatch": 1},
        },
    }


def _engine_key(status: dict[str, Any]) -> str:
    (engine,) = [e for e in status.get("engines") or [] if e["gpuProduct"] == H100]
    return str(engine["key"])


def _node_count(api: client.ApiClient) -> int:
    return len(client.CoreV1Api(api).list_node().items)


def _replicas(bed: OperatorBed) -> int | None:
    deployment = bed.deployment(NAME, H100)
    return deployment.spec.replicas if deployment and deployment.spec else None


class Stream:
    """`lipsync bench run --retry-unavailable` in a client pod of the model's namespace, against
    the Service's DNS name (CoreDNS, kube-proxy): one closed-loop stream (the next frame when the
    last arrived: a CPU server makes about one a second here) for `duration_s`."""

    def __init__(self, bed: OperatorBed, name: str, duration_s: float) -> None:
        self.bed, self.name = bed, name
        target = f"{naming.service_name(NAME)}.{bed.namespace}.svc:8001"
        start_client_pod(
            bed.cluster,
            bed.namespace,
            name,
            bench_command(
                [
                    "--target", target, "--streams", "1", "--mode", "closed",
                    "--duration", str(duration_s), "--warmup-frames", "0",
                    "--retry-unavailable", "--no-metrics", "--drain-timeout", "120",
                ]
            ),
        )  # fmt: skip

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bed.cluster.kubectl(
            "delete", "pod", self.name, "-n", self.bed.namespace, "--wait=false", check=False
        )

    def connected(self) -> bool:
        pod = client.CoreV1Api(self.bed.api).read_namespaced_pod(self.name, self.bed.namespace)
        return pod.status is not None and pod.status.phase == "Running"

    def result(self, timeout: float) -> dict[str, Any]:
        """The measured level of the finished run."""
        phase, log = finished_client_pod(self.bed.cluster, self.bed.namespace, self.name, timeout)
        assert phase == "Succeeded", f"bench run in {self.name}: {phase}\n{log[-3000:]}"
        (level,) = bench_result(log)["levels"]
        return dict(level)


ROLLOUT: dict[str, float] = {}  # measured when the model is first applied, sizes the stream


@pytest.fixture
def cora(bed: OperatorBed) -> list[client.V1Pod]:
    """The model applied (once per module) and serving on every GPU of its product."""
    if not ROLLOUT:
        started = time.monotonic()
        apply(bed.cluster, bed.namespace, _document(bed))
        bed.wait_phase(NAME, "Ready", timeout=BUILD_TIMEOUT)
        pods = bed.wait_serving(NAME, H100, GPUS, timeout=300)
        ROLLOUT["first_ready_s"] = time.monotonic() - started
        print(f"\nfirst Ready with {GPUS} servers after {ROLLOUT['first_ready_s']:.0f} s")
        return pods
    bed.wait_phase(NAME, "Ready", timeout=BUILD_TIMEOUT)
    return bed.wait_serving(NAME, H100, GPUS, timeout=300)


def test_model_takes_every_gpu_of_its_product(bed: OperatorBed, cora: list[client.V1Pod]) -> None:
    assert sorted(str(p.spec.node_name) for p in cora if p.spec) == sorted(NODES)
    leader = bed.leader()
    assert leader in bed.operator_pods()


def test_full_cluster_rollout_borrows_a_gpu_and_streams_every_frame(
    bed: OperatorBed, cora: list[client.V1Pod]
) -> None:
    old_key = _engine_key(bed.wait_phase(NAME, "Ready", timeout=60))
    nodes_before = _node_count(bed.api)
    floor = disruption_floor(bed, NAME, GPUS)
    # Long enough to cover the rollout: twice the first build-and-serve, bounded.
    duration = min(480.0, max(180.0, 2 * ROLLOUT.get("first_ready_s", 120.0) + 60))
    with (
        ServingSampler(bed, NAME, H100) as sampler,
        Stream(bed, "stream", duration) as stream,
    ):
        wait_for(stream.connected, timeout=120, description="the stream's pod running")
        streaming_since = time.monotonic()
        bed.patch_model(NAME, {"batching": {"maxBatch": 2}})

        status = bed.wait_phase(NAME, "Ready", timeout=BUILD_TIMEOUT)
        new_key = _engine_key(status)
        pods = bed.wait_serving(NAME, H100, GPUS, timeout=300)
        rollout_s = time.monotonic() - streaming_since
        keys = {
            (p.metadata.annotations or {}).get(naming.ANNOTATION_ENGINE_KEY)
            for p in pods
            if p.metadata
        }
        assert time.monotonic() < streaming_since + duration - 5, "the stream ended first"
        level = stream.result(timeout=duration + 180)
    print(
        f"\nrollout on a full cluster: {rollout_s:.0f} s; stream: {level['frames_sent']} frames "
        f"sent, {level['frames_received']} received, retried {level['retried']}, largest gap "
        f"{level['max_frame_gap_ms']:.0f} ms"
    )
    assert new_key != old_key
    assert keys == {new_key}
    assert _node_count(bed.api) == nodes_before, "a node was added"
    assert level["errors"] == {}
    assert level["frames_received"] == level["frames_sent"] > 0
    # The borrow: the build Job ran while the Deployment ran one server fewer.
    borrowed = [s for s in sampler.samples if s.builds_running and s.replicas == GPUS - 1]
    assert borrowed, "no sample saw the build Job run beside one server fewer"
    assert all(s.replicas is not None and s.replicas <= GPUS for s in sampler.samples)
    assert sampler.min_ready() >= floor, f"ready servers fell below the budget's {floor}"


def test_a_short_not_ready_blip_keeps_the_replicas(
    bed: OperatorBed, cora: list[client.V1Pod]
) -> None:
    node = NODES[1]
    bed.cluster.set_real_node_ready(node, False)
    went_not_ready = time.monotonic()
    try:
        # Within the grace period the node's GPU still counts: the count holds throughout.
        with ServingSampler(bed, NAME, H100, interval=1.0) as sampler:
            wait_for(
                lambda: time.monotonic() - went_not_ready >= GRACE_S - 5,
                timeout=GRACE_S,
                description="most of the grace period",
            )
        assert {s.replicas for s in sampler.samples} == {GPUS}
        # Past the grace period it stops counting (the resync timer notices).
        wait_for(
            lambda: _replicas(bed) == GPUS - 1,
            timeout=GRACE_S + RESYNC_S + 30,
            description="replicas follow the node NotReady past its grace period",
        )
        follow_s = time.monotonic() - went_not_ready
        print(
            f"\nNotReady past the grace period ({GRACE_S} s): replicas followed at {follow_s:.0f} s"
        )
    finally:
        bed.cluster.set_real_node_ready(node, True)
    bed.wait_serving(NAME, H100, GPUS, timeout=300)


def test_drain_keeps_the_disruption_budget_and_uncordon_restores(
    bed: OperatorBed, cora: list[client.V1Pod]
) -> None:
    node = NODES[0]
    floor = disruption_floor(bed, NAME, GPUS)
    started = time.monotonic()
    with ServingSampler(bed, NAME, H100) as sampler:
        bed.cluster.kubectl(
            "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s",
            timeout=360,
        )  # fmt: skip
    print(
        f"\ndrain of {node}: {time.monotonic() - started:.0f} s, fewest ready servers "
        f"{sampler.min_ready()} (budget floor {floor}) over {len(sampler.samples)} samples"
    )
    assert sampler.min_ready() >= floor, f"ready servers fell below the budget's {floor}"
    on_node = [p for p in bed.server_pods(NAME, H100) if p.spec and p.spec.node_name == node]
    assert not on_node, "the drain left server pods on the node"
    bed.wait_serving(NAME, H100, GPUS - 1, timeout=120)
    bed.cluster.kubectl("uncordon", node)
    pods = bed.wait_serving(NAME, H100, GPUS, timeout=300)
    assert sorted(str(p.spec.node_name) for p in pods if p.spec) == sorted(NODES)


def test_a_deleted_node_stops_counting(bed: OperatorBed, cora: list[client.V1Pod]) -> None:
    bed.cluster.remove_real_node(NODES[1])

    def on_the_remaining_node() -> list[client.V1Pod] | None:
        # The ReplicaSet may first scale down the pod on the live node; the pod garbage
        # collector then removes the deleted node's pod and its replacement lands here.
        pods = bed.ready_servers(NAME, H100)
        nodes = [str(p.spec.node_name) for p in pods if p.spec]
        return pods if _replicas(bed) == GPUS - 1 and nodes == [NODES[0]] else None

    wait_for(
        on_the_remaining_node,
        timeout=240,
        interval=1.0,
        description="one ready server, on the remaining node",
    )
