"""The model's NetworkPolicy: its servers accept gRPC only from the namespaces the admin names
and metrics only from the monitoring namespace."""

from __future__ import annotations

from lipsync_operator import naming
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.common import Manifest, Owner, metadata
from lipsync_operator.manifests.server import GRPC_PORT, METRICS_PORT

# Set by the API server on every namespace (Kubernetes 1.22+).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ANY_NAMESPACE = "*"


def _from_namespaces(names: list[str]) -> list[Manifest]:
    if ANY_NAMESPACE in names:
        return [{"namespaceSelector": {}}]
    selector = {
        "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": names}]
    }
    return [{"namespaceSelector": selector}]


def network_policy(owner: Owner, config: OperatorConfig) -> Manifest:
    """Ingress to the model's server pods (every product): gRPC from the model's own namespace
    and ``config.grpc_client_namespaces`` ("*": any), metrics from ``config.metrics_namespace``
    ("": none). Egress is left open (servers read their engine and avatar from volumes)."""
    grpc_from = sorted({owner.namespace, *config.grpc_client_namespaces})
    ingress: list[Manifest] = [
        {
            "from": _from_namespaces(grpc_from),
            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
        }
    ]
    if config.metrics_namespace:
        ingress.append(
            {
                "from": _from_namespaces([config.metrics_namespace]),
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            owner, naming.service_name(owner.name), naming.model_labels(owner.name)
        ),
        "spec": {
            "podSelector": {"matchLabels": naming.server_selector(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
