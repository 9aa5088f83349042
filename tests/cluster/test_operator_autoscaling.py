"""Autoscaling end to end on the autoscaling test bed: load from `lipsync bench run` against the
model's Service makes KEDA scale the product's Deployment, Karpenter add GPU nodes for the
Pending pods (engine from the cache), and back down to zero pods and zero GPU nodes; a new
client then wakes the model (cold start: its first answer after zero).

The timeline (load, pods, nodes, served frames/s) is written as a table and a PNG chart to the
test's directory (`benchmarks/AUTOSCALING.md` comes from such a run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from lipsync_bench.result import BenchResult
from lipsync_bench.runner import RunOptions, run_bench
from lipsync_bench.timeline import Sample, timeline_chart, timeline_table

from lipsync_server.process import free_port
from lipsync_testbed import LocalCluster, WaitTimeoutError, wait_for
from lipsync_testbed.autoscaling import (
    CPU_NODE,
    nodepool_nodes,
    scheduling_report,
    scrape_clients,
    wait_keda_ready,
)
from lipsync_testbed.clientpods import gpu_holder_pod
from lipsync_testbed.gpucatalog import node_pool_name
from lipsync_testbed.nodebed import node_operator_bed
from lipsync_testbed.operatorchart import MODEL_URI, OperatorBed, pod_ready
from lipsync_testbed.prometheus import PrometheusClient, PrometheusQueryError

pytestmark = pytest.mark.cluster
log = logging.getLogger(__name__)

PRODUCT = "NVIDIA-L4"
POOL = node_pool_name(PRODUCT)
MODEL = "anna"
# Per pod, small enough for a CPU server on a shared machine; one stream per pod (< 25 fps).
TARGET_FPS = 1.0
MAX_PODS = 2
STREAMS = 2
COOLDOWN_S = 20
BUILD_TIMEOUT = 600.0
SCALE_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def bed(
    autoscaling_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
    reference_model: Path,
) -> Iterator[OperatorBed]:
    prometheus = autoscaling_cluster.autoscaling_endpoints.prometheus_url
    values = {
        # Prometheus and the load generator run on the host, outside every namespace a
        # NetworkPolicy can name; the policy is tested on its own (test_real_nodes.py).
        "networkPolicy.enabled": "false",
        "autoscaling.scaler": "keda",
        "autoscaling.keda.prometheusAddress": prometheus,
        "autoscaling.keda.pollingInterval": "1",
        "autoscaling.keda.cooldownPeriod": str(COOLDOWN_S),
    }
    yield from node_operator_bed(
        autoscaling_cluster, tmp_path_factory.mktemp("autoscaling"), reference_model, values
    )


@dataclass
class Recorder:
    """Samples the product's pods and nodes and the served frames/s once a second."""

    bed: OperatorBed
    prometheus: PrometheusClient
    start: float = field(default_factory=time.monotonic)
    wanted: int = 0
    samples: list[Sample] = field(default_factory=list)
    _events: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def event(self, text: str) -> None:
        self._events.append(text)

    def sample(self) -> Sample:
        pods = self.bed.server_pods(MODEL, PRODUCT)
        fps = self.prometheus.value(
            f'sum(rate(lipsync_frames_total{{lipsync_dev_model="{MODEL}"}}[15s]))'
        )
        taken = Sample(
            t_s=time.monotonic() - self.start,
            wanted_streams=self.wanted,
            pods=len(pods),
            ready_pods=sum(1 for pod in pods if pod_ready(pod)),
            nodes=len(nodepool_nodes(self.bed.api, POOL)),
            fps=None if math.isnan(fps) else fps,  # NaN: no series yet
            event="; ".join(self._events),
        )
        self._events.clear()
        self.samples.append(taken)
        return taken

    def run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sample()
            except (ApiException, PrometheusQueryError, OSError) as exc:
                log.warning("timeline sample failed: %s", exc)

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _gpu_placeholder(name: str) -> client.V1Pod:
    """A pod holding one L4 GPU: what brings the product's first node (there is none yet)."""
    return client.V1Pod.model_validate(gpu_holder_pod(name, PRODUCT))


@contextlib.contextmanager
def _node_port(bed: OperatorBed, service: str, port: str) -> Iterator[str]:
    """The model's Service reached from outside the cluster: a NodePort Service with its
    selector, as a load balancer in front of the nodes would use (kube-proxy on the CPU node
    forwards to a ready server wherever it runs). Yields HOST:PORT."""
    core = client.CoreV1Api(bed.api)
    model_service = core.read_namespaced_service(service, bed.namespace)
    assert model_service.spec is not None
    [grpc] = [p for p in model_service.spec.ports or [] if p.name == port]
    body = client.V1Service(
        metadata=client.V1ObjectMeta(name=f"{service}-node-port"),
        spec=client.V1ServiceSpec(
            type="NodePort",
            selector=model_service.spec.selector,
            ports=[client.V1ServicePort(name=port, port=grpc.port, target_port=grpc.target_port)],
        ),
    )
    created = core.create_namespaced_service(bed.namespace, body).to_dict()
    try:
        [node] = [n for n in bed.cluster.real_nodes if n.name == CPU_NODE.name]
        yield f"{node.addresses.address}:{created['spec']['ports'][0]['node_port']}"
    finally:
        core.delete_namespaced_service(f"{service}-node-port", bed.namespace)


