"""The operator against the local control plane: helm install, apply a LipSyncModel, and the
cluster builds an engine per GPU product (the builder CLI really runs, ORT CPU standing in for
TensorRT), serves it on that product's nodes, follows nodes and spec changes, survives an operator
crash, and cleans up by garbage collection.

The tests share one installed operator and run in file order: the example model first (it takes
every GPU of the default node pool), then a small time-sliced model on a node the tests add.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_core.enginekey import short_key
from lipsync_testbed import (
    GpuSpec,
    JobPodRunner,
    LocalCluster,
    NodeSpec,
    add_node,
    create_namespace,
    remove_node,
    wait_for,
)
from lipsync_testbed.processes import free_port
from lipsync_testbed.versions import repo_root

pytestmark = pytest.mark.cluster

log = logging.getLogger(__name__)

# -- the chart, the operator process, the volumes ------------------------------------------------


CHART = repo_root() / "charts" / "lipsync-operator"
EXAMPLES = repo_root() / "examples"
RELEASE = "lipsync-operator"
RELEASE_NAMESPACE = "lipsync-system"
# What a CPU-only test bed needs: ORT CPU stands in for TensorRT, the cache is a node directory,
# and the builder checks and times each engine on one frame to keep builds short.
CHART_VALUES = {
    "runtime.backend": "onnxruntime-cpu",
    "cache.kind": "hostPath",
    "build.verifySamples": "1",
    "build.measureFrames": "1",
}
LIPSYNC = str(Path(sys.executable).parent / "lipsync")
BUILD_SELECTOR = "app.kubernetes.io/component=engine-build"
BOUND_ANNOTATION = "pv.kubernetes.io/bind-completed"


def helm_install(cluster: LocalCluster) -> list[dict[str, Any]]:
    """``helm install`` the chart; returns the release's rendered objects."""
    sets = [arg for key, value in CHART_VALUES.items() for arg in ("--set", f"{key}={value}")]
    cluster.helm(
        "install", RELEASE, str(CHART),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        *sets, "--wait", "--timeout", "120s",
    )  # fmt: skip
    manifest = cluster.helm("get", "manifest", RELEASE, "--namespace", RELEASE_NAMESPACE).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def helm_uninstall(cluster: LocalCluster) -> None:
    cluster.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)


@dataclass(frozen=True)
class ChartOperator:
    """What the chart's operator Deployment runs: its ServiceAccount, arguments and environment."""

    service_account: str
    args: tuple[str, ...]
    env: Mapping[str, str]

    @classmethod
    def from_release(cls, objects: list[dict[str, Any]]) -> ChartOperator:
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}
        return cls(pod["serviceAccountName"], (*container["command"], *container["args"]), env)


def service_account_kubeconfig(
    cluster: LocalCluster, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates with a TokenRequest token of the ServiceAccount."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
    )
    issued = client.CoreV1Api(cluster.api_client).create_namespaced_service_account_token(
        account, namespace, request
    )
    assert issued.status is not None, "TokenRequest returned no status"
    token = issued.status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text(encoding="utf-8"))
    user = f"system:serviceaccount:{namespace}:{account}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": user, "context": {"cluster": admin["clusters"][0]["name"], "user": user}}
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    path.chmod(0o600)
    return path


class OperatorProcess:
    """``lipsync operator run`` with the chart's arguments and environment, as a subprocess."""

    def __init__(
        self, chart: ChartOperator, kubeconfig: Path, cache_root: Path, log_path: Path
    ) -> None:
        self.chart = chart
        self.kubeconfig = kubeconfig
        self.cache_root = cache_root
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            **self.chart.env,
            # The chart mounts the cache at /cache in the operator pod; here it is a local dir.
            "LIPSYNC_CACHE_LOCAL_ROOT": str(self.cache_root),
            "KUBECONFIG": str(self.kubeconfig),
        }
        command, *args = self.chart.args
        assert command == "lipsync"
        argv = [LIPSYNC, *args, f"--liveness=http://127.0.0.1:{free_port()}/healthz"]
        with self.log_path.open("ab") as out:
            out.write(f"--- starting {argv}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when the operator's pod or node dies."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=30)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def prebound_claim(api: client.ApiClient, namespace: str, claim: str) -> None:
    """A PVC already bound to a PV, as a storage admin provides it (the test bed has no
    provisioner or binder: the claim is created bound)."""
    core = client.CoreV1Api(api)
    volume = f"{namespace}-{claim}"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=volume),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadOnlyMany"],
                storage_class_name="",
                persistent_volume_reclaim_policy="Retain",
                host_path=client.V1HostPathVolumeSource(path=f"/srv/{volume}"),
                claim_ref=client.V1ObjectReference(namespace=namespace, name=claim),
            ),
        )
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=claim, annotations={BOUND_ANNOTATION: "yes"}),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadOnlyMany"],
                storage_class_name="",
                volume_name=volume,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    core.patch_namespaced_persistent_volume_claim_status(
        claim,
        namespace,
        {
            "status": {
                "phase": "Bound",
                "accessModes": ["ReadOnlyMany"],
                "capacity": {"storage": "1Gi"},
            }
        },
    )
    core.patch_persistent_volume_status(volume, {"status": {"phase": "Bound"}})


