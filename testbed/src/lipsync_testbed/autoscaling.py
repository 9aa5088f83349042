"""Cluster-level autoscaling in the test bed: Prometheus, KEDA and Karpenter as processes.

`LocalCluster(..., autoscaling=AutoscalingOptions())` (or `python -m lipsync_testbed up
--autoscaling`) starts, after the control plane and against its API server, with free ports on
127.0.0.1 and the admin client certificate `pki/autoscaling.crt` (group system:masters):

- **Prometheus** (`prometheus`): discovers pods through the API server and scrapes those
  annotated `prometheus.io/scrape: "true"` on `prometheus.io/port` at `prometheus.io/path`
  (default `/metrics`), on their pod IPs (lipsync_testbed.prometheus has the whole contract).
  HTTP API at `endpoints.prometheus_url`; scrape interval 1 s.
- **KEDA** (`keda-operator`, `keda-adapter`): the operator reconciles ScaledObjects
  (activation, 0 <-> 1, and the HPA it creates); the adapter is KEDA's metrics API server,
  registered as the APIService `v1beta1.external.metrics.k8s.io` behind the Service
  `keda/keda-metrics-apiserver` (type ExternalName `localhost`: the aggregation layer dials the
  adapter on the loopback port of the APIService, verifying its certificate for
  `keda-metrics-apiserver.keda.svc` against the cluster CA; the API server authenticates with
  the front-proxy client certificate). The two talk gRPC with mutual TLS (`pki/keda.crt`).
  A Prometheus trigger's `serverAddress` is `endpoints.prometheus_url`.
- **Karpenter** (`karpenter-kwok`, the KWOK cloud provider): instance types from the GPU
  catalogue (lipsync_testbed.gpucatalog: H100 and L4 machines with `nvidia.com/gpu` capacity),
  one NodePool per GPU product (`gpu-nvidia-l4`, `gpu-nvidia-h100-80gb-hbm3`) declaring
  `nvidia.com/gpu.product`, consolidation of empty or underused nodes after 5 s. Each node
  it creates boots as a real node of that name (lipsync_testbed.karpenternodes), so the pods
  bound to it run as containers; once Karpenter has drained and deleted it, the machine goes.
- **GPU Feature Discovery** (`gpu-feature-discovery`, lipsync_testbed.gfd): labels those
  nodes with the GFD labels of their instance type and sets their GPU capacity.

All run out of cluster with a kubeconfig; leader election is off (one replica each). They
are recorded in the cluster's state and stopped with it. The CRDs come from the module
sources `hack/cluster/build.sh` builds them from (`<bin dir>/../crds/{karpenter,keda}`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client

from lipsync_testbed import processes
from lipsync_testbed.gpucatalog import (
    DEFAULT_CONSOLIDATE_AFTER,
    DEFAULT_INSTANCE_TYPES,
    NODEPOOL_LABEL,
    GpuInstanceType,
    karpenter_instance_types,
    kwok_node_class,
    node_pools,
)
from lipsync_testbed.kubeconfig import write_kubeconfig
from lipsync_testbed.nodes import GPU_RESOURCE, GpuSpec, NodeSpec
from lipsync_testbed.pki import KEDA_METRICS_SERVICE, KEDA_NAMESPACE, ClusterPKI
from lipsync_testbed.prometheus import (
    CLIENTS_FILE,
    PrometheusClient,
    client_targets,
    scrape_config,
)
from lipsync_testbed.versions import ClusterSetupError
from lipsync_testbed.waiting import WaitTimeoutError, wait_for

if TYPE_CHECKING:
    from lipsync_testbed.cluster import LocalCluster

log = logging.getLogger(__name__)

BINARIES = ("prometheus", "keda-operator", "keda-adapter", "karpenter-kwok")
EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
GPU_DISCOVERY_PROCESS = "gpu-feature-discovery"
CATALOG_FILE = "gpu-instance-types.json"
# The real node an autoscaling test bed starts with: a CPU node for the pods that need no GPU
# (the operator, CoreDNS, KEDA-scaled CPU workloads); every GPU node comes from Karpenter.
CPU_NODE = NodeSpec(name="cpu-0", pool="cpu")


@dataclass(frozen=True)
class AutoscalingOptions:
    """What the autoscaling components are given: the GPU catalogue, how fast they react."""

    instance_types: tuple[GpuInstanceType, ...] = DEFAULT_INSTANCE_TYPES
    consolidate_after: str = DEFAULT_CONSOLIDATE_AFTER
    scrape_interval: str = "1s"


@dataclass(frozen=True)
class AutoscalingEndpoints:
    """Where the running components answer (all on 127.0.0.1)."""

    prometheus_url: str
    keda_metrics_api: str
    karpenter_metrics: str

    def to_json(self) -> dict[str, str]:
        return {
            "prometheus_url": self.prometheus_url,
            "keda_metrics_api": self.keda_metrics_api,
            "karpenter_metrics": self.karpenter_metrics,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> AutoscalingEndpoints:
        return cls(data["prometheus_url"], data["keda_metrics_api"], data["karpenter_metrics"])

    @property
    def prometheus(self) -> PrometheusClient:
        return PrometheusClient(self.prometheus_url)


# -- the GPU catalogue on disk (read by the gpu-feature-discovery process) -------------


def write_catalog(path: Path, types: Sequence[GpuInstanceType]) -> None:
    rows = [
        {
            "name": it.name,
            "cpu": it.cpu,
            "memory_gib": it.memory_gib,
            "price": it.price,
            "gpu": {
                "product": it.gpu.product,
                "count": it.gpu.count,
                "memory_mib": it.gpu.memory_mib,
                "compute_major": it.gpu.compute_major,
                "compute_minor": it.gpu.compute_minor,
                "family": it.gpu.family,
            },
        }
        for it in types
    ]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")


def read_catalog(path: Path) -> tuple[GpuInstanceType, ...]:
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return tuple(
        GpuInstanceType(
            name=r["name"],
            gpu=GpuSpec(**r["gpu"]),
            cpu=int(r["cpu"]),
            memory_gib=int(r["memory_gib"]),
            price=float(r["price"]),
        )
        for r in rows
    )


# -- manifests ------------------------------------------------------------------------


def keda_registration(adapter_port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """The namespace, Service and APIService that put KEDA's metrics server behind the API."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
            # The aggregation layer resolves an ExternalName Service to <name>:<APIService
            # port>; the adapter runs on this host, so that is localhost:<its port>.
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS_APISERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {
                    "name": KEDA_METRICS_SERVICE,
                    "namespace": KEDA_NAMESPACE,
                    "port": adapter_port,
                },
                "caBundle": base64.b64encode(ca_pem).decode(),
            },
        },
    ]


