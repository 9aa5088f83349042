"""The chart in namespaced mode (``watchNamespaces``) with image overrides and one node path
prefix allowed: the operator's rights end at its namespaces, models elsewhere are never touched,
a model's own builder image gets its own engine key and writes only a cache directory of the
model's own, and a file:// avatar serves from under the allowed prefix only.

One install; the tests run in file order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lipsync_testbed import LocalCluster, operatorchart
from lipsync_testbed.clientpods import client_pod
from lipsync_testbed.lsm import (
    apply,
    deployments,
    engines,
    items,
    jobs,
    kubectl_json,
    model,
    model_selector,
    patch_spec,
    status,
    wait_phase,
    wait_serving,
)
from lipsync_testbed.modelstore import private_model_store
from lipsync_testbed.nodebed import REAL_NODE, REAL_NODE_PRODUCT, app_version, node_operator_bed
from lipsync_testbed.nodes import GPU_RESOURCE, set_node_gpus
from lipsync_testbed.operatorchart import OperatorBed, small_model
from lipsync_testbed.resources import create_namespace
from lipsync_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

PRODUCT = REAL_NODE_PRODUCT
BUILD_TIMEOUT = 420.0  # an ORT CPU build on a shared 2-core machine
# A tenant's own builder: another tag of the runtime image, on every node.
OWN_BUILDER = "ghcr.io/lipsync/runtime:tenant-build"
# Pods that mount node paths (file:// sources) are refused where PodSecurity enforces
# `restricted` or `baseline`: this models namespace enforces nothing.
PRIVILEGED = {"pod-security.kubernetes.io/enforce": "privileged"}


@pytest.fixture(scope="module")
def bed(
    node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, reference_model: Path
) -> Iterator[OperatorBed]:
    for node in node_cluster.real_nodes:
        node.tag_image(f"ghcr.io/lipsync/runtime:{app_version()}-cpu", OWN_BUILDER)
    work_dir = tmp_path_factory.mktemp("namespaced")
    yield from node_operator_bed(
        node_cluster,
        work_dir,
        reference_model,
        {
            "images.allowOverrides": "true",
            "sources.allowedHostPaths": f"{{{_avatars_path(work_dir)}}}",
        },
        namespaced=True,
        namespace_labels=PRIVILEGED,
    )


def _avatars_path(work_dir: Path) -> Path:
    """The avatars claim's directory on the nodes (what a file:// URI names)."""
    return work_dir / "claims" / "lipsync-avatars"


@pytest.fixture(scope="module")
def other_namespace(bed: OperatorBed) -> Iterator[str]:
    name = create_namespace(bed.api, "unwatched")
    yield name
    client.CoreV1Api(bed.api).delete_namespace(name)


def document(name: str, avatar: str, **spec: Any) -> dict[str, Any]:
    return small_model(name, avatar, PRODUCT, **spec)


def test_namespaced_rbac_ends_at_the_watched_namespace(
    bed: OperatorBed, other_namespace: str
) -> None:
    can = bed.can
    watched, other = bed.namespace, other_namespace
    for verb, resource in [
        ("create", "deployments.apps"),
        ("create", "jobs.batch"),
        ("patch", "lipsyncmodels.lipsync.dev/status"),
        ("create", "networkpolicies.networking.k8s.io"),
        ("create", "events"),
    ]:
        assert can(verb, resource, "-n", watched), f"no {verb} {resource} in {watched}"
        assert not can(verb, resource, "-n", other), f"{verb} {resource} in {other}"
    assert not can("list", "lipsyncmodels.lipsync.dev", "-A")
    assert not can("create", "deployments.apps", "-A")
    assert not can("get", "secrets", "-n", watched)
    assert not can("create", "pods", "-n", watched)
    # Cluster-scoped reads for GPU capacity only.
    assert can("watch", "nodes")
    assert can("list", "pods", "-A")
    assert not can("patch", "nodes")
    assert not can("list", "namespaces")
    assert [b["kind"] for b in bed.objects if b["kind"] == "ClusterRoleBinding"] == [
        "ClusterRoleBinding"
    ]
    assert {r["metadata"]["namespace"] for r in bed.objects if r["kind"] == "RoleBinding"} == {
        watched,
        operatorchart.RELEASE_NAMESPACE,
    }


def test_a_file_uri_outside_the_allowed_prefix_is_refused(bed: OperatorBed) -> None:
    outside = f"file://{bed.work_dir / 'claims' / 'lipsync-models'}"
    apply(bed.cluster, bed.namespace, document("nosy", outside))
    failed = wait_phase(bed.cluster, bed.namespace, "nosy", "Failed", timeout=90)
    degraded = next(c for c in failed["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert f"file:// paths must be under {_avatars_path(bed.work_dir)}" in degraded["message"]
    assert (
        items(bed.cluster, "jobs,deployments,services", bed.namespace, "lipsync.dev/model=nosy")
        == []
    )


def _settled(bed: OperatorBed, name: str) -> dict[str, Any] | None:
    found = status(bed.cluster, bed.namespace, name)
    return found if found.get("phase") in ("Ready", "Failed") else None


def _delete_model(bed: OperatorBed, name: str) -> None:
    """Delete a model and wait for its pods to go (their GPU is free again)."""
    bed.cluster.kubectl("delete", "lsm", name, "-n", bed.namespace, "--wait=false")
    wait_for(
        lambda: items(bed.cluster, "pods", bed.namespace, model_selector(name)) == [],
        timeout=120,
        description=f"{name}'s pods gone",
    )


def test_a_private_model_builds_with_its_credentials_and_they_appear_nowhere(
    bed: OperatorBed, reference_model: Path, tmp_path: Path
) -> None:
    """A model on an HTTPS store behind a private CA and a bearer token: the build Job gets
    both from the model's credentials Secret, and neither the children, the model, nor the
    Events carry the token."""
    cluster, namespace = bed.cluster, bed.namespace
    token = "priya-store-token-1f3a9c"
    files = {"models/unet.onnx": reference_model.read_bytes()}
    host = cluster.host_network.host_address  # the host side of the nodes' network
    with private_model_store(files, token, host, tmp_path) as store:
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="priya-source"),
            string_data={"token": token, "ca.crt": store.ca_file.read_text()},
        )
        client.CoreV1Api(bed.api).create_namespaced_secret(namespace, secret)
        uri = store.url("models/unet.onnx")
        spec = {"model": {"uri": uri}, "credentialsSecret": "priya-source"}
        apply(cluster, namespace, document("priya", bed.avatar("priya"), **spec))
        try:
            settled = wait_for(
                lambda: _settled(bed, "priya"), timeout=BUILD_TIMEOUT, description="priya built"
            )
            assert settled["phase"] == "Ready", settled
            assert "/models/unet.onnx" in store.authorized_gets
            assert store.refused == 0
            kinds = "deployments,jobs,lipsyncmodels,events"
            listed = cluster.kubectl("get", kinds, "-n", namespace, "-o", "yaml").stdout
            assert uri in listed
            assert token not in listed
            [job] = jobs(cluster, namespace, "priya")
            env = job["spec"]["template"]["spec"]["containers"][0]["env"]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
            assert {ref["name"] for ref in refs.values()} == {"priya-source"}
        finally:
            _delete_model(bed, "priya")


def test_an_allowed_builder_override_gets_its_own_key_and_a_private_cache(bed: OperatorBed) -> None:
    """...served from a file:// avatar under the allowed prefix (a hostPath volume)."""
    cluster, namespace = bed.cluster, bed.namespace
    bed.avatar("olga")
    avatars = _avatars_path(bed.work_dir)
    apply(cluster, namespace, document("olga", f"file://{avatars}/olga"))
    default_key = wait_for(
        lambda: engines(status(cluster, namespace, "olga")).get(PRODUCT, {}).get("key"),
        timeout=90,
        description="olga's engine key",
    )
    patch_spec(cluster, namespace, "olga", {"images": {"builder": OWN_BUILDER}})
    ready = wait_phase(cluster, namespace, "olga", "Ready", timeout=BUILD_TIMEOUT)
    key = engines(ready)[PRODUCT]["key"]
    assert key != default_key
    [job] = [
        j
        for j in jobs(cluster, namespace, "olga")
        if j["metadata"]["annotations"]["lipsync.dev/engine-key"] == key
    ]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == OWN_BUILDER
    [cache] = [m for m in container["volumeMounts"] if m["name"] == "cache"]
    assert cache["subPath"] == f"private/{namespace}/olga"
    # The engine is in the model's own directory, not where other models look.
    entry = key.removeprefix("sha256:")
    assert (bed.cache_dir() / "private" / namespace / "olga" / "engines" / entry).is_dir()
    assert not (bed.cache_dir() / "engines" / entry).exists()
    # ...and the servers load it from there.
    [pod] = wait_serving(cluster, namespace, "olga", PRODUCT, 1)
    [engine] = [
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/engine"
    ]
    assert engine["subPath"] == f"private/{namespace}/olga/engines/{entry}"
    [avatar] = [v for v in pod["spec"]["volumes"] if v["name"] == "avatar"]
    assert avatar["hostPath"] == {"path": f"{avatars}/olga", "type": "Directory"}


