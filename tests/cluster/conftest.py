"""Cluster tier: a real control plane with KWOK fake GPU nodes, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_testbed import LocalCluster
from lipsync_testbed.operatorchart import OperatorBed, operator_bed

# pytest honours `pytest_plugins` only in the top-level conftest, so the test bed's
# fixtures and hooks are imported here and apply to this directory.
from lipsync_testbed.pytest_plugin import (
    autoscaling_cluster,
    autoscaling_namespace,
    kube_api,
    kube_cluster,
    kube_namespace,
    node_cluster,
    pod_runner,
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
    "pod_runner",
    "pytest_configure",
    "pytest_runtest_makereport",
]


@pytest.fixture(scope="module")
def bed(
    kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, reference_model: Path
) -> Iterator[OperatorBed]:
    """The chart installed with the test bed's values and its pods run by a local kubelet, for
    one test module (a module may override it with values of its own)."""
    yield from operator_bed(kube_cluster, tmp_path_factory.mktemp("bed"), reference_model)
