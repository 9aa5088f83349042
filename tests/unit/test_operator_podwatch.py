"""The cluster-wide pod store a namespaced operator plans GPUs with: what the watch's lists and
events leave in it, and that a model's view counts other namespaces' GPUs through it."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync_operator import indexes
from lipsync_operator.clusterview import PodUse, node_entry
from lipsync_operator.podwatch import ClusterPods

pytestmark = pytest.mark.unit

GPU = "nvidia.com/gpu"
SERVER = {"app.kubernetes.io/component": "server", "lipsync.dev/model": "anna"}

INDEX_NAMES = ("lipsync_nodes", "lipsync_pods", "lipsync_build_pods", "lipsync_jobs",
               "lipsync_deployments", "lipsync_hpas", "lipsync_models", "lipsync_builds",
               "lipsync_waiting", "lipsync_published", "lipsync_pod_problems")  # fmt: skip


def pod(
    uid: str,
    node: str | None,
    *,
    namespace: str = "other-team",
    labels: dict[str, str] | None = None,
    gpus: int = 0,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": f"pod-{uid}", "namespace": namespace,
                            "labels": labels or {}}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    resources = {"requests": {GPU: str(gpus)}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def tenant(uid: str, node: str | None = "h100-0", gpus: int = 2, **kwargs: Any) -> dict[str, Any]:
    return pod(uid, node, gpus=gpus, **kwargs)


def test_a_list_keeps_bound_unfinished_pods_that_hold_gpus_or_serve_by_node() -> None:
    pods = ClusterPods(GPU)
    assert not pods.synced.is_set()
    pods.replace(
        [
            tenant("a"),
            tenant("b", node="h100-1", gpus=1),
            tenant("pending", node=None),
            tenant("done", phase="Succeeded"),
            tenant("cpu-only", gpus=0),
            pod("s", "h100-0", namespace="team", labels=SERVER),
        ]
    )
    assert pods.synced.is_set()
    assert dict(pods.items()) == {
        "h100-0": (
            PodUse(namespace="other-team", model="", server=False, gpus=2, deleting=False),
            PodUse(namespace="team", model="anna", server=True, gpus=0, deleting=False),
        ),
        "h100-1": (PodUse("other-team", "", False, 1, False),),
    }
    assert sorted(pods) == ["h100-0", "h100-1"]
    assert len(pods) == 2
    assert pods["h100-1"][0].gpus == 1


def test_watch_events_add_change_and_remove_entries() -> None:
    pods = ClusterPods(GPU)
    pods.replace([tenant("a")])
    pods.update("ADDED", tenant("b", node="h100-1"))
    pods.update("MODIFIED", tenant("a", deleting=True))
    assert [use.deleting for use in pods["h100-0"]] == [True]
    pods.update("MODIFIED", tenant("b", node="h100-1", phase="Failed"))  # finished: gone
    assert "h100-1" not in pods
    pods.update("DELETED", tenant("a"))
    pods.update("DELETED", tenant("never-seen"))
    assert dict(pods.items()) == {}


def test_a_new_list_drops_what_it_does_not_name() -> None:
    pods = ClusterPods(GPU)
    pods.replace([tenant("a"), tenant("b", node="h100-1")])
    pods.replace([tenant("b", node="h100-1")])
    assert list(pods) == ["h100-1"]


def test_a_namespaced_view_counts_other_namespaces_gpus_from_the_store() -> None:
    node = {
        "metadata": {"name": "h100-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
        "status": {"allocatable": {GPU: "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    kwargs: dict[str, Any] = {name: {} for name in INDEX_NAMES}
    kwargs["lipsync_nodes"] = {"h100-0": list((node_entry(node, GPU) or {}).values())}
    pods = ClusterPods(GPU)
    pods.replace([tenant("a", gpus=3)])
    blind = indexes.view(kwargs).snapshot().observed("team", "anna", "uid-1")
    assert blind.gpu_used_by_others == {}
    seen = indexes.view(kwargs, pods).snapshot().observed("team", "anna", "uid-1")
    assert seen.gpu_used_by_others == {"h100-0": 3}
