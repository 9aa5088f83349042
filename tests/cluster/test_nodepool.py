"""Node-pool parsing and GPU Feature Discovery labels (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipsync_testbed.nodes import GpuSpec, load_node_pool, parse_node_pool
from lipsync_testbed.versions import Versions, parse_env_file, repo_root

pytestmark = pytest.mark.unit


def test_default_pool_has_h100_rtx_and_cpu_nodes() -> None:
    nodes = {n.name: n for n in load_node_pool(repo_root() / "hack/cluster/nodepool.yaml")}
    assert sorted(nodes) == ["cpu-0", "h100-0", "h100-1", "rtx6000ada-0"]
    h100 = nodes["h100-0"]
    assert h100.gpu is not None
    labels = h100.all_labels()
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert labels["nvidia.com/gpu.compute.major"] == "9"
    assert labels["nvidia.com/gpu.compute.minor"] == "0"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert h100.resources()["nvidia.com/gpu"] == "1"
    assert nodes["rtx6000ada-0"].resources()["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["cpu-0"].resources()
    assert not any(k.startswith("nvidia.com/") for k in nodes["cpu-0"].all_labels())


def test_time_slicing_pool_reports_shared_gpus() -> None:
    document = {
        "pools": [
            {
                "name": "t4",
                "replicas": 2,
                "labels": {"team": "a"},
                "gpu": {
                    "product": "Tesla-T4",
                    "count": 1,
                    "memoryMiB": 15360,
                    "computeMajor": 7,
                    "computeMinor": 5,
                    "sharing": {"strategy": "time-slicing", "replicas": 4},
                },
            }
        ]
    }
    nodes = parse_node_pool(document)
    assert [n.name for n in nodes] == ["t4-0", "t4-1"]
    labels = nodes[0].all_labels()
    assert labels["nvidia.com/gpu.product"] == "Tesla-T4-SHARED"
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert labels["team"] == "a"
    assert nodes[0].manifest()["status"]["allocatable"]["nvidia.com/gpu"] == "4"


def test_gpu_spec_without_sharing_ignores_replicas() -> None:
    gpu = GpuSpec("X", count=2, memory_mib=1, compute_major=1, compute_minor=0, replicas=8)
    assert gpu.allocatable == 2
    assert "nvidia.com/gpu.replicas" not in gpu.labels()


def test_duplicate_node_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_node_pool({"pools": [{"name": "a"}, {"name": "a"}]})


def test_pinned_versions_are_consistent(tmp_path: Path) -> None:
    versions = Versions.load()
    assert versions.kubernetes.startswith("v1.")
    values = parse_env_file(repo_root() / "hack/cluster/versions.env")
    assert values["KUBECTL_VERSION"] == values["KUBERNETES_VERSION"]
    bad = tmp_path / "bad.env"
    bad.write_text("NOT A LINE\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="KEY=VALUE"):
        parse_env_file(bad)
