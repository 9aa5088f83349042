"""The autoscaling test bed: Prometheus scrapes real pods, KEDA scales a Deployment from zero
and back on a Prometheus query, Karpenter launches a GPU node for a pending GPU pod (a real
node that boots under the name Karpenter gave it, labelled as GPU Feature Discovery would, the
pod run there as a container) and removes it once empty."""

from __future__ import annotations

import textwrap
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed import (
    LocalCluster,
    WaitTimeoutError,
    apply_custom_object,
    create_namespace,
    wait_for,
)
from lipsync_testbed.autoscaling import (
    nodepool_nodes,
    nodes_per_nodepool,
    scheduling_report,
    wait_keda_ready,
)
from lipsync_testbed.clientpods import gpu_holder_pod, runtime_image
from lipsync_testbed.gpucatalog import INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, node_pool_name
from lipsync_testbed.prometheus import PrometheusClient
from lipsync_testbed.realnode import REAL_NODE_LABEL, sandbox_image

pytestmark = pytest.mark.cluster

EXPORTER_PORT = 9400
DEMAND_METRIC = "testbed_demand"
# A metrics endpoint whose value the test sets: GET /metrics, PUT /demand <number>.
EXPORTER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    demand = [0.0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"# TYPE testbed_demand gauge\\ntestbed_demand {demand[0]}\\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            demand[0] = float(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
    """
)


def _pod_ip_env() -> dict[str, Any]:
    return {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def _plain(api: client.ApiClient, obj: object) -> dict[str, Any]:
    """An API object as the JSON the API server sent (camelCase keys)."""
    data: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return data


def _running(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod once Running and Ready with an address."""
    pod = _plain(api, client.CoreV1Api(api).read_namespaced_pod(name, namespace))
    status = pod.get("status", {})
    conditions = status.get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod if status.get("phase") == "Running" and ready and status.get("podIP") else None


class Exporter:
    """The exporter pod: its address and the demand it reports."""

    def __init__(self, pod: dict[str, Any]) -> None:
        self.name: str = pod["metadata"]["name"]
        self.ip: str = pod["status"]["podIP"]

    def set_demand(self, value: float) -> None:
        request = urllib.request.Request(
            f"http://{self.ip}:{EXPORTER_PORT}/demand", data=str(value).encode(), method="PUT"
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 204


@pytest.fixture(scope="module")
def namespace(autoscaling_cluster: LocalCluster) -> Iterator[str]:
    api = autoscaling_cluster.api_client
    name = create_namespace(api, "autoscaling-bed")
    yield name
    client.CoreV1Api(api).delete_namespace(name)


def start_exporter(api: client.ApiClient, namespace: str) -> Exporter:
    """The exporter pod Running and Ready (on the CPU node)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "demand-exporter",
            "labels": {"app": "demand-exporter"},
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(EXPORTER_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "exporter",
                    "image": runtime_image(),
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", EXPORTER, "$(POD_IP)", str(EXPORTER_PORT)],
                    "env": [_pod_ip_env()],
                    "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/metrics", "port": EXPORTER_PORT},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    client.CoreV1Api(api).create_namespaced_pod(namespace, client.V1Pod.model_validate(body))
    pod = wait_for(
        lambda: _running(api, namespace, "demand-exporter"),
        timeout=90,
        description="the exporter pod Running and Ready",
    )
    return Exporter(pod)


@pytest.fixture(scope="module")
def exporter(autoscaling_cluster: LocalCluster, namespace: str) -> Exporter:
    return start_exporter(autoscaling_cluster.api_client, namespace)


def _demand_seen(prom: PrometheusClient, namespace: str, value: float) -> bool:
    samples = prom.query(f'{DEMAND_METRIC}{{namespace="{namespace}"}}')
    return len(samples) == 1 and samples[0].value == value


def test_prometheus_scrapes_a_real_pod_on_its_pod_ip(
    autoscaling_cluster: LocalCluster, namespace: str, exporter: Exporter
) -> None:
    prom = autoscaling_cluster.autoscaling_endpoints.prometheus
    exporter.set_demand(2.5)
    wait_for(
        lambda: _demand_seen(prom, namespace, 2.5),
        timeout=60,
        interval=0.5,
        description="Prometheus to scrape the exporter's demand 2.5",
    )
    (sample,) = prom.query(f'{DEMAND_METRIC}{{namespace="{namespace}"}}')
    assert sample.labels["pod"] == exporter.name
    assert sample.labels["node"] == "cpu-0"
    assert sample.labels["app"] == "demand-exporter"
    assert sample.labels["instance"] == f"{exporter.ip}:{EXPORTER_PORT}"
    targets = [t for t in prom.active_targets() if t["labels"].get("namespace") == namespace]
    assert [t["health"] for t in targets] == ["up"]


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {"name": "work", "image": sandbox_image(), "imagePullPolicy": "Never"}
                    ],
                },
            },
        },
    }


def _replicas(api: client.ApiClient, namespace: str, name: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of a Deployment."""
    deployment = _plain(api, client.AppsV1Api(api).read_namespaced_deployment(name, namespace))
    return deployment["spec"].get("replicas", 0), deployment["status"].get("readyReplicas", 0)


def test_keda_scales_a_deployment_from_zero_on_a_prometheus_query_and_back(
    autoscaling_cluster: LocalCluster, namespace: str, exporter: Exporter
) -> None:
    api = autoscaling_cluster.api_client
    wait_keda_ready(api, timeout=120)
    prom = autoscaling_cluster.autoscaling_endpoints.prometheus
    exporter.set_demand(0)
    wait_for(
        lambda: _demand_seen(prom, namespace, 0),
        timeout=60,
        interval=0.5,
        description="Prometheus to see no demand",
    )
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, client.V1Deployment.model_validate(_deployment("worker"))
    )
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "minReplicaCount": 0,
            "maxReplicaCount": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": autoscaling_cluster.autoscaling_endpoints.prometheus_url,
                        "query": f'sum({DEMAND_METRIC}{{namespace="{namespace}"}})',
                        "threshold": "1",
                        "activationThreshold": "0.5",
                    },
                }
            ],
        },
    }
    apply_custom_object(api, scaled_object, plural="scaledobjects", field_manager="test")

    def ready_condition() -> bool:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "keda.sh", "v1alpha1", namespace, "scaledobjects", "worker"
        )
        assert isinstance(obj, dict)
        conditions = obj.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready_condition, timeout=120, description="the ScaledObject Ready")
    # KEDA's first scale to zero can land a moment after the ScaledObject turns Ready.
    wait_for(
        lambda: _replicas(api, namespace, "worker") == (0, 0),
        timeout=60,
        description="the worker scaled to zero with no demand",
    )

    # Demand 3 per threshold 1: KEDA activates the Deployment (0 -> 1) and its HPA, reading
    # the external metric through KEDA's metrics API server, takes it to 3.
    exporter.set_demand(3)
    wait_for(
        lambda: _replicas(api, namespace, "worker") == (3, 3),
        timeout=120,
        interval=1,
        description="the worker Deployment at 3 ready replicas",
    )

    def hpa_metric_at_one_per_pod() -> dict[str, Any] | None:
        hpa = _plain(
            api,
            client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
                "keda-hpa-worker", namespace
            ),
        )
        metrics = hpa.get("status", {}).get("currentMetrics") or []
        if len(metrics) == 1 and metrics[0]["external"]["current"]["averageValue"] == "1":
            return dict(metrics[0])
        return None

    # The HPA KEDA made reads the external metric: 3 over 3 pods once it has synced again.
    metric = wait_for(
        hpa_metric_at_one_per_pod,
        timeout=120,
        interval=1,
        description="the HPA's external metric at 1 per pod",
    )
    assert metric["type"] == "External"

    exporter.set_demand(0)
    wait_for(
        lambda: _replicas(api, namespace, "worker") == (0, 0),
        timeout=120,
        interval=1,
        description="the worker Deployment back at 0 replicas",
    )


