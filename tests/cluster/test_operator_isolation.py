"""Isolation with the chart's defaults, cluster-wide: what a LipSyncModel author may not ask for
is refused on the model's status before anything is created, and what the operator creates
carries no API credentials and a NetworkPolicy.

One install; the tests run in file order.
"""

from __future__ import annotations

from typing import Any

import pytest

from lipsync_testbed import operatorchart
from lipsync_testbed.lsm import (
    BUILD_SELECTOR,
    apply,
    condition,
    items,
    model,
    model_selector,
    wait_phase,
    wait_serving,
)
from lipsync_testbed.nodebed import REAL_NODE_PRODUCT
from lipsync_testbed.operatorchart import OperatorBed, small_model

pytestmark = pytest.mark.cluster

BUILD_TIMEOUT = 420.0  # an ORT CPU build on a shared 2-core machine
CHILD_KINDS = "jobs,deployments,pods,services,poddisruptionbudgets,networkpolicies"


def document(name: str, avatar: str, **spec: Any) -> dict[str, Any]:
    return small_model(name, avatar, REAL_NODE_PRODUCT, **spec)


def _refused(bed: OperatorBed, name: str) -> dict[str, Any]:
    """The Degraded condition of a model the operator refused (phase Failed)."""
    status = wait_phase(bed.cluster, bed.namespace, name, "Failed", timeout=90)
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "InvalidSpec"
    return degraded


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            "escape",
            {"avatar": {"uri": "pvc://c/../x"}},
            "spec.avatar.uri 'pvc://c/../x': '.' and '..' path segments are not allowed",
        ),
        (
            "root",
            {"avatar": {"uri": "file:///"}},
            "spec.avatar.uri 'file:///': file:// (node paths) is disabled by the operator",
        ),
        (
            "own-image",
            {"images": {"builder": "ghcr.io/lipsync/runtime:mine"}},
            "spec.images.builder 'ghcr.io/lipsync/runtime:mine': image overrides are disabled",
        ),
        (
            "greedy",
            {"gpus": {"products": [], "max": 9}},
            "spec.gpus.max 9: the operator allows at most 8 GPUs per model",
        ),
    ],
)
def test_a_spec_the_policy_refuses_is_failed_on_status_and_creates_nothing(
    bed: OperatorBed, name: str, change: dict[str, Any], message: str
) -> None:
    doc = document(name, "pvc://lipsync-avatars/x")
    doc["spec"].update(change)
    apply(bed.cluster, bed.namespace, doc)
    degraded = _refused(bed, name)
    assert message in degraded["message"], degraded["message"]
    assert items(bed.cluster, CHILD_KINDS, bed.namespace, model_selector(name)) == []
    assert not model(bed.cluster, bed.namespace, name)["status"].get("engines")
    bed.cluster.kubectl("delete", "lsm", name, "-n", bed.namespace)


def _pod_specs(bed: OperatorBed, selector: str) -> list[dict[str, Any]]:
    return [pod["spec"] for pod in items(bed.cluster, "pods", bed.namespace, selector)]


def test_server_and_build_pods_carry_no_token_and_servers_get_a_network_policy(
    bed: OperatorBed,
) -> None:
    cluster, namespace = bed.cluster, bed.namespace
    apply(cluster, namespace, document("tessa", bed.avatar("tessa")))
    wait_phase(cluster, namespace, "tessa", "Ready", timeout=BUILD_TIMEOUT)
    wait_serving(cluster, namespace, "tessa", REAL_NODE_PRODUCT, 1)
    builds = _pod_specs(bed, f"{model_selector('tessa')},{BUILD_SELECTOR}")
    servers = _pod_specs(bed, f"{model_selector('tessa')},{operatorchart.SERVER_SELECTOR}")
    assert builds
    assert servers
    for spec in [*builds, *servers]:
        assert spec["automountServiceAccountToken"] is False
        # The API server's ServiceAccount admission adds a token volume unless told not to.
        projected = [v for v in spec.get("volumes") or [] if "projected" in v]
        assert projected == [], projected
        for container in spec["containers"]:
            paths = {m["mountPath"] for m in container.get("volumeMounts") or []}
            assert "/var/run/secrets/kubernetes.io/serviceaccount" not in paths

    [policy] = items(cluster, "networkpolicies", namespace, model_selector("tessa"))
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert len(items(cluster, "pods", namespace, ",".join(f"{k}={v}" for k, v in selector.items())))
    grpc, metrics = policy["spec"]["ingress"]
    assert grpc["ports"] == [{"protocol": "TCP", "port": 8001}]
    assert grpc["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [namespace]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 8002}]
    assert metrics["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "monitoring"
    ]


def test_cluster_wide_rbac_grants_network_policies_and_no_namespace_listing(
    bed: OperatorBed,
) -> None:
    can = bed.can
    assert can("create", "networkpolicies.networking.k8s.io", "-n", "anywhere")
    assert can("create", "deployments.apps", "-n", "anywhere")
    assert not can("list", "namespaces")
    assert not can("delete", "networkpolicies.networking.k8s.io", "-n", "anywhere")
    assert not can("create", "pods", "-n", bed.namespace)