def _judged(bed: OperatorBed, name: str) -> dict[str, Any] | None:
    """The model once its status reflects its current spec."""
    found = model(bed.cluster, bed.namespace, name)
    judged = (found.get("status") or {}).get("observedGeneration")
    return found if judged == found["metadata"]["generation"] else None


def _patch_gpus(bed: OperatorBed, name: str, most: int | None) -> None:
    patch_spec(bed.cluster, bed.namespace, name, {"gpus": {"products": [PRODUCT], "max": most}})
    wait_for(lambda: _judged(bed, name), timeout=60, description=f"{name}'s new spec judged")


def _gpu_tenant(name: str) -> dict[str, Any]:
    """Another team's pod holding one GPU of the real node."""
    pod = client_pod(name, ["sleep", "3600"])
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": REAL_NODE.name}
    pod["spec"]["containers"][0]["resources"] = {"limits": {GPU_RESOURCE: "1"}}
    return pod


def _replicas(bed: OperatorBed, name: str) -> int | None:
    deployment = deployments(bed.cluster, bed.namespace, name).get(PRODUCT)
    return None if deployment is None else int(deployment["spec"]["replicas"])


def test_a_gpu_another_namespace_holds_is_left_to_it(
    bed: OperatorBed, other_namespace: str
) -> None:
    """The operator watches pods of every namespace (read only) for GPU accounting: a model
    that may grow onto a node never plans a server for the GPU another team's pod holds there
    (a server that would wait Pending), and takes the GPU once that pod is gone."""
    cluster, core = bed.cluster, client.CoreV1Api(bed.api)
    tenant, gpu = "gpu-tenant", REAL_NODE.gpu
    assert gpu is not None
    _patch_gpus(bed, "olga", 1)  # olga keeps one server while the node gains a GPU
    set_node_gpus(bed.api, REAL_NODE.name, dataclasses.replace(gpu, count=2))
    try:
        cluster.kubectl("apply", "-n", other_namespace, "-f", "-",
                        input_text=json.dumps(_gpu_tenant(tenant)))  # fmt: skip
        wait_for(
            lambda: (
                kubectl_json(cluster, "get", "pod", tenant, "-n", other_namespace)["status"].get(
                    "phase"
                )
                == "Running"
            ),
            timeout=120,
            description="the other team's GPU pod running",
        )
        _patch_gpus(bed, "olga", None)  # may now take both of the node's GPUs
        for _ in range(10):  # and keeps planning one: the other is held
            assert _replicas(bed, "olga") == 1
            time.sleep(1)
        pending = [
            p["metadata"]["name"]
            for p in items(cluster, "pods", bed.namespace, model_selector("olga"))
            if p["status"].get("phase") == "Pending"
        ]
        assert pending == []
        core.delete_namespaced_pod(tenant, other_namespace, grace_period_seconds=0)
        # The next resync (60 s) plans the freed GPU.
        wait_serving(cluster, bed.namespace, "olga", PRODUCT, 2, timeout=180)
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(tenant, other_namespace, grace_period_seconds=0)
        _patch_gpus(bed, "olga", 1)
        wait_serving(cluster, bed.namespace, "olga", PRODUCT, 1, timeout=120)
        set_node_gpus(bed.api, REAL_NODE.name, gpu)


def test_a_model_outside_the_watched_namespaces_is_never_touched(
    bed: OperatorBed, other_namespace: str
) -> None:
    cluster = bed.cluster
    apply(cluster, other_namespace, document("stray", "pvc://lipsync-avatars/stray"))
    # A model in the watched namespace applied after it is reconciled (refused: a bad URI)...
    apply(cluster, bed.namespace, document("probe", "pvc://c/../x"))
    wait_phase(cluster, bed.namespace, "probe", "Failed", timeout=90)
    time.sleep(5)  # ...and the stray one, applied first, still has nothing.
    stray = model(cluster, other_namespace, "stray")
    assert "status" not in stray
    assert not any(
        f.startswith("kopf.zalando.org") for f in stray["metadata"].get("annotations") or {}
    )
    assert "finalizers" not in stray["metadata"]
    kinds = "jobs,deployments,services,poddisruptionbudgets,networkpolicies"
    assert items(cluster, kinds, other_namespace, model_selector("stray")) == []