# -- starting -------------------------------------------------------------------------


def crd_dir(bin_dir: Path, component: str) -> Path:
    """Where build.sh copied a component's CRDs."""
    return bin_dir.parent / "crds" / component


def _apply(cluster: LocalCluster, documents: Sequence[Mapping[str, Any]], name: str) -> None:
    path = cluster.state_dir / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(list(documents), sort_keys=False), encoding="utf-8")
    cluster.kubectl("apply", "--server-side", "-f", str(path))


def _install_crds(cluster: LocalCluster) -> None:
    dirs = [crd_dir(cluster.binaries.bin_dir, c) for c in ("karpenter", "keda")]
    for d in dirs:
        if not any(d.glob("*.yaml")):
            raise ClusterSetupError(f"no CRDs in {d}; run `make cluster-build`")
    args = [arg for d in dirs for arg in ("-f", str(d))]
    cluster.kubectl("apply", "--server-side", *args, timeout=120)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *args, timeout=90)


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_autoscaling(
    cluster: LocalCluster, pki: ClusterPKI, options: AutoscalingOptions
) -> AutoscalingEndpoints:
    """Start Prometheus, KEDA, Karpenter and GPU discovery against a started `cluster`."""
    cluster.binaries.require(BINARIES)
    cfg = cluster.state_dir / "config"
    kubeconfig = write_kubeconfig(
        cfg / "autoscaling.kubeconfig",
        server=cluster.server,
        ca=pki.ca,
        client=pki.autoscaling,
        user="lipsync-testbed-autoscaling",
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    _install_crds(cluster)
    prometheus_url = _start_prometheus(cluster, kubeconfig, options)
    keda_api = _start_keda(cluster, pki, kubeconfig, env)
    karpenter_metrics = _start_karpenter(cluster, env, options)
    write_catalog(cfg / CATALOG_FILE, options.instance_types)
    cluster.spawn(
        GPU_DISCOVERY_PROCESS,
        [sys.executable, "-m", "lipsync_testbed", "gpu-discovery", "--dir", str(cluster.state_dir)],
    )
    return AutoscalingEndpoints(prometheus_url, keda_api, karpenter_metrics)


def _start_prometheus(cluster: LocalCluster, kubeconfig: Path, options: AutoscalingOptions) -> str:
    cfg = cluster.state_dir / "config" / "prometheus.yml"
    clients = cluster.state_dir / "config" / CLIENTS_FILE
    clients.write_text(client_targets([]), encoding="utf-8")
    config = scrape_config(
        kubeconfig, scrape_interval=options.scrape_interval, clients_file=clients
    )
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = cluster.spawn(
        "prometheus",
        [
            str(cluster.binaries.path("prometheus")),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={cluster.state_dir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    cluster.wait_http(proc, f"{url}/-/ready", None)
    return url


def scrape_clients(cluster: LocalCluster, targets: list[str]) -> None:
    """Have Prometheus scrape these host processes (``host:port``) too, from now on."""
    path = cluster.state_dir / "config" / CLIENTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(client_targets(targets), encoding="utf-8")
    tmp.replace(path)  # file_sd reads whole files


def _start_keda(
    cluster: LocalCluster, pki: ClusterPKI, kubeconfig: Path, env: dict[str, str]
) -> str:
    certs = cluster.state_dir / "config" / "keda-certs"
    certs.mkdir()
    # The file names KEDA reads in --cert-dir (KEDA's pkg/metricsservice/utils/tls.go).
    (certs / "ca.crt").write_bytes(pki.ca.cert_pem)
    (certs / "tls.crt").write_bytes(pki.keda.cert_pem)
    (certs / "tls.key").write_bytes(pki.keda.key_pem)
    keda_env = {
        **env,
        "POD_NAMESPACE": KEDA_NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "WATCH_NAMESPACE": "",
    }
    grpc_port, probe_port, op_metrics_port, adapter_port, adapter_metrics_port = (
        processes.free_port() for _ in range(5)
    )
    operator = cluster.spawn(
        "keda-operator",
        [
            str(cluster.binaries.path("keda-operator")),
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{op_metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
            f"--cert-dir={certs}",
            "--zap-log-level=info",
        ],
        env=keda_env,
    )
    cluster.wait_http(operator, f"http://127.0.0.1:{probe_port}/readyz", None)
    _apply(cluster, keda_registration(adapter_port, pki.ca.cert_pem), "keda-registration")
    adapter = cluster.spawn(
        "keda-adapter",
        [
            str(cluster.binaries.path("keda-adapter")),
            "--bind-address=127.0.0.1",
            f"--secure-port={adapter_port}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--metrics-service-address=127.0.0.1:{grpc_port}",
            f"--port={adapter_metrics_port}",
            "--zap-log-level=info",
        ],
        env=keda_env,
    )
    # /healthz of a generic API server is open to anyone.
    api = f"https://127.0.0.1:{adapter_port}"
    cluster.wait_http(adapter, f"{api}/healthz", _insecure_context())
    wait_keda_ready(cluster.api_client, timeout=cluster.startup_timeout)
    return api


def _start_karpenter(
    cluster: LocalCluster, env: dict[str, str], options: AutoscalingOptions
) -> str:
    cfg = cluster.state_dir / "config"
    instance_types = cfg / "karpenter-instance-types.json"
    instance_types.write_text(
        json.dumps(karpenter_instance_types(options.instance_types), indent=2), encoding="utf-8"
    )
    metrics_port, probe_port = processes.free_port(), processes.free_port()
    proc = cluster.spawn(
        "karpenter",
        [
            str(cluster.binaries.path("karpenter-kwok")),
            "--disable-leader-election",
            f"--metrics-port={metrics_port}",
            f"--health-probe-port={probe_port}",
            f"--instance-types-file-path={instance_types}",
            "--log-level=info",
        ],
        env=env,
    )
    cluster.wait_http(proc, f"http://127.0.0.1:{probe_port}/readyz", None)
    _apply(
        cluster,
        [
            kwok_node_class(),
            *node_pools(options.instance_types, consolidate_after=options.consolidate_after),
        ],
        "karpenter-nodepools",
    )
    return f"http://127.0.0.1:{metrics_port}/metrics"


# -- helpers for tests ----------------------------------------------------------------


def wait_keda_ready(api: client.ApiClient, *, timeout: float = 120.0) -> None:
    """Wait until the external metrics API (KEDA's metrics server) is Available."""
    registration = client.ApiregistrationV1Api(api)

    def available() -> bool:
        service = registration.read_api_service(EXTERNAL_METRICS_APISERVICE)
        conditions = (service.status.conditions if service.status else None) or []
        return any(c.type == "Available" and c.status == "True" for c in conditions)

    try:
        wait_for(
            available, timeout=timeout, interval=0.5, description="KEDA's external metrics API"
        )
    except WaitTimeoutError as exc:
        raise ClusterSetupError(str(exc)) from exc


def nodes_per_nodepool(api: client.ApiClient) -> dict[str, int]:
    """Karpenter's nodes now, per NodePool (nodes being deleted do not count)."""
    nodes = client.CoreV1Api(api).list_node(label_selector=NODEPOOL_LABEL).items
    return dict(
        Counter(
            (n.metadata.labels or {})[NODEPOOL_LABEL]
            for n in nodes
            if n.metadata is not None and n.metadata.deletion_timestamp is None
        )
    )


def nodepool_nodes(api: client.ApiClient, nodepool: str) -> list[client.V1Node]:
    """The nodes of one NodePool (deleting ones included)."""
    selector = f"{NODEPOOL_LABEL}={nodepool}"
    return list(client.CoreV1Api(api).list_node(label_selector=selector).items)


def scheduling_report(api: client.ApiClient, namespace: str) -> str:
    """Why pods of `namespace` wait, beside the state of Karpenter's nodes: what a failed wait
    for a node autoscaler shows (the scheduler's last word on each pending pod, and each node's
    readiness, taints and GPUs)."""
    core = client.CoreV1Api(api)
    lines = []
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.spec is None or pod.metadata is None or pod.spec.node_name:
            continue
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
        ).items
        said = [e for e in events if e.reason in ("FailedScheduling", "Nominated")]
        said.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        last = f"{said[-1].reason}: {said[-1].message}" if said else "no scheduling event"
        lines.append(f"pending pod {pod.metadata.name}: {last}")
    for node in core.list_node(label_selector=NODEPOOL_LABEL).items:
        status, spec = node.status, node.spec
        conditions = (status.conditions if status else None) or []
        ready = next((c.status for c in conditions if c.type == "Ready"), "none")
        taints = [f"{t.key}:{t.effect}" for t in (spec.taints if spec else None) or []]
        gpus = ((status.allocatable if status else None) or {}).get(GPU_RESOURCE, "0")
        deleting = node.metadata.deletion_timestamp is not None if node.metadata else False
        lines.append(
            f"node {node.metadata.name if node.metadata else '?'}: Ready={ready} "
            f"gpus={gpus} taints={taints} deleting={deleting}"
        )
    return "\n".join(lines) or "no pending pod, no Karpenter node"
