"""The chart as a user installs it, on a real node: the project's images (`make images`) run as
containers by kubelet + containerd under the chart's securityContext, in namespaces where
PodSecurity enforces `restricted`; Services through kube-proxy, names through CoreDNS,
NetworkPolicy enforced by kube-router.

The tests share one install and run in file order: the operator, then a model Ready on the
node, then clients of it from the host (kubectl port-forward) and from pods.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lipsync_testbed import LocalCluster, create_namespace, wait_for
from lipsync_testbed.clientpods import run_client_pod
from lipsync_testbed.lsm import apply, items, kubectl_json, ready_pods, server_pods
from lipsync_testbed.nodebed import (
    IMAGE_UID,
    REAL_NODE,
    REAL_NODE_PRODUCT,
    RESTRICTED,
    node_operator_bed,
)
from lipsync_testbed.operatorchart import (
    RELEASE_NAMESPACE,
    OperatorBed,
    small_model,
)
from lipsync_testbed.portforward import port_forward

pytestmark = pytest.mark.cluster

MODEL = "anna"
BUILD_TIMEOUT = 600.0  # an ORT CPU build in a container on a shared 2-core machine
LIPSYNC = str(Path(sys.executable).parent / "lipsync")
# Frames from a server, asked for from inside a pod with the runtime image's own client.
CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import grpc, numpy as np
    from lipsync_server.client import LipSyncStub, stream_frames

    async def main():
        async with grpc.aio.insecure_channel(sys.argv[1]) as channel:
            frames = [f async for f in stream_frames(
                LipSyncStub(channel), np.zeros((8, 512), np.float32), timeout=120)]
        print("frames", len(frames), "bytes", sum(len(f.data) for f in frames))

    asyncio.run(main())
    """
)
# TCP connects from inside a pod for up to 20 s: "open" at the first that succeeds, else
# "closed <last error>". A policy takes effect a moment after a pod starts (the firewall learns
# the new pod's address from its watch), so a connect refused at once proves nothing.
CONNECT_SCRIPT = textwrap.dedent(
    """
    import socket, sys, time
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
            print("open")
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                print("closed", exc)
                break
            time.sleep(0.5)
    """
)


@pytest.fixture(scope="module")
def bed(
    node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, reference_model: Path
) -> Iterator[OperatorBed]:
    yield from node_operator_bed(node_cluster, tmp_path_factory.mktemp("nodebed"), reference_model)


def _server_pod(bed: OperatorBed) -> str:
    pods = server_pods(bed.cluster, bed.namespace, MODEL, REAL_NODE_PRODUCT)
    assert pods, f"no ready server pod of {MODEL}"
    return str(pods[0]["metadata"]["name"])


def _exec(
    bed: OperatorBed, namespace: str, pod: str, *command: str
) -> subprocess.CompletedProcess[str]:
    return bed.cluster.kubectl(
        "exec", "-n", namespace, pod, "--", *command, check=False, timeout=120
    )


def _run_pod(bed: OperatorBed, namespace: str, name: str, args: list[str]) -> str:
    """A pod of the runtime image that runs `python -c SCRIPT ARGS...`; returns its log."""
    return run_client_pod(bed.cluster, namespace, name, ["python", "-c", *args])


def test_the_operator_runs_as_its_image_user_with_one_leader(bed: OperatorBed) -> None:
    pods = items(
        bed.cluster, "pod", RELEASE_NAMESPACE, "app.kubernetes.io/instance=lipsync-operator"
    )
    names = [str(p["metadata"]["name"]) for p in pods]
    assert len(pods) == 2, names
    assert len(ready_pods(pods)) == 2, [p["status"] for p in pods]
    for pod, name in zip(pods, names, strict=True):
        assert _exec(bed, RELEASE_NAMESPACE, name, "id", "-u").stdout.strip() == str(IMAGE_UID)
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, bed.operator_log(name)
    leader = wait_for(bed.leader, timeout=60, description="an operator leader")
    assert leader in names
    # kubectl logs reaches the container's log through the kubelet: the standby says whom it
    # waits for.
    [standby] = [name for name in names if name != leader]

    def standby_log() -> str:
        return bed.cluster.kubectl("logs", "-n", RELEASE_NAMESPACE, standby).stdout

    waiting = f"is held by {leader}: {standby} waits to take over"
    assert wait_for(lambda: waiting in standby_log(), timeout=60, description="standby log")


