"""The model's Service (gRPC 8001, metrics 8002) and PodDisruptionBudget, over all products."""

from __future__ import annotations

from lipsync_operator import naming
from lipsync_operator.manifests.common import Manifest, Owner, metadata
from lipsync_operator.manifests.server import GRPC_PORT, METRICS_PORT


def _metadata(owner: Owner) -> Manifest:
    return metadata(owner, naming.service_name(owner.name), naming.model_labels(owner.name))


def service(owner: Owner) -> Manifest:
    selector = naming.server_selector(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            owner, naming.service_name(owner.name), naming.model_labels(owner.name)
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def endpoint(owner: Owner) -> str:
    return f"{naming.service_name(owner.name)}.{owner.namespace}.svc:{GRPC_PORT}"


def disruption_budget(owner: Owner) -> Manifest:
    """Voluntary evictions (node drains, scale-down) take at most a quarter of the servers."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            owner, naming.service_name(owner.name), naming.model_labels(owner.name)
        ),
        "spec": {
            "maxUnavailable": "25%",
            "selector": {"matchLabels": naming.server_selector(owner.name)},
        },
    }