def _pod_gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_karpenter_launches_a_labelled_gpu_node_for_a_pending_pod_and_removes_it_empty(
    autoscaling_cluster: LocalCluster, namespace: str
) -> None:
    api = autoscaling_cluster.api_client
    core = client.CoreV1Api(api)
    pool = node_pool_name("NVIDIA-L4")
    assert nodes_per_nodepool(api).get(pool, 0) == 0
    core.create_namespaced_pod(
        namespace, client.V1Pod.model_validate(gpu_holder_pod("l4-job", "NVIDIA-L4"))
    )

    try:
        pod = wait_for(
            lambda: _running(api, namespace, "l4-job"),
            timeout=150,
            interval=1,
            description="the L4 pod Running on a node Karpenter launched",
        )
    except WaitTimeoutError as exc:
        raise WaitTimeoutError(f"{exc}\n{scheduling_report(api, namespace)}") from exc

    def discovered_node() -> dict[str, Any] | None:
        # The pod may start before GPU Feature Discovery has run, as on a real node.
        node = _plain(api, core.read_node(pod["spec"]["nodeName"]))
        return node if "nvidia.com/gpu.count" in node["metadata"]["labels"] else None

    node = wait_for(discovered_node, timeout=30, description="GFD labels on the new node")
    labels = node["metadata"]["labels"]
    assert labels[NODEPOOL_LABEL] == pool
    assert labels[INSTANCE_TYPE_LABEL] == "l4-24gb-x1"  # the cheapest L4 shape for one GPU
    # GPU Feature Discovery's labels, as the operator reads them.
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == (
        "8",
        "9",
    )
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    # A real node under Karpenter's name runs it as a container; its provider ID is Karpenter's.
    assert labels[REAL_NODE_LABEL] == "true"
    assert node["spec"]["providerID"] == f"kwok://{node['metadata']['name']}"
    [container] = pod["status"]["containerStatuses"]
    assert container["containerID"].startswith("containerd://")
    assert nodes_per_nodepool(api) == {pool: 1}

    core.delete_namespaced_pod("l4-job", namespace)
    wait_for(lambda: _pod_gone(api, namespace, "l4-job"), timeout=30, description="pod deleted")
    wait_for(
        lambda: not nodepool_nodes(api, pool),
        timeout=150,
        interval=1,
        description="Karpenter to remove the empty L4 node",
    )
