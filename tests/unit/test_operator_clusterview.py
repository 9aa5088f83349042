"""The index entries and the ClusterView a reconcile reads, with plain dicts as kopf's indexes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar, cast

import kopf
import pytest

from lipsync_operator import indexes
from lipsync_operator.clusterview import (
    ALL_PRODUCTS,
    ClusterView,
    ModelRef,
    build_key_entry,
    build_pod_entry,
    deployment_entry,
    hpa_entry,
    job_entry,
    model_entry,
    node_entry,
    owner_uids,
    pod_entry,
    published_entry,
    waiting_entry,
)
from lipsync_operator.config import OperatorConfig
from lipsync_operator.observed import Observed, build_job, gpu_requests_by_node, pods_by_node
from lipsync_operator.signing import BuildSigner

pytestmark = pytest.mark.unit

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
K = TypeVar("K")
V = TypeVar("V")
GPU = "nvidia.com/gpu"
SIGNER = BuildSigner(b"test-signing-key-0123456789")
OWNER = [{"apiVersion": "lipsync.dev/v1alpha1", "kind": "LipSyncModel", "name": "anna",
          "uid": "uid-1"}]  # fmt: skip


def index(
    entry: Callable[[Mapping[str, Any]], Mapping[K, V] | None], objects: Iterable[Mapping[str, Any]]
) -> dict[K, list[V]]:
    """What kopf's index holds after indexing ``objects`` with ``entry``."""
    out: dict[K, list[V]] = defaultdict(list)
    for obj in objects:
        for key, value in (entry(obj) or {}).items():
            out[key].append(value)
    return dict(out)


def pod(
    name: str,
    node: str | None,
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    gpus: int = 0,
    phase: str = "Running",
    deleting: bool = False,
    message: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels or {}),
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:01:00Z"
    resources = {"requests": {GPU: str(gpus)}} if gpus else {}
    status: dict[str, Any] = {"phase": phase}
    if message is not None:
        status["containerStatuses"] = [
            {"name": "builder", "state": {"terminated": {"exitCode": 0, "message": message}}}
        ]
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": status}


