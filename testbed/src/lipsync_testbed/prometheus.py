"""The test bed's Prometheus: its scrape configuration and a small client of its HTTP API.

Prometheus discovers pods through the test bed's API server (`kubernetes_sd_configs`, role
`pod`) and scrapes those that ask for it with the conventional annotations, which the chart's
server pods carry (lipsync_operator.manifests.server):

    prometheus.io/scrape: "true"     scrape this pod
    prometheus.io/port:   "<port>"   on this port (the server's METRICS_PORT, 8002)
    prometheus.io/path:   "/metrics" at this path (default /metrics)

The target is `<pod IP>:<port>`: Prometheus runs on the host, which routes each real node's pod
range (198.18.0.0/15) to that node, so it reaches the containers as it would reach pods on a
cluster network. Only Running pods are scraped. Every series gets the labels `namespace`, `pod`,
`node` and the pod's own labels (as in Prometheus' example Kubernetes configuration).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRAPE_ANNOTATION = "prometheus.io/scrape"
PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"
POD_JOB = "kubernetes-pods"
# Processes on the host that export metrics for the cluster (a load generator's
# lipsync_wanted_streams): targets listed in a file, their own labels kept.
CLIENT_JOB = "clients"
CLIENTS_FILE = "prometheus-clients.json"


def client_targets(targets: list[str]) -> str:
    """The file_sd document that lists ``host:port`` client targets."""
    return json.dumps([{"targets": targets}] if targets else [])


def _meta(annotation: str) -> str:
    """`prometheus.io/port` -> `__meta_kubernetes_pod_annotation_prometheus_io_port`."""
    return "__meta_kubernetes_pod_annotation_" + "".join(
        ch if ch.isalnum() else "_" for ch in annotation
    )


def scrape_config(
    kubeconfig: Path, *, scrape_interval: str = "1s", clients_file: Path | None = None
) -> dict[str, Any]:
    """prometheus.yml: one job scraping annotated pods, discovered with `kubeconfig`, and one
    scraping the client targets `clients_file` lists (file_sd, re-read as it changes)."""
    clients = []
    if clients_file is not None:
        clients = [
            {
                "job_name": CLIENT_JOB,
                "scrape_timeout": scrape_interval,
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(clients_file)], "refresh_interval": "1s"}],
            }
        ]
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": POD_JOB,
                "scrape_timeout": scrape_interval,
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {
                        "source_labels": [_meta(SCRAPE_ANNOTATION)],
                        "action": "keep",
                        "regex": "true",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_phase"],
                        "action": "keep",
                        "regex": "Running",
                    },
                    {
                        "source_labels": [_meta(PATH_ANNOTATION)],
                        "action": "replace",
                        "target_label": "__metrics_path__",
                        "regex": "(.+)",
                    },
                    {
                        # One target per pod (not per declared container port).
                        "source_labels": ["__meta_kubernetes_pod_ip", _meta(PORT_ANNOTATION)],
                        "action": "replace",
                        "regex": r"(.+);(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                ],
            },
            *clients,
        ],
    }


class PrometheusQueryError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, unreachable, ...)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class PrometheusClient:
    """Instant queries and target listing against Prometheus' HTTP API (/api/v1)."""

    url: str  # e.g. http://127.0.0.1:9090
    timeout: float = 5.0

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PrometheusQueryError(
                f"{path} {params}: HTTP {exc.code}: {body.get('error', exc.reason)}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusQueryError(f"{self.url}{path}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """The instant vector of `promql` now (a scalar result is one sample without labels)."""
        data = self._get("/api/v1/query", {"query": promql})
        if data["resultType"] == "vector":
            return [
                Sample(labels=dict(r["metric"]), value=float(r["value"][1])) for r in data["result"]
            ]
        if data["resultType"] == "scalar":
            return [Sample(labels={}, value=float(data["result"][1]))]
        raise PrometheusQueryError(f"{promql!r}: unsupported result type {data['resultType']}")

    def value(self, promql: str) -> float:
        """The single value of `promql` (NaN when the vector is empty)."""
        samples = self.query(promql)
        if len(samples) > 1:
            raise PrometheusQueryError(f"{promql!r}: {len(samples)} series, expected one")
        return samples[0].value if samples else math.nan

    def active_targets(self) -> list[dict[str, Any]]:
        """Targets being scraped: each with `labels`, `health` ("up"/"down"), `lastError`."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