@pytest.fixture
def anna(bed: OperatorBed) -> dict[str, Any]:
    """The model applied (again, if an earlier test did) and Ready; its status."""
    apply(bed.cluster, bed.namespace, small_model(MODEL, bed.avatar(MODEL), REAL_NODE_PRODUCT))
    return bed.wait_phase(MODEL, "Ready", timeout=BUILD_TIMEOUT)


def test_a_model_becomes_ready_on_the_real_node(bed: OperatorBed, anna: dict[str, Any]) -> None:
    assert anna["phase"] == "Ready"
    servers = server_pods(bed.cluster, bed.namespace, MODEL, REAL_NODE_PRODUCT)
    assert servers
    assert {p["spec"]["nodeName"] for p in servers} == {REAL_NODE.name}


def test_a_server_container_is_non_root_on_a_read_only_root(
    bed: OperatorBed, anna: dict[str, Any]
) -> None:
    pod = _server_pod(bed)
    assert _exec(bed, bed.namespace, pod, "id", "-u").stdout.strip() == str(IMAGE_UID)
    write = _exec(bed, bed.namespace, pod, "python", "-c", "open('/probe', 'w')")
    assert write.returncode != 0, write
    assert "Read-only file system" in write.stderr, write


def test_frames_stream_through_kubectl_port_forward(bed: OperatorBed, anna: dict[str, Any]) -> None:
    with port_forward(bed.cluster, bed.namespace, f"svc/{MODEL}", 8001) as port:
        run = subprocess.run(
            [LIPSYNC, "bench", "run", "--target", f"127.0.0.1:{port}", "--streams", "1",
             "--frames", "12", "--no-metrics"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    streamed = re.search(r"(\d+)/(\d+) frames, errors 0", output)
    assert streamed, output[-3000:]
    assert int(streamed.group(1)) == int(streamed.group(2)) > 0, output[-3000:]


def test_a_pod_finds_the_model_through_coredns_and_gets_frames(
    bed: OperatorBed, anna: dict[str, Any]
) -> None:
    target = f"{MODEL}.{bed.namespace}.svc:8001"
    log = _run_pod(bed, bed.namespace, "dns-client", [CLIENT_SCRIPT, target])
    frames = re.search(r"frames (\d+) bytes (\d+)", log)
    assert frames, log
    assert int(frames.group(1)) == 8, log
    assert int(frames.group(2)) > 0, log


def test_the_network_policy_admits_only_the_model_namespace(
    bed: OperatorBed, anna: dict[str, Any]
) -> None:
    other = create_namespace(bed.api, "outsider", labels=RESTRICTED)
    try:
        service = kubectl_json(bed.cluster, "get", "service", MODEL, "-n", bed.namespace)
        address = str(service["spec"]["clusterIP"])
        inside = _run_pod(bed, bed.namespace, "grpc-inside", [CONNECT_SCRIPT, address, "8001"])
        outside = _run_pod(bed, other, "grpc-outside", [CONNECT_SCRIPT, address, "8001"])
        metrics = _run_pod(bed, bed.namespace, "metrics-inside", [CONNECT_SCRIPT, address, "8002"])
    finally:
        client.CoreV1Api(bed.api).delete_namespace(other)
    assert inside.strip() == "open", inside
    assert outside.startswith("closed"), outside
    # Metrics only from the metrics namespace (the chart's networkPolicy.metricsNamespace).
    assert metrics.startswith("closed"), metrics
