"""Cluster tier: a real control plane with KWOK fake GPU nodes, started once per session."""

from __future__ import annotations

# pytest honours `pytest_plugins` only in the top-level conftest, so the test bed's
# fixtures and hooks are imported here and apply to this directory.
from lipsync_testbed.pytest_plugin import (
    job_pod_runner,
    kube_api,
    kube_cluster,
    kube_namespace,
    pod_runner,
    pytest_configure,
    pytest_runtest_makereport,
)

__all__ = [
    "job_pod_runner",
    "kube_api",
    "kube_cluster",
    "kube_namespace",
    "pod_runner",
    "pytest_configure",
    "pytest_runtest_makereport",
]
