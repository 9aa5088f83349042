"""The local test bed behaves like a real cluster with GPU nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed import (
    GpuSpec,
    LocalCluster,
    NodeSpec,
    add_node,
    apply_custom_object,
    finish_pod,
    relabel_node,
    remove_node,
    set_node_ready,
    wait_for,
    watch_events,
)
from lipsync_testbed.processes import is_running

pytestmark = pytest.mark.cluster

H100 = "NVIDIA-H100-80GB-HBM3"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _running_ready(pod: client.V1Pod) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _gpu_pod(name: str, gpus: int, node_selector: dict[str, str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(
            node_selector=node_selector,
            containers=[
                client.V1Container(
                    name="main",
                    image=PAUSE_IMAGE,
                    resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": str(gpus)}),
                )
            ],
        ),
    )


def _failed_scheduling_event(api: client.ApiClient, namespace: str, pod: str) -> str:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod}"
    )
    messages = [e.message or "" for e in events.items if e.reason == "FailedScheduling"]
    return messages[0] if messages else ""


def test_nodes_listed_ready_with_gpu_product(kube_cluster: LocalCluster) -> None:
    def listed() -> dict[str, list[str]]:
        out = kube_cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout
        rows = [line.split() for line in out.strip().splitlines()[1:]]
        by_name = {row[0]: row for row in rows}
        ready = all(row[1] == "Ready" for row in rows)
        return by_name if ready and len(by_name) >= 4 else {}

    rows = wait_for(listed, timeout=60, description="fake node pool Ready in kubectl")
    for name in ("h100-0", "h100-1"):
        assert rows[name][-1] == H100
    assert rows["rtx6000ada-0"][-1] == "NVIDIA-RTX-6000-Ada-Generation"
    # The CPU node has no product label; kubectl prints an empty column.
    assert rows["cpu-0"][-1] != H100

    nodes = json.loads(kube_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    gpus = {n["metadata"]["name"]: n["status"]["allocatable"].get("nvidia.com/gpu") for n in nodes}
    assert gpus["h100-0"] == "1"
    assert gpus["rtx6000ada-0"] == "1"
    assert gpus["cpu-0"] is None
    labels = next(n for n in nodes if n["metadata"]["name"] == "h100-0")["metadata"]["labels"]
    assert labels["nvidia.com/gpu.count"] == "1"
    assert labels["nvidia.com/gpu.compute.major"] == "9"
    assert labels["nvidia.com/gpu.memory"] == "81559"


def test_gpu_deployment_runs_only_on_h100_nodes(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    labels = {"app": "gpu-deploy"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=_gpu_pod("unused", 1, {"nvidia.com/gpu.product": H100}).spec,
    )
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="gpu-deploy"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=template,
        ),
    )
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(kube_namespace, deployment)

    def all_running() -> list[client.V1Pod]:
        pods = _pods(kube_api, kube_namespace, "app=gpu-deploy")
        return pods if len(pods) == 2 and all(_running_ready(p) for p in pods) else []

    pods = wait_for(all_running, timeout=90, description="2 GPU pods Running and Ready")
    assert {p.spec.node_name for p in pods if p.spec} <= {"h100-0", "h100-1"}

    def available() -> bool:
        status = apps.read_namespaced_deployment("gpu-deploy", kube_namespace).status
        return status is not None and status.available_replicas == 2

    wait_for(available, timeout=60, description="deployment available")


def test_pod_wanting_too_many_gpus_stays_pending(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(kube_namespace, _gpu_pod("too-big", 16, {}))
    message = wait_for(
        lambda: _failed_scheduling_event(kube_api, kube_namespace, "too-big"),
        timeout=60,
        description="FailedScheduling event",
    )
    assert "nvidia.com/gpu" in message
    pod = core.read_namespaced_pod("too-big", kube_namespace)
    assert pod.status is not None
    assert pod.status.phase == "Pending"
    assert not pod.spec or not pod.spec.node_name


def test_crd_created_watched_and_server_side_applied(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    group, plural = "testbed.lipsync.dev", "widgets"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": plural, "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    ext = client.ApiextensionsV1Api(kube_api)
    try:
        ext.create_custom_resource_definition(client.V1CustomResourceDefinition.model_validate(crd))
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        status = ext.read_custom_resource_definition(f"{plural}.{group}").status
        conditions = status.conditions if status else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    wait_for(established, timeout=30, description="CRD Established")

    custom = client.CustomObjectsApi(kube_api)

    def apply(size: int) -> dict[str, Any]:
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": kube_namespace},
            "spec": {"size": size},
        }
        return apply_custom_object(kube_api, body, plural=plural, field_manager="testbed-test")

    created = apply(1)
    assert created["spec"]["size"] == 1
    managers = [m["manager"] for m in created["metadata"]["managedFields"]]
    assert "testbed-test" in managers

    # Watch from the created version; the applied change arrives as MODIFIED.
    applied = apply(3)
    assert applied["spec"]["size"] == 3
    seen: list[int] = []
    for event in watch_events(
        custom.list_namespaced_custom_object,
        group,
        "v1",
        kube_namespace,
        plural,
        resource_version=created["metadata"]["resourceVersion"],
        timeout_seconds=20,
    ):
        if event["type"] == "MODIFIED":
            seen.append(event["object"]["spec"]["size"])
            break
    assert seen == [3]


def _job(name: str, command: list[str], backoff_limit: int = 0) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"testbed-job": name}),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="main",
                            image="example.invalid/worker:1",
                            command=command,
                            env=[
                                client.V1EnvVar(name="GREETING", value="hello"),
                                client.V1EnvVar(
                                    name="POD_NAME",
                                    value_from=client.V1EnvVarSource(
                                        field_ref=client.V1ObjectFieldSelector(
                                            field_path="metadata.name"
                                        )
                                    ),
                                ),
                            ],
                        )
                    ],
                ),
            ),
        ),
    )


def _job_condition(api: client.ApiClient, namespace: str, name: str) -> str:
    job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    conditions = job.status.conditions if job.status else None
    for condition in conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return ""


def _terminated_message(api: client.ApiClient, namespace: str, job: str) -> tuple[int, str]:
    (pod,) = _pods(api, namespace, f"batch.kubernetes.io/job-name={job}")
    assert pod.status is not None
    (status,) = pod.status.container_statuses or []
    assert status.state is not None
    terminated = status.state.terminated
    assert terminated is not None
    return terminated.exit_code, terminated.message or ""


def test_finish_pod_drives_job_to_completion(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(kube_namespace, _job("manual", ["true"]))
    pod = wait_for(
        lambda: next(
            (p for p in _pods(kube_api, kube_namespace, "testbed-job=manual") if _running_ready(p)),
            None,
        ),
        timeout=60,
        description="job pod Running",
    )
    assert pod.metadata is not None
    finish_pod(
        kube_api,
        kube_namespace,
        pod.metadata.name or "",
        succeeded=True,
        message='{"engine": "ready"}',
    )
    assert (
        wait_for(
            lambda: _job_condition(kube_api, kube_namespace, "manual"),
            timeout=60,
            description="job manual finished",
        )
        == "Complete"
    )
    assert _terminated_message(kube_api, kube_namespace, "manual") == (0, '{"engine": "ready"}')


def test_adding_node_schedules_pending_gpu_pod(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    product = "NVIDIA-A100-SXM4-80GB"
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        kube_namespace, _gpu_pod("waits-for-a100", 2, {"nvidia.com/gpu.product": product})
    )
    wait_for(
        lambda: _failed_scheduling_event(kube_api, kube_namespace, "waits-for-a100"),
        timeout=60,
        description="FailedScheduling before the node exists",
    )
    spec = NodeSpec(
        name="a100-scaleup-0",
        gpu=GpuSpec(product=product, count=8, memory_mib=81920, compute_major=8, compute_minor=0),
        pool="a100",
    )
    add_node(kube_api, spec)
    try:
        pod = wait_for(
            lambda: next(
                (
                    p
                    for p in _pods(kube_api, kube_namespace, "app=waits-for-a100")
                    if _running_ready(p)
                ),
                None,
            ),
            timeout=90,
            description="pending GPU pod scheduled on the new node",
        )
        assert pod.spec is not None
        assert pod.spec.node_name == "a100-scaleup-0"

        relabel_node(kube_api, "a100-scaleup-0", {"nvidia.com/gpu.product": None, "extra": "yes"})
        node = core.read_node("a100-scaleup-0")
        assert node.metadata is not None
        labels = node.metadata.labels or {}
        assert "nvidia.com/gpu.product" not in labels
        assert labels["extra"] == "yes"
    finally:
        core.delete_namespaced_pod("waits-for-a100", kube_namespace, grace_period_seconds=0)
        remove_node(kube_api, "a100-scaleup-0")


def _taints(core: client.CoreV1Api, name: str) -> set[str]:
    node = core.read_node(name)
    return {t.key for t in (node.spec.taints if node.spec else None) or []}


def _ready_status(core: client.CoreV1Api, name: str) -> str:
    node = core.read_node(name)
    conditions = (node.status.conditions if node.status else None) or []
    return next((c.status for c in conditions if c.type == "Ready"), "")


def test_set_node_ready_makes_a_node_not_ready_and_back(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    name = "notready-0"
    add_node(kube_api, NodeSpec(name=name, pool="notready"))
    try:
        set_node_ready(kube_api, name, False)
        # The node lifecycle controller acts on it as on a dead kubelet's node: it taints it...
        wait_for(
            lambda: (
                "node.kubernetes.io/not-ready" in _taints(core, name)
                or "node.kubernetes.io/unreachable" in _taints(core, name)
            ),
            timeout=60,
            description="NotReady taint on the node",
        )
        # ...and KWOK, which would turn Ready back to True at once, has let it go.
        assert _ready_status(core, name) != "True"

        set_node_ready(kube_api, name, True)
        assert _ready_status(core, name) == "True"
        wait_for(
            lambda: (
                not {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
                & _taints(core, name)
            ),
            timeout=60,
            description="NotReady taints removed",
        )
    finally:
        remove_node(kube_api, name)


def _cli_bed_has_its_node_ready(state_dir: Path) -> None:
    """The test bed `up` started answers, with the one node of its pool Ready."""
    cluster = LocalCluster.attach(state_dir)
    core = client.CoreV1Api(cluster.api_client)
    [node] = core.list_node().items
    assert _ready_status(core, str(node.metadata.name if node.metadata else "")) == "True"


def test_cli_up_down_leaves_no_process(tmp_path: Path, kube_cluster: LocalCluster) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({"pools": [{"name": "solo", "replicas": 1}]}), encoding="utf-8")
    state_dir = tmp_path / "cli-cluster"
    base = [sys.executable, "-m", "lipsync_testbed"]
    common = ["--dir", str(state_dir)]
    up = subprocess.run(
        [
            *base,
            "up",
            *common,
            "--nodepool",
            str(pool),
            "--bin-dir",
            str(kube_cluster.binaries.bin_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    pids = [p["pid"] for p in state["processes"]]
    try:
        assert up.returncode == 0, up.stderr
        assert "KUBECONFIG=" in up.stdout
        assert [p["name"] for p in state["processes"]][-1] == "kwok"
        assert len(pids) == 5
        status = subprocess.run(
            [*base, "status", *common], capture_output=True, text=True, timeout=60, check=False
        )
        assert status.returncode == 0, status.stdout + status.stderr
        _cli_bed_has_its_node_ready(state_dir)
    finally:
        down = subprocess.run(
            [*base, "down", *common], capture_output=True, text=True, timeout=120, check=False
        )
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if is_running(pid)] == []
    # Nothing else refers to the state directory either.
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in cmdline:
                leftovers.append(proc.name)
    assert leftovers == []


def test_helm_installs_chart_and_waits_for_ready(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n", encoding="utf-8"
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "{{ .Release.Name }}"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "helm-demo"}},
            "template": {
                "metadata": {"labels": {"app": "helm-demo"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-RTX-6000-Ada-Generation"},
                    "containers": [
                        {
                            "name": "main",
                            "image": PAUSE_IMAGE,
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }
    (chart / "templates" / "deployment.yaml").write_text(
        yaml.safe_dump(deployment), encoding="utf-8"
    )
    kube_cluster.helm(
        "install", "demo", str(chart), "--namespace", kube_namespace, "--wait", "--timeout", "90s"
    )
    status = json.loads(
        kube_cluster.helm("status", "demo", "--namespace", kube_namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"
    pods = _pods(kube_cluster.api_client, kube_namespace, "app=helm-demo")
    assert {p.spec.node_name for p in pods if p.spec} == {"rtx6000ada-0"}
    assert all(_running_ready(p) for p in pods)
