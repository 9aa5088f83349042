"""The autoscaler of one product's Deployment: an autoscaling/v2 HPA, or a KEDA ScaledObject.

Every metric named here is served: CPU by metrics-server; ``lipsync_frames_per_second`` only
when the operator is told a custom-metrics adapter serves it; the KEDA queries read the
servers' own ``lipsync_frames_total`` and the clients' ``lipsync_wanted_streams`` from
Prometheus (docs/operator.md, "Autoscaling").
"""

from __future__ import annotations

from dataclasses import dataclass

from lipsync_contract.api import Autoscaling
from lipsync_operator import naming
from lipsync_operator.config import OperatorConfig
from lipsync_operator.manifests.common import Manifest, Owner, metadata
from lipsync_operator.targets import streams_per_pod

FRAMES_METRIC = "lipsync_frames_per_second"
# Prometheus names of the pod labels lipsync.dev/model and lipsync.dev/gpu-product (the
# kubernetes_sd labelmap of docs/operator.md, and a ServiceMonitor's podTargetLabels).
PROM_MODEL = "lipsync_dev_model"
PROM_PRODUCT = "lipsync_dev_gpu_product"
# GPU pods are expensive to start: scale down slowly, one pod a minute.
SCALE_DOWN: Manifest = {
    "stabilizationWindowSeconds": 300,
    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
}


def quantity(value: float) -> str:
    """A Kubernetes quantity for a non-negative number (milli-units when fractional)."""
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


@dataclass(frozen=True)
class ScaleTarget:
    """One product's Deployment and what its pods should carry."""

    deployment: str
    product: str
    target_fps: float  # served frames/s per pod
    products: int  # products of the model: client demand is split between them


def _labels(owner: Owner, product: str) -> dict[str, str]:
    return {**naming.model_labels(owner.name), naming.LABEL_PRODUCT: naming.label_value(product)}


def _target_ref(target: ScaleTarget) -> Manifest:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.deployment}


def horizontal_autoscaler(
    owner: Owner, target: ScaleTarget, policy: Autoscaling, *, frames_metric: bool
) -> Manifest:
    """CPU utilization always; served frames per pod when an adapter serves the Pods metric.

    An HPA with a metric nothing serves never scales down, so the frames metric is opt-in.
    An HPA cannot go below one pod (scale to zero needs KEDA).
    """
    metrics: list[Manifest] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": policy.cpu_utilization},
            },
        }
    ]
    if frames_metric:
        pods_metric = {
            "metric": {"name": FRAMES_METRIC},
            "target": {"type": "AverageValue", "averageValue": quantity(target.target_fps)},
        }
        metrics.insert(0, {"type": "Pods", "pods": pods_metric})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, target.deployment, _labels(owner, target.product)),
        "spec": {
            "scaleTargetRef": _target_ref(target),
            "minReplicas": max(1, policy.min_replicas),
            "maxReplicas": policy.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": SCALE_DOWN},
        },
    }


def frames_query(owner: Owner, product: str) -> str:
    """Frames/s the product's pods serve now (PromQL)."""
    selector = (
        f'namespace="{owner.namespace}",{PROM_MODEL}="{naming.label_value(owner.name)}",'
        f'{PROM_PRODUCT}="{naming.label_value(product)}"'
    )
    return f"sum(rate(lipsync_frames_total{{{selector}}}[1m]))"


def wanted_streams_query(owner: Owner) -> str:
    """Streams clients want from the model, open or waiting for a server (PromQL)."""
    selector = f'namespace="{owner.namespace}",{PROM_MODEL}="{naming.label_value(owner.name)}"'
    return f"sum(lipsync_wanted_streams{{{selector}}})"


def _prometheus_trigger(name: str, address: str, query: str, threshold: float) -> Manifest:
    return {
        "type": "prometheus",
        "name": name,
        "metadata": {
            "serverAddress": address,
            "query": query,
            "threshold": f"{threshold:g}",
            # Any frame or any wanted stream wakes a product scaled to zero.
            "activationThreshold": "0",
        },
    }


def scaled_object(
    owner: Owner, target: ScaleTarget, policy: Autoscaling, config: OperatorConfig
) -> Manifest:
    """KEDA scales on served frames/s per pod and on clients' wanted streams per pod.

    ``minReplicas: 0`` scales an idle product to zero; the wanted-streams trigger is what wakes
    it (a product at zero serves no frames). Demand is split evenly over the model's products.
    """
    stream_threshold = streams_per_pod(target.target_fps) * max(1, target.products)
    prometheus = config.prometheus_address
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(owner, target.deployment, _labels(owner, target.product)),
        "spec": {
            "scaleTargetRef": _target_ref(target),
            "pollingInterval": config.keda_polling_seconds,
            # Idle this long (no frames, no wanted streams) before the last pod goes.
            "cooldownPeriod": config.keda_cooldown_seconds,
            "minReplicaCount": policy.min_replicas,
            "maxReplicaCount": policy.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": SCALE_DOWN}}},
            "triggers": [
                _prometheus_trigger(
                    "frames", prometheus, frames_query(owner, target.product), target.target_fps
                ),
                _prometheus_trigger(
                    "wanted-streams", prometheus, wanted_streams_query(owner), stream_threshold
                ),
            ],
        },
    }


def autoscaler(
    owner: Owner, target: ScaleTarget, policy: Autoscaling, config: OperatorConfig
) -> Manifest:
    """The object the operator's settings choose."""
    if config.autoscaler == "keda":
        return scaled_object(owner, target, policy, config)
    return horizontal_autoscaler(owner, target, policy, frames_metric=config.hpa_frames_metric)
