"""The operator installed from its Helm chart on the test bed's real nodes.

`installed_bed(cluster, work_dir, values, ...)` `helm install`s the chart with `values` and
creates a namespace with the claims the examples name (`lipsync-models` holding the reference
UNet-328, `lipsync-avatars`). It yields an `OperatorBed` and removes everything again, so
modules can each install their own chart one after another; `nodebed.node_operator_bed` is the
module fixture built on it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.resources import create_namespace, prebound_claim
from lipsync_testbed.versions import repo_root
from lipsync_testbed.waiting import wait_for

log = logging.getLogger(__name__)

CHART = repo_root() / "charts" / "lipsync-operator"
RELEASE = "lipsync-operator"
RELEASE_NAMESPACE = "lipsync-system"
LEASE = "lipsync-operator"  # the chart's leaderElection.leaseName
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
# Engine builds check and time each engine on one frame (the machine is small).
FAST_BUILD_VALUES: dict[str, str] = {"build.verifySamples": "1", "build.measureFrames": "1"}
CLAIMS = ("lipsync-models", "lipsync-avatars")
CACHE_CLAIM = "lipsync-engine-cache"  # the chart's cache.claimName
MODEL_PATH = "unet328/unet_328.onnx"  # in the lipsync-models claim, as the examples name it
MODEL_URI = f"pvc://lipsync-models/{MODEL_PATH}"
SERVER_SELECTOR = "app.kubernetes.io/component=server"
LIPSYNC = str(Path(sys.executable).parent / "lipsync")


@dataclass(frozen=True)
class OperatorBed:
    """An installed chart and a namespace for models."""

    cluster: LocalCluster
    namespace: str
    work_dir: Path
    objects: tuple[dict[str, Any], ...] = ()  # the release's rendered objects

    @property
    def api(self) -> client.ApiClient:
        return self.cluster.api_client

    def avatar(self, name: str) -> str:
        """A small demo avatar in the avatars claim; returns its `pvc://` URI."""
        path = self.work_dir / "claims" / "lipsync-avatars" / name
        if not path.exists():
            subprocess.run(
                [LIPSYNC, "avatar", "demo", "-o", str(path), "--frames", "4",
                 "--width", "320", "--height", "240"],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
        return f"pvc://lipsync-avatars/{name}"

    def cache_dir(self) -> Path:
        """The engine cache on the host (the chart's hostPath)."""
        return self.work_dir / "cache"

    def rendered(self, kind: str) -> dict[str, Any]:
        """The release's (first) object of ``kind``, as helm rendered it."""
        return next(o for o in self.objects if o["kind"] == kind)

    def can(self, *args: str) -> bool:
        """``kubectl auth can-i ARGS`` as the operator's service account."""
        account = self.rendered("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{account}"
        out = self.cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False)
        return out.stdout.strip() == "yes"

    def operator_pods(self) -> list[str]:
        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            RELEASE_NAMESPACE, label_selector=OPERATOR_SELECTOR
        )
        return sorted(str(p.metadata.name) for p in pods.items if p.metadata is not None)

    def operator_log(self, pod: str) -> str:
        return str(
            client.CoreV1Api(self.api).read_namespaced_pod_log(
                pod, RELEASE_NAMESPACE, container="operator"
            )
        )

    def leader(self) -> str:
        """The operator pod holding the election Lease ('' when none does)."""
        return leader(self.api)

    # -- models -------------------------------------------------------------------------

    def apply_model(self, document: Mapping[str, Any]) -> None:
        body = {**document, "metadata": {**document["metadata"], "namespace": self.namespace}}
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            "lipsync.dev", "v1alpha1", self.namespace, "lipsyncmodels", body
        )

    def patch_model(self, name: str, spec: Mapping[str, Any]) -> None:
        self.cluster.kubectl(
            "patch", "lsm", name, "-n", self.namespace, "--type=merge",
            "-p", json.dumps({"spec": dict(spec)}),
        )  # fmt: skip

    def model(self, name: str) -> dict[str, Any]:
        found = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "lipsync.dev", "v1alpha1", self.namespace, "lipsyncmodels", name
        )
        if not isinstance(found, dict):
            raise TypeError(f"unexpected LipSyncModel {name}: {found!r}")
        return found

    def wait_phase(self, name: str, phase: str, timeout: float) -> dict[str, Any]:
        """Wait until the model's status is `phase` for its current generation."""

        def reached() -> dict[str, Any] | None:
            found = self.model(name)
            status = found.get("status") or {}
            current = status.get("observedGeneration") == found["metadata"]["generation"]
            return dict(status) if current and status.get("phase") == phase else None

        return wait_for(reached, timeout=timeout, interval=1.0, description=f"{name} {phase}")

    def deployment(self, name: str, product: str) -> client.V1Deployment | None:
        found = client.AppsV1Api(self.api).list_namespaced_deployment(
            self.namespace,
            label_selector=f"lipsync.dev/model={name},lipsync.dev/gpu-product={product}",
        )
        return found.items[0] if found.items else None

    def server_pods(self, name: str, product: str) -> list[client.V1Pod]:
        return list(
            client.CoreV1Api(self.api)
            .list_namespaced_pod(
                self.namespace,
                label_selector=(
                    f"{SERVER_SELECTOR},lipsync.dev/model={name},lipsync.dev/gpu-product={product}"
                ),
            )
            .items
        )

    def ready_servers(self, name: str, product: str) -> list[client.V1Pod]:
        """Server pods Ready and not being deleted."""
        return [pod for pod in self.server_pods(name, product) if pod_ready(pod)]

    def build_jobs(self, name: str) -> list[client.V1Job]:
        return list(
            client.BatchV1Api(self.api)
            .list_namespaced_job(
                self.namespace,
                label_selector=f"lipsync.dev/model={name},app.kubernetes.io/component=engine-build",
            )
            .items
        )

    def wait_serving(
        self, name: str, product: str, replicas: int, timeout: float
    ) -> list[client.V1Pod]:
        """The product's Deployment wants `replicas` and exactly that many servers are Ready."""

        def serving() -> list[client.V1Pod] | None:
            deployment = self.deployment(name, product)
            if deployment is None or deployment.spec is None:
                return None
            if deployment.spec.replicas != replicas:
                return None
            pods = self.ready_servers(name, product)
            return pods if len(pods) == replicas else None

        return wait_for(
            serving,
            timeout=timeout,
            interval=1.0,
            description=f"{replicas} ready {product} servers of {name}",
        )


