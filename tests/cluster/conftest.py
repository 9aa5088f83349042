"""Cluster tier: real control planes started once per session; the project's pods run as
containers on real nodes (kubelet + containerd) with fake GPUs, KWOK nodes stand in where no
pod needs to run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_testbed import LocalCluster
from lipsync_testbed.nodebed import node_operator_bed
from lipsync_testbed.operatorchart import OperatorBed

# pytest honours `pytest_plugins` only in the top-level conftest, so the test bed's
# fixtures and hooks are imported here and apply to this directory.
from lipsync_testbed.pytest_plugin import (
    autoscaling_cluster,
    autoscaling_namespace,
    kube_api,
    kube_cluster,
    kube_namespace,
    node_cluster,
    pytest_configure,
    pytest_runtest_makereport,
)

__all__ = [
    "autoscaling_cluster",
    "autoscaling_namespace",
    "kube_api",
    "kube_cluster",
    "kube_namespace",
    "node_cluster",
    "pytest_configure",
    "pytest_runtest_makereport",
]


@pytest.fixture(scope="module")
def bed(
    node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, reference_model: Path
) -> Iterator[OperatorBed]:
    """The chart installed with the documented test-bed values onto the real nodes, for one
    test module (a module may override it with values of its own)."""
    yield from node_operator_bed(node_cluster, tmp_path_factory.mktemp("bed"), reference_model)