def node_object(name: str, product: str = H100) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "status": {"allocatable": {GPU: "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


SERVER = {"app.kubernetes.io/component": "server", "lipsync.dev/model": "anna"}


def test_nodes_without_a_gpu_product_are_not_indexed() -> None:
    plain = {"metadata": {"name": "cpu-0", "labels": {}}, "status": {}}
    assert node_entry(plain, GPU) is None
    entry = node_entry(node_object("h-0"), GPU)
    assert entry is not None
    assert entry["h-0"].product == H100


def test_nodes_carrying_the_autoscaled_label_are_marked_autoscaled() -> None:
    karpenter = node_object("k-0")
    karpenter["metadata"]["labels"]["karpenter.sh/nodepool"] = "gpu"
    marked = node_entry(karpenter, GPU, "karpenter.sh/nodepool")
    static = node_entry(node_object("h-0"), GPU, "karpenter.sh/nodepool")
    unlabelled = node_entry(karpenter, GPU)  # no label configured: no node is autoscaled
    assert marked is not None
    assert static is not None
    assert unlabelled is not None
    assert (marked["k-0"].autoscaled, static["h-0"].autoscaled) == (True, False)
    assert not unlabelled["k-0"].autoscaled


def test_only_bound_unfinished_pods_that_hold_gpus_or_serve_a_model_are_indexed() -> None:
    assert pod_entry(pod("pending", None, gpus=1), GPU) is None
    assert pod_entry(pod("done", "h-0", gpus=1, phase="Succeeded"), GPU) is None
    assert pod_entry(pod("cpu", "h-0"), GPU) is None  # no GPUs, not a server: irrelevant
    held = pod_entry(pod("train", "h-0", namespace="ml", gpus=2), GPU)
    assert held is not None
    assert (held["h-0"].gpus, held["h-0"].namespace) == (2, "ml")
    served = pod_entry(pod("s", "h-0", labels=SERVER, deleting=True), GPU)
    assert served is not None
    assert (served["h-0"].server, served["h-0"].deleting, served["h-0"].model) == (
        True, True, "anna",
    )  # fmt: skip


def test_the_view_counts_gpu_use_and_server_pods_like_the_lists_did() -> None:
    nodes = [node_object("h-0"), node_object("h-1"), node_object("l-0", product=L4)]
    pods = [
        pod("mine-0", "h-0", labels=SERVER, gpus=1),
        pod("mine-old", "h-0", labels=SERVER, gpus=1, deleting=True),
        pod("twin", "h-0", namespace="other", labels=SERVER, gpus=1),  # same name elsewhere
        pod("train", "h-1", namespace="ml", gpus=4),
        pod("off-gpu", "cpu-0", gpus=1),  # not a GPU node
    ]
    view = ClusterView(
        nodes=index(lambda o: node_entry(o, GPU), nodes),
        pods=index(lambda o: pod_entry(o, GPU), pods),
    )
    observed = view.observed("default", "anna", "uid-1")
    names = {n.name for n in observed.nodes}
    assert names == {"h-0", "h-1", "l-0"}
    mine, others = pods[:2], pods[2:]
    # The same numbers the listing code computed from every pod in the cluster.
    assert observed.serving_pods_by_node == pods_by_node(mine, names)
    assert observed.gpu_used_by_others == gpu_requests_by_node(others, GPU, names)
    assert observed.gpu_used_by_others == {"h-0": 1, "h-1": 4}


def test_children_are_found_by_owner_uid_and_builds_carry_their_pods_result() -> None:
    job: dict[str, Any] = {
        "metadata": {"name": "anna-build-abc", "namespace": "default", "ownerReferences": OWNER,
                     "annotations": {"lipsync.dev/engine-key": "sha256:abc"},
                     "labels": {"lipsync.dev/gpu-product": H100}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }  # fmt: skip
    forged = {**job, "metadata": {**job["metadata"], "name": "anna-build-forged"}}
    result = '{"key":"sha256:abc","state":"Ready","artifact":"engine.plan"}'
    build_pods = [
        pod("anna-build-abc-1", "h-0", labels={"job-name": "anna-build-abc"}, message=result),
        pod("x-build-1", "h-0", namespace="other", labels={"job-name": "anna-build-abc"}),
    ]
    deployment = {
        "metadata": {"name": "anna-h100", "ownerReferences": OWNER, "generation": 1,
                     "labels": {"lipsync.dev/gpu-product": H100}},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 2},
    }  # fmt: skip
    hpa = {"metadata": {"name": "anna-h100", "ownerReferences": OWNER}}
    scaled = {"metadata": {"name": "anna-l4", "ownerReferences": OWNER}}
    stranger = {"metadata": {"name": "x", "ownerReferences": [{**OWNER[0], "uid": "uid-2"}]}}
    view = ClusterView(
        build_pods=index(build_pod_entry, build_pods),
        jobs=index(partial(job_entry, signer=SIGNER), [SIGNER.signed(job), forged]),
        deployments=index(deployment_entry, [deployment, {**stranger, "spec": {}}]),
        hpas=index(hpa_entry, [hpa, stranger]),
        scaled_objects=index(hpa_entry, [scaled, stranger]),
    )
    observed = view.observed("default", "anna", "uid-1")
    own, look_alike = observed.jobs
    assert own == build_job(SIGNER.signed(job), [build_pods[0]])
    # A Job of its own the operator did not sign is seen (to be cleaned up), never followed.
    assert (look_alike.name, look_alike.signed) == ("anna-build-forged", False)
    assert observed.jobs[0].result is not None
    assert observed.jobs[0].result.state == "Ready"
    assert [d.name for d in observed.deployments] == ["anna-h100"]
    assert observed.deployments[0].ready_replicas == 2
    assert observed.hpas == frozenset({"anna-h100"})
    assert observed.scaled_objects == frozenset({"anna-l4"})
    assert observed.autoscalers == {"anna-h100", "anna-l4"}
    assert view.observed("default", "anna", "uid-9") == Observed()


def test_objects_not_owned_by_a_lipsyncmodel_are_not_children() -> None:
    foreign = {"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                 "name": "x", "uid": "u"}]}}  # fmt: skip
    assert owner_uids(foreign, "LipSyncModel") == []
    assert job_entry({**foreign, "status": {}}, SIGNER) is None
    assert hpa_entry(foreign) is None


def test_models_are_found_by_the_products_they_select() -> None:
    def model(name: str, products: list[str]) -> dict[str, Any]:
        meta = {"name": name, "namespace": "ns", "uid": f"u-{name}"}
        return {"metadata": meta, "spec": {"gpus": {"products": products}}}

    models = index(model_entry, [model("a", [H100]), model("b", [L4, H100]), model("c", [])])
    assert set(models) == {H100, L4, ALL_PRODUCTS}
    view = ClusterView(models=models)
    assert {m.name for m in view.models_on({L4})} == {"b", "c"}
    assert {m.name for m in view.models_on({H100})} == {"a", "b", "c"}
    assert view.models_on(set()) == {ModelRef("ns", "c", "u-c")}


def test_builds_are_found_by_key_across_namespaces_and_waiting_models_by_key() -> None:
    def job(namespace: str, name: str, key: str, component: str = "engine-build") -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": OWNER,
                         "annotations": {"lipsync.dev/engine-key": key},
                         "labels": {"app.kubernetes.io/component": component}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]},
        }  # fmt: skip

    result = '{"key":"sha256:k1","state":"Ready","artifact":"engine.plan"}'
    signed = [
        SIGNER.signed(job("a", "x-build", "sha256:k1")),
        SIGNER.signed(job("b", "y-build", "sha256:k2")),
        SIGNER.signed(job("c", "other", "sha256:k1", component="server")),
    ]
    forged = [
        job("d", "forged", "sha256:k1"),  # a look-alike: labels and key, no signature
        {**signed[0], "metadata": {**signed[0]["metadata"], "namespace": "e"}},
    ]
    view = ClusterView(
        builds=index(partial(build_key_entry, signer=SIGNER), [*signed, *forged]),
        build_pods=index(build_pod_entry, [
            pod("x-build-1", "h-0", namespace="a", labels={"job-name": "x-build"}, message=result)
        ]),
        waiting=index(waiting_entry, [{
            "metadata": {"name": "m", "namespace": "b", "uid": "u-m"},
            "status": {"engines": [{"key": "sha256:k1", "state": "Building"},
                                   {"key": "sha256:k2", "state": "Ready"}]},
        }]),
    )  # fmt: skip
    found = view.builds_by_key(["sha256:k1", "sha256:k3"])
    assert list(found) == ["sha256:k1"]
    [build] = found["sha256:k1"]
    assert (build.namespace, build.name) == ("a", "x-build")
    assert build.result is not None
    assert build.result.state == "Ready"
    assert view.waiting_for("sha256:k1") == [ModelRef("b", "m", "u-m")]
    assert view.waiting_for("sha256:k2") == []