def small_model(name: str, avatar: str, product: str, **spec: Any) -> dict[str, Any]:
    """A LipSyncModel light enough to run here: the reference UNet in fp32 on one product, one
    instance per GPU, batches of one; ``spec`` adds or replaces fields."""
    return {
        "apiVersion": "lipsync.dev/v1alpha1",
        "kind": "LipSyncModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": MODEL_URI},
            "avatar": {"uri": avatar},
            "precision": "fp32",
            "gpus": {"products": [product]},
            "replicasPerGPU": 1,
            "batching": {"maxBatch": 1},
            **spec,
        },
    }


def pod_ready(pod: client.V1Pod) -> bool:
    if pod.metadata is None or pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def install(cluster: LocalCluster, values: Mapping[str, str]) -> list[dict[str, Any]]:
    """``helm install`` the chart (``--set``: helm reads numbers as numbers, the rest as
    strings); returns the release's rendered objects."""
    sets = [a for key, value in values.items() for a in ("--set", f"{key}={value}")]
    cluster.helm(
        "install", RELEASE, str(CHART),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        *sets, "--wait", "--timeout", "180s",
        timeout=240,
    )  # fmt: skip
    manifest = cluster.helm("get", "manifest", RELEASE, "--namespace", RELEASE_NAMESPACE).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def leader(api: client.ApiClient) -> str:
    """The pod that holds the operator's Lease ('' when none does)."""
    try:
        found = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, RELEASE_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str((found.spec.holder_identity if found.spec else None) or "")


def wait_leader(api: client.ApiClient, *, other_than: str = "", timeout: float = 120.0) -> str:
    """Wait until a pod (other than ``other_than``) holds the Lease; returns its name."""

    def holder() -> str | None:
        name = leader(api)
        return name if name and name != other_than else None

    return wait_for(holder, timeout=timeout, interval=0.5, description=f"a leader of {LEASE}")


