"""Which pod events give GPUs back, so that models waiting for them look again at once."""

from __future__ import annotations

from typing import Any

from lipsync_operator.marks import freed_gpu_node

GPU = "nvidia.com/gpu"


def _pod(gpus: int, node: str = "l4-0", phase: str = "Running") -> dict[str, Any]:
    resources = {"limits": {GPU: str(gpus)}} if gpus else {}
    return {
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": resources}]},
        "status": {"phase": phase},
    }


def test_a_deleted_gpu_pod_frees_its_node() -> None:
    assert freed_gpu_node("DELETED", _pod(1), GPU) == "l4-0"


def test_a_finished_gpu_pod_frees_its_node() -> None:
    assert freed_gpu_node("MODIFIED", _pod(1, phase="Succeeded"), GPU) == "l4-0"
    assert freed_gpu_node("MODIFIED", _pod(1, phase="Failed"), GPU) == "l4-0"


def test_a_running_gpu_pod_frees_nothing() -> None:
    assert freed_gpu_node("MODIFIED", _pod(1), GPU) == ""
    assert freed_gpu_node(None, _pod(1), GPU) == ""  # kopf's initial listing


def test_pods_without_gpus_or_a_node_free_nothing() -> None:
    assert freed_gpu_node("DELETED", _pod(0), GPU) == ""
    assert freed_gpu_node("DELETED", _pod(1, node=""), GPU) == ""
