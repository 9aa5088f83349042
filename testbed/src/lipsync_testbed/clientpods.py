"""Client pods: the runtime image (`lipsync bench`, the gRPC client, Python) run as a pod under
PodSecurity `restricted`, for traffic that must come from inside the cluster (Service names
through CoreDNS, ClusterIPs through kube-proxy, NetworkPolicy)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

from kubernetes import client

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.lsm import kubectl_json
from lipsync_testbed.nodebed import IMAGE_UID, app_version
from lipsync_testbed.nodes import GPU_PRODUCT_LABEL, GPU_RESOURCE
from lipsync_testbed.waiting import wait_for


def runtime_image() -> str:
    return f"ghcr.io/lipsync/runtime:{app_version()}-cpu"


SCRATCH = "/tmp"  # an emptyDir: the root file system is read-only
RESULT_MARKER = "--- bench result ---"


def gpu_holder_pod(name: str, product: str) -> dict[str, Any]:
    """A pod that holds one GPU of `product` and sleeps: what brings a node of it."""
    pod = client_pod(name, ["python", "-c", "import time; time.sleep(3600)"])
    spec = pod["spec"]
    spec["terminationGracePeriodSeconds"] = 1
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [product]}
                        ]
                    }
                ]
            }
        }
    }
    spec["containers"][0]["resources"] = {
        "requests": {GPU_RESOURCE: "1", "cpu": "100m"},
        "limits": {GPU_RESOURCE: "1"},
    }
    return pod


def client_pod(name: str, command: Sequence[str]) -> dict[str, Any]:
    """A pod of the runtime image that runs `command` once, as `restricted` requires, with a
    writable scratch directory."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": IMAGE_UID,
                "runAsGroup": IMAGE_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": runtime_image(),
                    "imagePullPolicy": "Never",
                    "command": list(command),
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def start_client_pod(
    cluster: LocalCluster, namespace: str, name: str, command: Sequence[str]
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=json.dumps(client_pod(name, command))
    )


def finished_client_pod(
    cluster: LocalCluster, namespace: str, name: str, timeout: float
) -> tuple[str, str]:
    """Wait for the pod to finish; returns its phase (Succeeded/Failed) and log."""

    def finished() -> str | None:
        phase = kubectl_json(cluster, "get", "pod", name, "-n", namespace)["status"]["phase"]
        return str(phase) if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, timeout=timeout, interval=1.0, description=f"pod {namespace}/{name}")
    log = client.CoreV1Api(cluster.api_client).read_namespaced_pod_log(name, namespace)
    return phase, str(log)


def run_client_pod(
    cluster: LocalCluster, namespace: str, name: str, command: Sequence[str], timeout: float = 240
) -> str:
    """Run `command` in a client pod to completion; returns its log (AssertionError if it
    failed)."""
    start_client_pod(cluster, namespace, name, command)
    phase, log = finished_client_pod(cluster, namespace, name, timeout)
    assert phase == "Succeeded", log
    return log


def bench_command(args: Sequence[str]) -> list[str]:
    """`lipsync bench run ARGS` writing its result to a file, then the file after a marker:
    the progress lines (stderr) cannot interleave with it in the pod's log."""
    out = f"{SCRATCH}/result.json"
    run = shlex.join(["lipsync", "bench", "run", *args, "-o", out])
    return ["sh", "-c", f"{run} && echo {shlex.quote(RESULT_MARKER)} && cat {out}"]


def bench_result(log: str) -> dict[str, Any]:
    """The result JSON of a `bench_command` pod's log."""
    _, marker, rest = log.rpartition(RESULT_MARKER + "\n")
    if not marker:
        raise ValueError(f"no bench result in the log:\n{log[-2000:]}")
    result: dict[str, Any] = json.loads(rest)
    return result