def test_index_functions_answer_an_empty_entry_so_kopf_drops_what_an_object_no_longer_is() -> None:
    # kopf keeps an object's previous entries when its index function returns None.
    memo = kopf.Memo(config=OperatorConfig(), signer=SIGNER)

    def entry(function: object, obj: Mapping[str, Any]) -> Any:
        return cast(Callable[..., Any], function)(body=obj, memo=memo)

    assert entry(indexes.lipsync_pods, pod("build", "h-0", gpus=1)) != {}
    assert entry(indexes.lipsync_pods, pod("build", "h-0", gpus=1, phase="Succeeded")) == {}
    unlabelled = {"metadata": {"name": "h-0", "labels": {}}, "status": {}}
    assert entry(indexes.lipsync_nodes, unlabelled) == {}
    stranger = {"metadata": {"name": "x", "namespace": "default"}}
    for function in (indexes.lipsync_jobs, indexes.lipsync_deployments, indexes.lipsync_hpas):
        assert entry(function, stranger) == {}


def test_a_snapshot_does_not_follow_later_index_changes() -> None:
    live: dict[str, list[Any]] = defaultdict(list)
    entry = node_entry(node_object("h-0"), GPU)
    assert entry is not None
    live["h-0"].extend(entry.values())
    snapshot = ClusterView(nodes=live).snapshot()
    live["h-1"].extend(live["h-0"])
    del live["h-0"]
    assert [node.name for node in snapshot.gpu_nodes()] == ["h-0"]


def test_a_models_ready_engine_is_found_by_key_from_its_own_namespace_only() -> None:
    def model(name: str, engines: list[dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "default", "uid": name},
                "status": {"engines": engines}}  # fmt: skip

    ready = {"gpuProduct": L4, "key": "sha256:abc", "state": "Ready", "artifact": "e.onnx"}
    building = {"gpuProduct": H100, "key": "sha256:def", "state": "Building"}
    models = [model("anna", [ready, building]), model("mira", []), {"metadata": {}}]
    view = ClusterView(published=index(published_entry, models))
    [found] = view.published_engines(["sha256:abc", "sha256:def", "sha256:abc"], "default")
    assert (found.key, found.artifact, found.gpu_product) == ("sha256:abc", "e.onnx", L4)
    # Another tenant's status is not trusted: its model builds the key itself.
    assert view.published_engines(["sha256:abc"], "tenant-b") == []
    assert published_entry({"status": {"engines": "not a list"}}) is None