def _model(bed: OperatorBed) -> dict[str, Any]:
    return {
        "apiVersion": "lipsync.dev/v1alpha1",
        "kind": "LipSyncModel",
        "metadata": {"name": MODEL},
        "spec": {
            "model": {"uri": MODEL_URI},
            "avatar": {"uri": bed.avatar(MODEL)},
            "precision": "fp32",
            "gpus": {"products": [PRODUCT]},
            "replicasPerGPU": 1,
            "batching": {"maxBatch": 1},
            "autoscaling": {
                "enabled": True,
                "minReplicas": 0,
                "maxReplicas": MAX_PODS,
                "productTargetFps": {PRODUCT: TARGET_FPS},
            },
        },
    }


def _bench(
    bed: OperatorBed, target: str, recorder: Recorder, seconds: float
) -> tuple[threading.Thread, list[BenchResult]]:
    """`lipsync bench run` with the wake contract: wanted streams exported and scraped."""
    port = free_port()
    scrape_clients(bed.cluster, [f"127.0.0.1:{port}"])
    options = RunOptions(
        targets=[target],
        streams=[STREAMS],
        duration_s=seconds,
        warmup_frames=0,
        retry_unavailable=True,
        demand_model=f"{bed.namespace}/{MODEL}",
        demand_port=port,
        connect_timeout_s=SCALE_TIMEOUT,
    )
    results: list[BenchResult] = []
    thread = threading.Thread(
        target=lambda: results.append(asyncio.run(run_bench(options, sys.argv))), daemon=True
    )
    recorder.wanted = STREAMS
    recorder.event("load up")
    thread.start()
    return thread, results


def _at(
    recorder: Recorder, description: str, test: Callable[[Sample], bool], timeout: float
) -> Sample:
    """The first new sample that passes ``test`` (or a failure that says why pods wait)."""

    def passing() -> Sample | None:
        latest = recorder.samples[-1] if recorder.samples else None
        return latest if latest is not None and test(latest) else None

    try:
        found: Sample = wait_for(passing, timeout=timeout, interval=1.0, description=description)
    except WaitTimeoutError as exc:
        report = scheduling_report(recorder.bed.api, recorder.bed.namespace)
        raise WaitTimeoutError(f"{exc}\n{report}") from exc
    return found


def _first_answer_s(result: BenchResult) -> float:
    note = next(n for n in result.notes if n.startswith("first answer from the server after"))
    return float(note.rsplit(" ", 2)[1])


def test_load_scales_pods_and_gpu_nodes_up_and_down_to_zero_and_a_stream_wakes_it(
    bed: OperatorBed, tmp_path: Path
) -> None:
    api = bed.api
    core = client.CoreV1Api(api)
    wait_keda_ready(api, timeout=60)
    prometheus = PrometheusClient(bed.cluster.autoscaling_endpoints.prometheus_url)
    with Recorder(bed, prometheus) as recorder:
        core.create_namespaced_pod(bed.namespace, _gpu_placeholder("first-l4"))
        _at(recorder, "a first L4 node", lambda s: s.nodes >= 1, SCALE_TIMEOUT)
        bed.apply_model(_model(bed))
        recorder.event("model applied")
        bed.wait_phase(MODEL, "Ready", timeout=BUILD_TIMEOUT)
        core.delete_namespaced_pod(name="first-l4", namespace=bed.namespace)
        recorder.event("engine ready")

        # Idle: KEDA takes the product to zero pods, Karpenter removes the empty nodes.
        _at(recorder, "zero pods", lambda s: s.pods == 0, COOLDOWN_S + SCALE_TIMEOUT)
        recorder.event("scaled to zero")
        _at(recorder, "zero L4 nodes", lambda s: s.nodes == 0, SCALE_TIMEOUT)
        found = bed.model(MODEL)
        available = next(c for c in found["status"]["conditions"] if c["type"] == "Available")
        assert (found["status"]["phase"], available["reason"]) == ("Ready", "ScaledToZero")
        builds = len(bed.build_jobs(MODEL))

        # Load up from zero: the clients' wanted streams wake it; one pod per stream, each on
        # a GPU Karpenter adds.
        with _node_port(bed, MODEL, "grpc") as target:
            thread, results = _bench(bed, target, recorder, seconds=90)
            _at(recorder, "a ready pod after zero", lambda s: s.ready_pods >= 1, SCALE_TIMEOUT)
            peak = _at(
                recorder,
                f"{MAX_PODS} ready pods on GPU nodes",
                lambda s: s.ready_pods == MAX_PODS and s.nodes >= 1,
                SCALE_TIMEOUT,
            )
            thread.join(timeout=SCALE_TIMEOUT)
        recorder.wanted = 0
        recorder.event("load down")
        scrape_clients(bed.cluster, [])
        [run] = results
        [level] = run.levels
        assert level.errors == {}
        assert level.frames_received > 0
        assert len(bed.build_jobs(MODEL)) == builds, "pods after zero load the cached engine"
        cold_start_s = _first_answer_s(run)

        # Load down: back to zero pods and zero GPU nodes.
        _at(recorder, "zero pods again", lambda s: s.pods == 0, 120 + COOLDOWN_S + SCALE_TIMEOUT)
        _at(recorder, "zero L4 nodes again", lambda s: s.nodes == 0, SCALE_TIMEOUT)

    served = [s.fps for s in recorder.samples if s.fps is not None and s.ready_pods == MAX_PODS]
    assert served, "no frames/s sample while fully scaled out"
    assert max(served) >= TARGET_FPS * MAX_PODS, "served frames/s never reached the target"
    table = timeline_table(recorder.samples)
    (tmp_path / "timeline.md").write_text(
        f"{table}\n\ncold start (first answer after zero): {cold_start_s:.1f} s\n"
        f"peak: {peak.ready_pods} pods on {peak.nodes} nodes; "
        f"bench: {level.fps_total:.1f} frames/s over {level.duration_s:.0f} s\n",
        encoding="utf-8",
    )
    timeline_chart(recorder.samples, tmp_path / "autoscaling.png", "LipSyncModel anna on L4")
    print(f"timeline in {tmp_path}: cold start {cold_start_s:.1f} s")