def delete_volume(api: client.ApiClient, namespace: str, claim: str) -> None:
    try:
        client.CoreV1Api(api).delete_persistent_volume(f"{namespace}-{claim}")
    except ApiException as exc:
        if exc.status != 404:
            raise


# -- reading the cluster --------------------------------------------------------------------


def kubectl_json(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return out


def model(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", "lsm", name, "-n", namespace)


def status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(model(cluster, namespace, name).get("status") or {})


def condition(found: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions") or [] if c["type"] == type_), {})


def engines(found: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["gpuProduct"]: e for e in found.get("engines") or []}


def items(cluster: LocalCluster, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = kubectl_json(cluster, "get", kind, "-n", namespace, "-l", selector)
    return list(found["items"])


def model_selector(name: str) -> str:
    return f"lipsync.dev/model={name}"


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def ready(pod: Mapping[str, Any]) -> bool:
        conditions = pod.get("status", {}).get("conditions") or []
        return (
            pod.get("status", {}).get("phase") == "Running"
            and pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        )

    return [pod for pod in pods if ready(pod)]


def wait_phase(
    cluster: LocalCluster, namespace: str, name: str, phase: str, timeout: float
) -> dict[str, Any]:
    """Wait until the status is ``phase`` for the current generation; returns the status."""

    def reached() -> dict[str, Any] | None:
        found = model(cluster, namespace, name)
        current = found.get("status") or {}
        generation = found["metadata"]["generation"]
        if current.get("phase") == phase and current.get("observedGeneration") == generation:
            return dict(current)
        return None

    return wait_for(reached, timeout=timeout, interval=1.0, description=f"{name} phase {phase}")


H100 = "NVIDIA-H100-80GB-HBM3"
RTX = "NVIDIA-RTX-6000-Ada-Generation"
A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"
CLAIMS = ("lipsync-models", "lipsync-avatars")
MODEL_PATH = "unet328/unet_328.onnx"  # in the lipsync-models claim, as the examples name it
POD_PVC_ROOT = "/mnt/pvc"  # where build Jobs mount the claims their URIs name
POD_CACHE = "/cache"  # where build Jobs mount the engine cache
BUILD_TIMEOUT = 420.0  # two ORT CPU builds at once on a shared 2-core machine

# A small model for the lifecycle tests: one time-sliced T4 with 4 slices, 2 pods per GPU, so a
# build Job and a rollout's surge pod find a free slice while the servers run.
MIRA = {
    "apiVersion": "lipsync.dev/v1alpha1",
    "kind": "LipSyncModel",
    "metadata": {"name": "mira"},
    "spec": {
        "model": {"uri": f"pvc://lipsync-models/{MODEL_PATH}"},
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
    gpu = GpuSpec(product=A100, count=2, memory_mib=81920, compute_major=8, compute_minor=0)
    return NodeSpec(name=f"a100-{index}", pool="a100", gpu=gpu)


# -- fixtures ---------------------------------------------------------------------------------


class Workspace:
    """Local stand-ins for the volumes: the engine cache and the claims' contents."""

    def __init__(self, root: Path, reference_model: Path) -> None:
        self.cache = root / "cache"
        self.pvc_root = root / "pvc"
        self.logs = root / "logs"
        for path in (self.cache, self.logs):
            path.mkdir(parents=True)
        model = self.pvc_root / "lipsync-models" / MODEL_PATH
        model.parent.mkdir(parents=True)
        model.symlink_to(reference_model)
        (self.pvc_root / "lipsync-avatars").mkdir()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, reference_model: Path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("operator"), reference_model)


@pytest.fixture(scope="module")
def chart(kube_cluster: LocalCluster) -> Iterator[ChartOperator]:
    objects = helm_install(kube_cluster)
    yield ChartOperator.from_release(objects)
    helm_uninstall(kube_cluster)


@pytest.fixture(scope="module")
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = create_namespace(kube_api, "operator")
    for claim in CLAIMS:
        prebound_claim(kube_api, name, claim)
    yield name
    client.CoreV1Api(kube_api).delete_namespace(name)
    for claim in CLAIMS:
        delete_volume(kube_api, name, claim)


@pytest.fixture(scope="module")
def runner(
    kube_api: client.ApiClient, namespace: str, workspace: Workspace
) -> Iterator[JobPodRunner]:
    """Runs each build Job's pod: ``lipsync build`` with the Job's arguments, as a process here."""
    runner = JobPodRunner(
        kube_api,
        BUILD_SELECTOR,
        namespace=namespace,
        path_map={POD_PVC_ROOT: str(workspace.pvc_root), POD_CACHE: str(workspace.cache)},
        command_map={"lipsync": [LIPSYNC]},
        timeout=BUILD_TIMEOUT,
        work_dir=workspace.logs / "pods",
    )
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def operator(
    kube_cluster: LocalCluster, chart: ChartOperator, workspace: Workspace
) -> Iterator[OperatorProcess]:
    kubeconfig = service_account_kubeconfig(
        kube_cluster,
        RELEASE_NAMESPACE,
        chart.service_account,
        workspace.logs / "operator.kubeconfig",
    )
    process = OperatorProcess(chart, kubeconfig, workspace.cache, workspace.logs / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _operator_log_on_failure(
    request: pytest.FixtureRequest, workspace: Workspace
) -> Iterator[None]:
    yield
    path = workspace.logs / "operator.log"
    if path.exists():
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-80:]
        log.info("operator log (tail):\n%s", "\n".join(tail))


@pytest.fixture(scope="module")
def t4_node(kube_api: client.ApiClient) -> Iterator[str]:
    add_node(kube_api, T4_NODE)
    yield T4_NODE.name
    remove_node(kube_api, T4_NODE.name)


# -- helpers ----------------------------------------------------------------------------------


def _apply(cluster: LocalCluster, namespace: str, document: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8") as file:
        yaml.safe_dump(document, file)
        file.flush()
        cluster.kubectl("apply", "-n", namespace, "-f", file.name)


def _patch(cluster: LocalCluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "lsm", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def _jobs(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return items(cluster, "jobs", namespace, f"{model_selector(name)},{BUILD_SELECTOR}")


def _deployments(cluster: LocalCluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    found = items(cluster, "deployments", namespace, model_selector(name))
    return {d["metadata"]["labels"]["lipsync.dev/gpu-product"]: d for d in found}


def _server_pods(
    cluster: LocalCluster, namespace: str, name: str, product: str
) -> list[dict[str, Any]]:
    selector = (
        f"app.kubernetes.io/component=server,{model_selector(name)},"
        f"lipsync.dev/gpu-product={product}"
    )
    return ready_pods(items(cluster, "pods", namespace, selector))


def _serving(
    cluster: LocalCluster, namespace: str, name: str, product: str, replicas: int
) -> list[dict[str, Any]]:
    """The product's Deployment wants ``replicas`` and exactly that many pods are Ready."""
    deployment = _deployments(cluster, namespace, name).get(product)
    if deployment is None or deployment["spec"].get("replicas") != replicas:
        return []
    pods = _server_pods(cluster, namespace, name, product)
    return pods if len(pods) == replicas else []


def _wait_serving(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    product: str,
    replicas: int,
    *,
    timeout: float = 120,
) -> list[dict[str, Any]]:
    return wait_for(
        lambda: _serving(cluster, namespace, name, product, replicas),
        timeout=timeout,
        interval=1.0,
        description=f"{replicas} ready {product} pods of {name}",
    )


def _nodes_of(pods: list[dict[str, Any]]) -> Counter[str]:
    return Counter(pod["spec"]["nodeName"] for pod in pods)


def _job_pod_runs(runner: JobPodRunner, namespace: str, job: str) -> list[Any]:
    return [run for key, run in runner.runs.items() if key.startswith(f"{namespace}/{job}-")]


def _map_pod_paths(arg: str, workspace: Workspace) -> str:
    return arg.replace(POD_PVC_ROOT, str(workspace.pvc_root)).replace(
        POD_CACHE, str(workspace.cache)
    )


# -- install -------------------------------------------------------------------------------------


def test_operator_runs_with_the_charts_service_account_and_least_privilege(
    kube_cluster: LocalCluster, chart: ChartOperator, operator: OperatorProcess
) -> None:
    account = f"system:serviceaccount:{RELEASE_NAMESPACE}:{chart.service_account}"

    def can(verb: str, resource: str) -> bool:
        out = kube_cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={account}", "-A", check=False
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
    ]:
        assert not can(verb, resource), f"the chart's role allows {verb} {resource}"
    assert chart.env["LIPSYNC_BACKEND"] == "onnxruntime-cpu"
    assert chart.env["LIPSYNC_CACHE_KIND"] == "hostPath"

    # The operator came up under that account and announced itself in the chart's peering.
    def peers() -> dict[str, Any]:
        peering = kubectl_json(kube_cluster, "get", "clusterkopfpeering", "lipsync-operator")
        return dict(peering.get("status") or {})

    assert wait_for(peers, timeout=60, description="the operator in the peering"), (
        operator.log_tail()
    )
    assert operator.running, operator.log_tail()


# -- the example --------------------------------------------------------------------------------


def test_example_builds_an_engine_per_gpu_product_and_serves_it_on_that_products_nodes(
    kube_cluster: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    runner: JobPodRunner,
    workspace: Workspace,
) -> None:
    kube_cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "lipsyncmodel.yaml"))
    ready = wait_phase(kube_cluster, namespace, "anna", "Ready", timeout=BUILD_TIMEOUT)

    jobs = _jobs(kube_cluster, namespace, "anna")
    by_product = {job["metadata"]["labels"]["lipsync.dev/gpu-product"]: job for job in jobs}
    assert sorted(by_product) == [H100, RTX]
    assert len(jobs) == 2
    built = engines(ready)
    for product, job in by_product.items():
        key = job["metadata"]["annotations"]["lipsync.dev/engine-key"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        (run,) = _job_pod_runs(runner, namespace, job["metadata"]["name"])
        # The pod ran the builder CLI with exactly the Job's arguments (pod paths mapped here;
        # the runner gives the termination-message path a local file of the pod's own).
        termination = container.get("terminationMessagePath", "/dev/termination-log")
        pod_files = str(workspace.logs / "pods")
        argv = [termination if a.startswith(pod_files) else a for a in run.argv]
        assert argv == [LIPSYNC, *(_map_pod_paths(a, workspace) for a in container["args"])]
        assert run.exit_code == 0, run.output()[-2000:]
        result = json.loads(run.message)
        assert result["key"] == key
        assert result["state"] == "Ready"
        assert (
            workspace.cache / "engines" / key.removeprefix("sha256:") / "manifest.json"
        ).is_file()
        engine = built[product]
        assert engine["state"] == "Ready"
        assert engine["key"] == key
        assert engine["psnrDb"] == pytest.approx(result["psnrDb"], abs=0.01)  # status rounds
        assert engine["framesPerSecond"] > 0

    # Exclusive sharing: one pod per GPU, each running replicasPerGPU model instances.
    h100_pods = _wait_serving(kube_cluster, namespace, "anna", H100, 16)
    assert _nodes_of(h100_pods) == {"h100-0": 8, "h100-1": 8}
    rtx_pods = _wait_serving(kube_cluster, namespace, "anna", RTX, 4)
    assert _nodes_of(rtx_pods) == {"rtx6000ada-0": 4}
    args = rtx_pods[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--instances") + 1] == "6"
    assert ready["replicas"] == ready["readyReplicas"] == 20

    table = kube_cluster.kubectl("get", "lsm", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "PHASE"]
    assert table[1].split()[:2] == ["anna", "Ready"]
    assert condition(ready, "EnginesReady")["status"] == "True"


def test_a_new_gpu_product_gets_a_build_then_servers_and_replicas_follow_its_nodes(
    kube_cluster: LocalCluster,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
) -> None:
    try:
        for index in (0, 1):
            add_node(kube_api, _a100(index))
        pods = _wait_serving(kube_cluster, namespace, "anna", A100, 4, timeout=BUILD_TIMEOUT)
        assert _nodes_of(pods) == {"a100-0": 2, "a100-1": 2}
        assert A100 in {
            j["metadata"]["labels"]["lipsync.dev/gpu-product"]
            for j in _jobs(kube_cluster, namespace, "anna")
        }
        wait_for(
            lambda: (
                engines(status(kube_cluster, namespace, "anna")).get(A100, {}).get("state")
                == "Ready"
            ),
            timeout=60,
            description="the A100 engine Ready in the status",
        )

        remove_node(kube_api, "a100-1")
        # The Deployment shrinks at once; the pods left on the deleted node go when the pod
        # garbage collector reaps them (after its quarantine, ~40 s), and are replaced on a100-0.
        wait_for(
            lambda: _nodes_of(_serving(kube_cluster, namespace, "anna", A100, 2)) == {"a100-0": 2},
            timeout=180,
            interval=1.0,
            description="2 ready A100 pods of anna, both on a100-0",
        )
    finally:
        for index in (0, 1):
            remove_node(kube_api, f"a100-{index}")
    wait_for(
        lambda: A100 not in _deployments(kube_cluster, namespace, "anna"),
        timeout=60,
        description="the A100 Deployment deleted with the last A100 node",
    )
    after = wait_phase(kube_cluster, namespace, "anna", "Ready", timeout=60)
    assert sorted(engines(after)) == [H100, RTX]


def test_deleting_the_model_garbage_collects_every_child(
    kube_cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    kinds = (
        "jobs,deployments,replicasets,pods,services,poddisruptionbudgets,horizontalpodautoscalers"
    )
    assert items(kube_cluster, kinds, namespace, model_selector("anna"))
    kube_cluster.kubectl("delete", "lsm", "anna", "-n", namespace, "--wait=true")

    def children() -> list[str]:
        found = items(kube_cluster, kinds, namespace, model_selector("anna"))
        return [f"{o['kind']}/{o['metadata']['name']}" for o in found]

    wait_for(lambda: not children(), timeout=120, interval=1.0, description="anna's children gone")


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
    kube_cluster: LocalCluster, namespace: str, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    document = yaml.safe_load((EXAMPLES / "lipsyncmodel.yaml").read_text(encoding="utf-8"))
    document["metadata"]["name"] = "invalid"
    document["spec"].update(change)
    path = tmp_path / "invalid.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = kube_cluster.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert (
        kube_cluster.kubectl("get", "lsm", "invalid", "-n", namespace, check=False).returncode != 0
    )


# -- lifecycle on a time-sliced node ------------------------------------------------------------


def test_operator_killed_mid_build_makes_no_twin_job_and_converges(
    kube_cluster: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    runner: JobPodRunner,
    t4_node: str,
) -> None:
    _apply(kube_cluster, namespace, MIRA)

    def build_running() -> dict[str, Any] | None:
        jobs = _jobs(kube_cluster, namespace, "mira")
        pods = ready_pods(
            items(kube_cluster, "pods", namespace, f"{model_selector('mira')},{BUILD_SELECTOR}")
        )
        return jobs[0] if len(jobs) == 1 and pods else None

    job = wait_for(build_running, timeout=120, interval=0.5, description="mira's build pod running")
    operator.kill()
    assert not operator.running
    assert status(kube_cluster, namespace, "mira")["phase"] == "Building"
    operator.start()

    ready = wait_phase(kube_cluster, namespace, "mira", "Ready", timeout=BUILD_TIMEOUT)
    (after,) = _jobs(kube_cluster, namespace, "mira")
    assert after["metadata"]["uid"] == job["metadata"]["uid"]
    assert len(_job_pod_runs(runner, namespace, job["metadata"]["name"])) == 1
    assert engines(ready)[T4]["key"] == job["metadata"]["annotations"]["lipsync.dev/engine-key"]
    pods = _wait_serving(kube_cluster, namespace, "mira", T4, 2)
    assert _nodes_of(pods) == {t4_node: 2}


def test_spec_change_builds_the_new_key_first_then_rolls_with_old_pods_serving(
    kube_cluster: LocalCluster, namespace: str, operator: OperatorProcess, runner: JobPodRunner
) -> None:
    old_key = engines(status(kube_cluster, namespace, "mira"))[T4]["key"]
    _patch(kube_cluster, namespace, "mira", {"precision": "fp16"})
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
        new_jobs = [j for j in _jobs(kube_cluster, namespace, "mira") if key_of(j) != old_key]
        pods = _server_pods(kube_cluster, namespace, "mira", T4)
        serving = key_of(_deployments(kube_cluster, namespace, "mira")[T4])
        if serving == old_key:
            if new_jobs and not any(built(j) for j in new_jobs):
                building_seen = True
                # Until the new engine is built, the old one keeps serving at full strength.
                assert len(pods) >= 2
                assert labels(pods) == {short_key(old_key)}
            return None
        # The Deployment serves a new engine: its build Job had finished before the roll.
        jobs_now = _jobs(kube_cluster, namespace, "mira")
        assert any(key_of(j) == serving and built(j) for j in jobs_now), (
            f"rolled to {serving} before its build finished"
        )
        pods = _server_pods(kube_cluster, namespace, "mira", T4)
        return pods if labels(pods) == {short_key(serving)} and len(pods) == 2 else None

    wait_for(
        rolled, timeout=BUILD_TIMEOUT, interval=0.5, description="mira rolled to the fp16 engine"
    )
    assert building_seen, "the new engine was never seen building before the roll"
    ready = wait_phase(kube_cluster, namespace, "mira", "Ready", timeout=60)
    new_key = engines(ready)[T4]["key"]
    assert new_key != old_key
    jobs = _jobs(kube_cluster, namespace, "mira")
    assert [j["metadata"]["annotations"]["lipsync.dev/engine-key"] for j in jobs] == [new_key]


def test_failed_build_reports_the_builders_reason_and_the_previous_engine_keeps_serving(
    kube_cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    serving_key = engines(status(kube_cluster, namespace, "mira"))[T4]["key"]
    good_uri = MIRA["spec"]["model"]["uri"]  # type: ignore[index]
    _patch(
        kube_cluster,
        namespace,
        "mira",
        {"model": {"uri": "pvc://lipsync-models/unet328/missing.onnx"}},
    )

    degraded = wait_phase(kube_cluster, namespace, "mira", "Degraded", timeout=120)
    engines_ready = condition(degraded, "EnginesReady")
    assert engines_ready["status"] == "False"
    assert engines_ready["reason"] == "BuildFailed"
    assert "missing.onnx: not found" in engines_ready["message"]
    assert engines(degraded)[T4]["state"] == "Failed"
    deployment = _deployments(kube_cluster, namespace, "mira")[T4]
    assert deployment["metadata"]["annotations"]["lipsync.dev/engine-key"] == serving_key
    assert len(_serving(kube_cluster, namespace, "mira", T4, 2)) == 2
    assert condition(degraded, "Available")["status"] == "True"
    events = kubectl_json(
        kube_cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=mira",
    )["items"]
    assert any(e["reason"] == "EngineFailed" and "not found" in e["message"] for e in events)

    _patch(kube_cluster, namespace, "mira", {"model": {"uri": good_uri}})
    restored = wait_phase(kube_cluster, namespace, "mira", "Ready", timeout=60)
    assert engines(restored)[T4]["key"] == serving_key


def test_hand_scaling_within_autoscaling_bounds_is_not_undone(
    kube_cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    _patch(
        kube_cluster,
        namespace,
        "mira",
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}},
    )
    wait_phase(kube_cluster, namespace, "mira", "Ready", timeout=60)
    (hpa,) = items(kube_cluster, "horizontalpodautoscalers", namespace, model_selector("mira"))
    deployment = _deployments(kube_cluster, namespace, "mira")[T4]["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)

    kube_cluster.kubectl("scale", "deployment", deployment, "-n", namespace, "--replicas=3")
    _wait_serving(kube_cluster, namespace, "mira", T4, 3)
    # Any spec change makes the operator reconcile; one that leaves the engine key alone.
    _patch(kube_cluster, namespace, "mira", {"batching": {"maxQueueDelayMicroseconds": 2000}})
    wait_phase(kube_cluster, namespace, "mira", "Ready", timeout=60)
    pods = _wait_serving(kube_cluster, namespace, "mira", T4, 3)
    assert len(pods) == 3
