"""The HorizontalPodAutoscaler of one product's Deployment."""

from __future__ import annotations

from lipsync_contract.api import Autoscaling
from lipsync_operator import naming
from lipsync_operator.manifests.common import Manifest, Owner, metadata

FRAMES_METRIC = "lipsync_frames_per_second"


def quantity(value: float) -> str:
    """A Kubernetes quantity for a non-negative number (milli-units when fractional)."""
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def autoscaler(owner: Owner, deployment: str, product: str, policy: Autoscaling) -> Manifest:
    """Scale on served frames per pod; CPU is the fallback when no metrics adapter serves them.

    The HPA uses the largest proposal of the metrics it can read, so with no custom-metrics
    adapter it still scales on CPU.
    """
    labels = {**naming.model_labels(owner.name), naming.LABEL_PRODUCT: naming.label_value(product)}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, deployment, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": policy.min_replicas,
            "maxReplicas": policy.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": FRAMES_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": quantity(policy.target_fps),
                        },
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": policy.cpu_utilization,
                        },
                    },
                },
            ],
            "behavior": {
                # GPU pods are expensive to start: scale down slowly, one pod a minute.
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }
