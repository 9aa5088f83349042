"""The project's Helm chart on the test bed: the settings a CPU-only test bed needs, and who leads.

``helm install`` of ``charts/lipsync-operator`` with ``TESTBED_VALUES`` runs the operator's own
Deployment pods (the local kubelet runs them), which elect a leader through their Lease, build
engines with ONNX Runtime CPU standing in for TensorRT, and serve from real server pods.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.kubelet import PodRunner
from lipsync_testbed.resources import create_namespace, prebound_claim
from lipsync_testbed.versions import repo_root
from lipsync_testbed.waiting import wait_for

CHART = repo_root() / "charts" / "lipsync-operator"
RELEASE = "lipsync"
RELEASE_NAMESPACE = "lipsync-system"
LEASE = "lipsync-operator"
# Every other value stays the chart's default (2 replicas, leader election, the images).
TESTBED_VALUES: dict[str, str] = {
    "runtime.backend": "onnxruntime-cpu",  # no TensorRT without a GPU
    "cache.kind": "hostPath",  # one fake node file system, no ReadWriteMany storage
    "server.listenAddress": "$(POD_IP)",  # every pod shares the host's ports
}
# Engine builds check and time each engine on one frame (the machine is small).
FAST_BUILD_VALUES: dict[str, str] = {"build.verifySamples": "1", "build.measureFrames": "1"}


def helm_set_args(values: Mapping[str, str]) -> list[str]:
    """``--set`` arguments (helm reads numbers as numbers, anything else as a string)."""
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def install(
    cluster: LocalCluster,
    values: Mapping[str, str] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
) -> list[dict[str, Any]]:
    """``helm install`` the chart with the test bed's values (plus ``values``); returns the
    release's rendered objects."""
    chosen = {**TESTBED_VALUES, **(values or {})}
    cluster.helm(
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
        *helm_set_args(chosen), "--wait", "--timeout", "180s",
        timeout=240,
    )  # fmt: skip
    manifest = cluster.helm("get", "manifest", release, "--namespace", namespace).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def uninstall(
    cluster: LocalCluster, *, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> None:
    cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)


def leader(api: client.ApiClient, namespace: str = RELEASE_NAMESPACE, lease: str = LEASE) -> str:
    """The pod that holds the operator's Lease ('' when none does)."""
    try:
        found = client.CoordinationV1Api(api).read_namespaced_lease(lease, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str((found.spec.holder_identity if found.spec else None) or "")


def wait_leader(
    api: client.ApiClient,
    *,
    namespace: str = RELEASE_NAMESPACE,
    lease: str = LEASE,
    other_than: str = "",
    timeout: float = 120.0,
) -> str:
    """Wait until a pod (other than ``other_than``) holds the Lease; returns its name."""

    def holder() -> str | None:
        name = leader(api, namespace, lease)
        return name if name and name != other_than else None

    return wait_for(holder, timeout=timeout, interval=0.5, description=f"a leader of {lease}")


def operator_pods(cluster: LocalCluster, namespace: str = RELEASE_NAMESPACE) -> list[str]:
    pods = client.CoreV1Api(cluster.api_client).list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=lipsync-operator"
    )
    return sorted(p.metadata.name for p in pods.items if p.metadata and p.metadata.name)


# -- a whole operator test bed: kubelet, chart, a namespace with the examples' claims ----------


LIPSYNC = str(Path(sys.executable).parent / "lipsync")
# Where the chart's hostPath cache and the examples' claims live on the (one) fake node.
NODE_LIPSYNC = "/var/lib/lipsync"
CLAIMS = {"lipsync-models": f"{NODE_LIPSYNC}/models", "lipsync-avatars": f"{NODE_LIPSYNC}/avatars"}
MODEL_PATH = "unet328/unet_328.onnx"  # in the lipsync-models claim, as the examples name it


@dataclass(frozen=True)
class OperatorBed:
    """The chart installed, the kubelet running its pods, a namespace with the example claims."""

    cluster: LocalCluster
    kubelet: PodRunner
    objects: list[dict[str, Any]]
    namespace: str

    def host_dir(self, pod_host_path: str) -> Path:
        """The directory here behind a hostPath (or a claim bound to one) on the fake node."""
        return self.kubelet.layout.host_path(pod_host_path)

    def cache_dir(self) -> Path:
        return self.host_dir(f"{NODE_LIPSYNC}/cache")

    def avatar(self, name: str) -> Path:
        """Write a small demo avatar into the avatars claim (``pvc://lipsync-avatars/NAME``)."""
        path = self.host_dir(CLAIMS["lipsync-avatars"]) / name
        if not path.exists():
            subprocess.run(
                [LIPSYNC, "avatar", "demo", "-o", str(path), "--frames", "4",
                 "--width", "320", "--height", "240"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        return path

    def operator_log(self, pod: str) -> str:
        return self.kubelet.log(RELEASE_NAMESPACE, pod)

    def leader(self) -> str:
        return leader(self.cluster.api_client)


def operator_bed(
    cluster: LocalCluster, work_dir: Path, reference_model: Path, values: dict[str, str]
) -> Iterator[OperatorBed]:
    """Generator for a module fixture: kubelet, chart, model namespace; all removed after."""
    kubelet = PodRunner(
        cluster.new_api_client(),
        rule=cluster.local_pods,
        work_dir=work_dir,
        restart_backoff=(1.0, 8.0),
    ).start()
    model = kubelet.layout.host_path(CLAIMS["lipsync-models"]) / MODEL_PATH
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference_model, model)
    api = cluster.api_client
    objects = install(cluster, values)
    namespace = create_namespace(api, "models")
    volumes = [prebound_claim(api, namespace, claim, path) for claim, path in CLAIMS.items()]
    try:
        yield OperatorBed(cluster, kubelet, objects, namespace)
    finally:
        core = client.CoreV1Api(api)
        core.delete_namespace(namespace)
        uninstall(cluster)
        for volume in volumes:
            core.delete_persistent_volume(volume)
        kubelet.stop()