def _wait_no_pods(api: client.ApiClient, namespace: str, timeout: float) -> None:
    core = client.CoreV1Api(api)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items,
        timeout=timeout,
        description=f"no pods left in {namespace}",
    )


def installed_bed(
    cluster: LocalCluster,
    work_dir: Path,
    values: Mapping[str, str],
    *,
    namespaced: bool,
    claim_root: str,
    namespace_labels: Mapping[str, str] | None = None,
    cache_claim: str | None = None,
) -> Iterator[OperatorBed]:
    """`helm install` plus a models namespace whose claims are hostPath volumes under
    `claim_root` (and, with `cache_claim`, the engine cache claim on that node path)."""
    api = cluster.api_client
    core = client.CoreV1Api(api)
    namespace = create_namespace(api, "models", labels=namespace_labels)
    volumes: list[str] = []
    try:
        for claim in CLAIMS:
            volumes.append(
                prebound_claim(
                    api, namespace, claim, f"{claim_root}/{claim}", access_mode="ReadOnlyMany"
                )
            )
        if cache_claim is not None:
            volumes.append(prebound_claim(api, namespace, CACHE_CLAIM, cache_claim))
        scope = {"watchNamespaces": f"{{{namespace}}}"} if namespaced else {}
        objects = install(cluster, {**FAST_BUILD_VALUES, **scope, **values})
        yield OperatorBed(cluster, namespace, work_dir, tuple(objects))
    finally:
        core.delete_namespace(namespace)
        try:
            _wait_no_pods(api, namespace, timeout=120)
        finally:
            cluster.helm(
                "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False
            )
            _wait_no_pods(api, RELEASE_NAMESPACE, timeout=120)
            try:
                client.CoordinationV1Api(api).delete_namespaced_lease(LEASE, RELEASE_NAMESPACE)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            for volume in volumes:
                core.delete_persistent_volume(volume)


@dataclass(frozen=True)
class ServingSample:
    """One look at a product's servers: the Deployment's replicas, Ready pods, running builds."""

    at: float  # time.monotonic()
    replicas: int | None
    ready: int
    builds_running: int


class ServingSampler:
    """Samples a model's product every `interval` seconds in a thread, while in the block."""

    def __init__(self, bed: OperatorBed, model: str, product: str, interval: float = 0.5) -> None:
        self.bed, self.model, self.product, self.interval = bed, model, product, interval
        self.samples: list[ServingSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="serving-sampler", daemon=True)

    def sample(self) -> ServingSample:
        deployment = self.bed.deployment(self.model, self.product)
        replicas = deployment.spec.replicas if deployment and deployment.spec else None
        running = sum(
            1 for job in self.bed.build_jobs(self.model) if job.status and job.status.active
        )
        ready = len(self.bed.ready_servers(self.model, self.product))
        return ServingSample(time.monotonic(), replicas, ready, running)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except ApiException as exc:  # an API blip loses one sample, not the test
                log.warning("sample failed: %s", exc)
            self._stop.wait(self.interval)

    def __enter__(self) -> ServingSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def min_ready(self) -> int:
        return min(s.ready for s in self.samples)


def disruption_floor(bed: OperatorBed, model: str, replicas: int) -> int:
    """Fewest ready servers the model's PodDisruptionBudget allows out of `replicas`."""
    budgets = client.PolicyV1Api(bed.api).list_namespaced_pod_disruption_budget(
        bed.namespace, label_selector=f"lipsync.dev/model={model}"
    )
    if len(budgets.items) != 1 or budgets.items[0].spec is None:
        raise ValueError(f"expected one PodDisruptionBudget for {model}, got {budgets.items}")
    unavailable = budgets.items[0].spec.max_unavailable
    if isinstance(unavailable, str) and unavailable.endswith("%"):
        # Percentages round up, as the disruption controller computes them.
        allowed = math.ceil(int(unavailable[:-1]) * replicas / 100)
    else:
        allowed = int(unavailable or 0)
    return max(0, replicas - allowed)