def _empty_nodes(api: client.ApiClient, nodes: list[client.V1Node]) -> set[str]:
    """Nodes no unfinished pod is bound to: what Karpenter's consolidation removes next."""
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces().to_dict()["items"]
    busy = {
        str((pod.get("spec") or {}).get("node_name"))
        for pod in pods
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    }
    return {str(node.to_dict()["metadata"]["name"]) for node in nodes} - busy


def _settled_nodes(bed: OperatorBed, name: str, quiet_s: float = 20.0) -> int:
    """GPU nodes of the pool once the model is Ready, no node is left empty (Karpenter removes
    those; the operator must not fill them) and the count held for ``quiet_s``."""
    bed.wait_phase(name, "Ready", timeout=BUILD_TIMEOUT)
    last: list[tuple[int, float]] = []

    def steady() -> int | None:
        nodes = nodepool_nodes(bed.api, POOL)
        if _empty_nodes(bed.api, nodes):
            last.clear()
            return None
        count = len(nodes)
        if not last or last[0][0] != count:
            last[:] = [(count, time.monotonic())]
            return None
        found = bed.model(name)
        current = found["status"].get("observedGeneration") == found["metadata"]["generation"]
        held = time.monotonic() - last[0][1] >= quiet_s
        return count if held and current and found["status"]["phase"] == "Ready" else None

    settled: int = wait_for(
        steady, timeout=SCALE_TIMEOUT, interval=1.0, description="the node count to settle"
    )
    return settled


def _condition(model: dict[str, Any], kind: str) -> str:
    conditions = (model.get("status") or {}).get("conditions") or []
    return next((str(c["status"]) for c in conditions if c["type"] == kind), "")


def test_a_static_model_on_a_karpenter_pool_returns_to_its_node_count_after_spec_changes(
    bed: OperatorBed,
) -> None:
    name = "mira"
    core = client.CoreV1Api(bed.api)
    core.create_namespaced_pod(bed.namespace, _gpu_placeholder("hold-l4"))
    wait_for(
        lambda: nodepool_nodes(bed.api, POOL) or None, timeout=SCALE_TIMEOUT, description="a node"
    )
    static = _model(bed)
    static["metadata"]["name"] = name
    static["spec"]["autoscaling"] = {"enabled": False}
    bed.apply_model(static)
    # Its first rollout claims the node's GPU, which the placeholder still holds: no server
    # runs until the placeholder goes, once the (cached) engine is ready.
    wait_for(
        lambda: _condition(bed.model(name), "EnginesReady") == "True",
        timeout=BUILD_TIMEOUT,
        description=f"{name}'s engine ready",
    )
    core.delete_namespaced_pod(name="hold-l4", namespace=bed.namespace)
    before = _settled_nodes(bed, name)
    assert before >= 1
    # A new engine (a build that borrows a server's GPU), then a rollout back to the cached one.
    for batch in (2, 1):
        bed.patch_model(name, {"batching": {"maxBatch": batch}})
        assert _settled_nodes(bed, name) == before, f"nodes ratcheted after maxBatch {batch}"
