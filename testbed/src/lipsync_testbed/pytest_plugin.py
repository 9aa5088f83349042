"""Pytest plugin: one local cluster per test session for tests marked `cluster`.

Load it with `pytest_plugins = ["lipsync_testbed.pytest_plugin"]`.

Fixtures:
    kube_cluster    (session) a started LocalCluster: .kubeconfig, .api_client,
                    .kubectl(...), .log_dir, .binaries, .nodes
    kube_api        (session) kube_cluster.api_client
    kube_namespace  (function) a fresh namespace (its default service account
                    exists), deleted afterwards

Autoscaling (lipsync_testbed.autoscaling):
    autoscaling_cluster    (session) a second LocalCluster, started on first use, that
                           also runs Prometheus, KEDA (operator + external metrics API) and
                           Karpenter (KWOK provider, one NodePool per GPU product of
                           gpucatalog.DEFAULT_INSTANCE_TYPES, consolidation after 5 s) with
                           GPU Feature Discovery; it starts with one real CPU node (cpu-0,
                           the project's images imported), and each node Karpenter launches
                           boots as a real node (lipsync_testbed.karpenternodes).
                           .autoscaling_endpoints.prometheus_url / .prometheus (a
                           PrometheusClient), autoscaling.nodes_per_nodepool(api),
                           autoscaling.wait_keda_ready(api)
    autoscaling_namespace  (function) a fresh namespace in it, deleted afterwards

Real nodes (lipsync_testbed.realnode, lipsync_testbed.nodebed):
    node_cluster    (session) a third LocalCluster, started on first use, with no KWOK nodes and
                    one real node (kubelet + containerd + kube-proxy + kube-router, CoreDNS) that
                    has the project's images (`make images`) imported and fake GPUs
                    (nodebed.REAL_NODE); its host network and leftovers are checked at teardown
LIPSYNC_TESTBED_AUTOSCALING_ATTACH=<state dir> uses a test bed started with
`python -m lipsync_testbed up --autoscaling` instead (it must keep running: it boots
Karpenter's nodes).

Environment: LIPSYNC_BIN_DIR / LIPSYNC_CACHE locate the binaries (make cluster-build).
LIPSYNC_TESTBED_ATTACH=<state dir> uses a test bed already started with
`python -m lipsync_testbed up` (left running afterwards) instead of starting one.
Failing tests that use the cluster get the tail of every component log attached.

Several workers (`pytest -n N`): lipsync_testbed.workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.autoscaling import BINARIES as AUTOSCALING_BINARIES
from lipsync_testbed.autoscaling import CPU_NODE, AutoscalingOptions
from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.nodebed import REAL_NODE, project_images
from lipsync_testbed.processes import is_running
from lipsync_testbed.realnode import NODE_BINARIES
from lipsync_testbed.resources import create_namespace
from lipsync_testbed.versions import Binaries, ClusterSetupError

log = logging.getLogger(__name__)

_CLUSTER_KEY = pytest.StashKey[LocalCluster]()
_AUTOSCALING_KEY = pytest.StashKey[LocalCluster]()
_NODES_KEY = pytest.StashKey[LocalCluster]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the local Kubernetes test bed (make cluster-build)"
    )


def _session_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    attach_env: str,
    key: pytest.StashKey[LocalCluster],
    binaries_needed: tuple[str, ...],
    **options: Any,
) -> Iterator[LocalCluster]:
    """A started test bed for the session (or the one `$attach_env` names), stopped after."""
    attach = os.environ.get(attach_env)
    if attach:
        try:
            attached = LocalCluster.attach(Path(attach))
        except ClusterSetupError as exc:
            pytest.fail(f"cannot attach to the test bed in {attach}: {exc}", pytrace=False)
        request.config.stash[key] = attached
        yield attached
        return
    binaries = Binaries.default()
    missing = binaries.missing(binaries_needed)
    if missing:
        pytest.fail(
            f"test bed binaries missing in {binaries.bin_dir}: {', '.join(missing)}; "
            "run `make cluster-build`",
            pytrace=False,
        )
    state_dir: Path = tmp_path_factory.mktemp("cluster")
    # die_with_parent: even a killed test run leaves no control plane behind.
    cluster = LocalCluster(state_dir, binaries=binaries, die_with_parent=True, **options)
    try:
        cluster.start()
    except ClusterSetupError as exc:
        pytest.fail(f"test bed failed to start: {exc}\n{cluster.log_tails()}", pytrace=False)
    request.config.stash[key] = cluster
    try:
        yield cluster
    finally:
        started = cluster.processes
        cluster.stop()
        left = [p for p in started if is_running(p.pid)]
        if left:
            raise ClusterSetupError(f"processes left after teardown: {left}")


_CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@pytest.fixture(scope="session")
def kube_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    yield from _session_cluster(
        request,
        tmp_path_factory,
        attach_env="LIPSYNC_TESTBED_ATTACH",
        key=_CLUSTER_KEY,
        binaries_needed=(*_CONTROL_PLANE, "kubectl"),
    )


@pytest.fixture(scope="session")
def autoscaling_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    yield from _session_cluster(
        request,
        tmp_path_factory,
        attach_env="LIPSYNC_TESTBED_AUTOSCALING_ATTACH",
        key=_AUTOSCALING_KEY,
        binaries_needed=(*_CONTROL_PLANE, "kubectl", *AUTOSCALING_BINARIES, *NODE_BINARIES),
        node_pool=[],
        real_nodes=[CPU_NODE],
        images=_project_images(),
        autoscaling=AutoscalingOptions(),
    )


def _project_images() -> list[Path]:
    try:
        return project_images()
    except ClusterSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    images = _project_images()
    yield from _session_cluster(
        request,
        tmp_path_factory,
        attach_env="LIPSYNC_TESTBED_NODES_ATTACH",
        key=_NODES_KEY,
        binaries_needed=(*_CONTROL_PLANE, "kubectl", "helm", *NODE_BINARIES),
        node_pool=[],
        real_nodes=[REAL_NODE],
        images=images,
    )


@pytest.fixture(scope="session")
def kube_api(kube_cluster: LocalCluster) -> client.ApiClient:
    return kube_cluster.api_client


def _fresh_namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    prefix = request.node.name.lower().replace("_", "-")[:40].strip("-") or "t"
    prefix = "".join(ch for ch in prefix if ch.isalnum() or ch == "-")
    name = create_namespace(api, prefix)
    yield name
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except ApiException as exc:
        log.warning("could not delete namespace %s: %s", name, exc)


@pytest.fixture
def kube_namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _fresh_namespace(kube_api, request)


@pytest.fixture
def autoscaling_namespace(
    autoscaling_cluster: LocalCluster, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from _fresh_namespace(autoscaling_cluster.api_client, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    for key, fixture in (
        (_CLUSTER_KEY, "kube_cluster"),
        (_AUTOSCALING_KEY, "autoscaling_cluster"),
        (_NODES_KEY, "node_cluster"),
    ):
        cluster = item.config.stash.get(key, None)
        if report.failed and cluster is not None and fixture in getattr(item, "fixturenames", ()):
            report.sections.append((f"{fixture} logs (tail)", cluster.log_tails()))
    return report
