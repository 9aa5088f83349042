"""The autoscaling test bed's pure parts: GPU catalogue, NodePools, GFD labels, scrape config,
KEDA's registration and certificates."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client

from lipsync_testbed.autoscaling import (
    EXTERNAL_METRICS_APISERVICE,
    keda_registration,
    read_catalog,
    write_catalog,
)
from lipsync_testbed.gfd import node_fix
from lipsync_testbed.gpucatalog import (
    DEFAULT_INSTANCE_TYPES,
    NODEPOOL_LABEL,
    karpenter_instance_types,
    node_pool,
    node_pool_name,
    node_pools,
)
from lipsync_testbed.pki import generate_pki
from lipsync_testbed.prometheus import scrape_config

pytestmark = pytest.mark.unit


def test_instance_types_file_carries_gpu_capacity_and_one_on_demand_offering() -> None:
    rows = {row["name"]: row for row in karpenter_instance_types(DEFAULT_INSTANCE_TYPES)}
    assert rows["h100-80gb-x8"]["resources"]["nvidia.com/gpu"] == "8"
    assert rows["l4-24gb-x4"]["resources"]["nvidia.com/gpu"] == "4"
    offering = rows["l4-24gb-x1"]["offerings"][0]
    assert offering["Price"] == 0.98
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]} in (
        offering["Requirements"]
    )


def test_one_node_pool_per_product_declares_the_product_and_its_instance_types() -> None:
    pools = {p["metadata"]["name"]: p for p in node_pools(DEFAULT_INSTANCE_TYPES)}
    assert sorted(pools) == ["gpu-nvidia-h100-80gb-hbm3", "gpu-nvidia-l4"]
    requirements = {
        r["key"]: r["values"]
        for r in pools["gpu-nvidia-l4"]["spec"]["template"]["spec"]["requirements"]
    }
    assert requirements["nvidia.com/gpu.product"] == ["NVIDIA-L4"]
    assert requirements["node.kubernetes.io/instance-type"] == ["l4-24gb-x1", "l4-24gb-x4"]
    assert pools["gpu-nvidia-l4"]["spec"]["disruption"]["consolidateAfter"] == "5s"


def test_node_pool_limits_and_unknown_product() -> None:
    pool = node_pool("NVIDIA-L4", DEFAULT_INSTANCE_TYPES, consolidate_after="30s", gpu_limit=4)
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pool["spec"]["disruption"]["consolidateAfter"] == "30s"
    with pytest.raises(ValueError, match="NVIDIA-A100"):
        node_pool("NVIDIA-A100", DEFAULT_INSTANCE_TYPES)
    assert node_pool_name("NVIDIA-H100-80GB-HBM3") == "gpu-nvidia-h100-80gb-hbm3"


def _node(labels: dict[str, str], capacity: dict[str, str]) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name="n", labels=labels),
        status=client.V1NodeStatus(capacity=capacity),
    )


def test_gfd_labels_a_karpenter_node_of_the_catalogue_once() -> None:
    labels = {
        NODEPOOL_LABEL: "gpu-nvidia-l4",
        "node.kubernetes.io/instance-type": "l4-24gb-x4",
        "nvidia.com/gpu.product": "NVIDIA-L4",
    }
    fix = node_fix(_node(labels, {"nvidia.com/gpu": "1"}), DEFAULT_INSTANCE_TYPES)
    assert fix.labels["nvidia.com/gpu.count"] == "4"
    assert fix.labels["nvidia.com/gpu.compute.major"] == "8"
    assert fix.labels["nvidia.com/gpu.compute.minor"] == "9"
    assert "nvidia.com/gpu.product" not in fix.labels  # the NodePool already set it
    assert fix.gpu_capacity == "4"
    done = node_fix(
        _node({**labels, **fix.labels}, {"nvidia.com/gpu": "4"}), DEFAULT_INSTANCE_TYPES
    )
    assert not done


def test_gfd_leaves_other_nodes_alone() -> None:
    static = _node({"node.kubernetes.io/instance-type": "l4-24gb-x4"}, {})
    assert not node_fix(static, DEFAULT_INSTANCE_TYPES)
    unknown = _node({NODEPOOL_LABEL: "p", "node.kubernetes.io/instance-type": "m5.large"}, {})
    assert not node_fix(unknown, DEFAULT_INSTANCE_TYPES)


def test_catalog_round_trips_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    write_catalog(path, DEFAULT_INSTANCE_TYPES)
    assert read_catalog(path) == DEFAULT_INSTANCE_TYPES


def test_scrape_config_keeps_annotated_running_pods_on_their_ip_and_port(tmp_path: Path) -> None:
    job = scrape_config(tmp_path / "kubeconfig")["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [
        {"role": "pod", "kubeconfig_file": str(tmp_path / "kubeconfig")}
    ]
    rules = job["relabel_configs"]
    keep = [r["source_labels"][0] for r in rules if r.get("action") == "keep"]
    assert keep == [
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "__meta_kubernetes_pod_phase",
    ]
    address = next(r for r in rules if r.get("target_label") == "__address__")
    assert address["source_labels"] == [
        "__meta_kubernetes_pod_ip",
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
    ]
    assert address["replacement"] == "$1:$2"
    path = next(r for r in rules if r.get("target_label") == "__metrics_path__")
    assert path["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_path"]


def test_keda_registration_points_the_external_metrics_api_at_the_adapter() -> None:
    docs = keda_registration(6443, b"PEM")
    service, apiservice = docs[1], docs[2]
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost"}
    assert apiservice["metadata"]["name"] == EXTERNAL_METRICS_APISERVICE
    assert apiservice["spec"]["service"] == {
        "name": "keda-metrics-apiserver",
        "namespace": "keda",
        "port": 6443,
    }
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == b"PEM"


def test_pki_front_proxy_has_its_own_ca_and_keda_serves_and_connects(tmp_path: Path) -> None:
    pki = generate_pki(tmp_path)
    proxy_ca = x509.load_pem_x509_certificate(pki.front_proxy_ca.cert_pem)
    proxy_client = x509.load_pem_x509_certificate(pki.front_proxy_client.cert_pem)
    cluster_ca = x509.load_pem_x509_certificate(pki.ca.cert_pem)
    assert proxy_client.issuer == proxy_ca.subject != cluster_ca.subject
    keda = x509.load_pem_x509_certificate(pki.keda.cert_pem)
    usages = keda.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = keda.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "keda-metrics-apiserver.keda.svc" in names.get_values_for_type(x509.DNSName)
    assert keda.issuer == cluster_ca.subject
