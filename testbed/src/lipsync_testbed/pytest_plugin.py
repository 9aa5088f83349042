"""Pytest plugin: one local cluster per test session for tests marked `cluster`.

Load it with `pytest_plugins = ["lipsync_testbed.pytest_plugin"]`.

Fixtures:
    kube_cluster    (session) a started LocalCluster: .kubeconfig, .api_client,
                    .kubectl(...), .log_dir, .binaries, .nodes
    kube_api        (session) kube_cluster.api_client
    kube_namespace  (function) a fresh namespace (its default service account
                    exists), deleted afterwards
    pod_runner      (function) factory: pod_runner(**options) starts a PodRunner (a
                    local kubelet) for kube_namespace with the cluster's LocalPodRule,
                    1 s first restart back-off and its files under the test's tmp_path;
                    stopped afterwards (options: see PodRunner); a failing test gets
                    the tail of every local container's log

`local_pod_runner(cluster, **options)` is the same as a context manager, for fixtures
of other scopes.

Autoscaling (lipsync_testbed.autoscaling):
    autoscaling_cluster    (session) a second LocalCluster, started on first use, that
                           also runs Prometheus, KEDA (operator + external metrics API) and
                           Karpenter (KWOK provider, one NodePool per GPU product of
                           gpucatalog.DEFAULT_INSTANCE_TYPES, consolidation after 5 s) with
                           GPU Feature Discovery; it starts with one CPU node (cpu-0) and no
                           kubelet: start one with local_pod_runner(autoscaling_cluster, ...)
                           or operator_bed(autoscaling_cluster, ...).
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
`python -m lipsync_testbed up --autoscaling --no-kubelet` instead.

Environment: LIPSYNC_BIN_DIR / LIPSYNC_CACHE locate the binaries (make cluster-build).
LIPSYNC_TESTBED_ATTACH=<state dir> uses a test bed already started with
`python -m lipsync_testbed up` (left running afterwards) instead of starting one.
Failing tests that use the cluster get the tail of every component log attached.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.autoscaling import BINARIES as AUTOSCALING_BINARIES
from lipsync_testbed.autoscaling import STATIC_NODES, AutoscalingOptions
from lipsync_testbed.cluster import LocalCluster
from lipsync_testbed.kubelet import PodRunner
from lipsync_testbed.nodebed import REAL_NODE, project_images
from lipsync_testbed.processes import is_running
from lipsync_testbed.realnode import NODE_BINARIES
from lipsync_testbed.resources import create_namespace
from lipsync_testbed.versions import Binaries, ClusterSetupError

log = logging.getLogger(__name__)

_CLUSTER_KEY = pytest.StashKey[LocalCluster]()
_AUTOSCALING_KEY = pytest.StashKey[LocalCluster]()
_NODES_KEY = pytest.StashKey[LocalCluster]()
_RUNNERS_KEY = pytest.StashKey[list[PodRunner]]()


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
        binaries_needed=(*_CONTROL_PLANE, "kubectl", *AUTOSCALING_BINARIES),
        node_pool=list(STATIC_NODES),
        autoscaling=AutoscalingOptions(),
    )


@pytest.fixture(scope="session")
def node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    try:
        images = project_images()
    except ClusterSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
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


@contextlib.contextmanager
def local_pod_runner(cluster: LocalCluster, **options: Any) -> Iterator[PodRunner]:
    """A started PodRunner for `cluster` (its LocalPodRule, a fresh API client), stopped on
    exit; for fixtures of any scope. `options` are PodRunner's."""
    options.setdefault("rule", cluster.local_pods)
    runner = PodRunner(cluster.new_api_client(), **options).start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def pod_runner(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., PodRunner]]:
    if kube_cluster.runs_kubelet:
        pytest.fail(
            "the attached test bed runs its own kubelet, which would fight this test's pod "
            "runner; start it with `python -m lipsync_testbed up --no-kubelet`",
            pytrace=False,
        )
    runners: list[PodRunner] = []
    request.node.stash[_RUNNERS_KEY] = runners
    with contextlib.ExitStack() as stack:

        def factory(**options: Any) -> PodRunner:
            options.setdefault("namespace", kube_namespace)
            options.setdefault("work_dir", tmp_path / f"pod-runner-{len(runners)}")
            options.setdefault("restart_backoff", (1.0, 8.0))
            runner = stack.enter_context(local_pod_runner(kube_cluster, **options))
            runners.append(runner)
            return runner

        yield factory


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
    for runner in item.stash.get(_RUNNERS_KEY, []) if report.failed else []:
        report.sections.append(("local pod logs (tail)", runner.log_tails()))
    return report
