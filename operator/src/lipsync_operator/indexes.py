"""The operator's kopf indexes: one watch per kind feeds them; handlers get them as kwargs.

Each function's name is the kwarg kopf injects into every handler (``lipsync_nodes: kopf.Index``).
The entries are computed by the pure functions in ``clusterview``; `view` bundles the injected
indexes into a `ClusterView`. kopf starts no handler before every index is populated, so the
first reconcile after a start already sees every node and child.

KEDA's ScaledObjects are indexed only when the operator is configured for KEDA
(`register_optional`, called before kopf starts): the chart grants them only then, and kopf
would hold every handler until an index it cannot list is filled. kopf serves no watch for a
resource whose CRD is absent (it warns, and starts one when the CRD appears), so an index of a
CRD not yet installed blocks nothing.
"""

from __future__ import annotations

from typing import Any

import kopf

from lipsync_contract.api import GROUP, PLURAL, VERSION
from lipsync_operator import naming
from lipsync_operator.clusterview import (
    BuildPod,
    ClusterView,
    IndexView,
    ModelRef,
    PodUse,
    PublishedEngine,
    build_key_entry,
    build_pod_entry,
    deployment_entry,
    hpa_entry,
    job_entry,
    model_entry,
    node_entry,
    pod_entry,
    pod_problem_entry,
    published_entry,
    waiting_entry,
)
from lipsync_operator.config import OperatorConfig
from lipsync_operator.observed import BuildJob, GpuNode, ServerDeployment
from lipsync_operator.podhealth import PodProblem

OWNED = {naming.LABEL_MANAGED_BY: naming.MANAGER}
BUILD_PODS: dict[str, Any] = {
    naming.LABEL_COMPONENT: naming.COMPONENT_BUILD,
    "job-name": kopf.PRESENT,
}


# Every index function returns a dict, {} for "no entry": kopf keeps an object's previous
# entries when its function returns None (a pod that finished would keep its GPUs counted).


def _config(memo: kopf.Memo) -> OperatorConfig:
    config: OperatorConfig = memo["config"]
    return config


def _gpu_resource(memo: kopf.Memo) -> str:
    return _config(memo).gpu_resource


@kopf.index("", "v1", "nodes")
def lipsync_nodes(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, GpuNode]:
    config = _config(memo)
    return node_entry(body, config.gpu_resource, config.autoscaled_node_label) or {}


@kopf.index("", "v1", "pods")
def lipsync_pods(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, PodUse]:
    return pod_entry(body, _gpu_resource(memo)) or {}


@kopf.index("", "v1", "pods", labels=BUILD_PODS)
def lipsync_build_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], BuildPod]:
    return build_pod_entry(body) or {}


@kopf.index("", "v1", "pods", labels=OWNED)
def lipsync_pod_problems(body: kopf.Body, **_: Any) -> dict[tuple[str, str], PodProblem]:
    return pod_problem_entry(body) or {}


@kopf.index("batch", "v1", "jobs", labels=OWNED)
def lipsync_jobs(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, BuildJob]:
    return job_entry(body, memo["signer"]) or {}


@kopf.index("apps", "v1", "deployments", labels=OWNED)
def lipsync_deployments(body: kopf.Body, **_: Any) -> dict[str, ServerDeployment]:
    return deployment_entry(body) or {}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED)
def lipsync_hpas(body: kopf.Body, **_: Any) -> dict[str, str]:
    return hpa_entry(body) or {}


def lipsync_scaled_objects(body: kopf.Body, **_: Any) -> dict[str, str]:
    return hpa_entry(body) or {}


def register_optional(config: OperatorConfig, registry: kopf.OperatorRegistry) -> None:
    """Index what only some configurations use (see the module docstring); once per registry."""
    if config.autoscaler != "keda":
        return
    indexing = registry._indexing.get_all_handlers()  # kopf has no public lookup by handler id
    if any(handler.fn is lipsync_scaled_objects for handler in indexing):
        return
    kopf.index("keda.sh", "v1alpha1", "scaledobjects", labels=OWNED, registry=registry)(
        lipsync_scaled_objects
    )


@kopf.index("batch", "v1", "jobs", labels=OWNED)
def lipsync_builds(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, BuildJob]:
    return build_key_entry(body, memo["signer"]) or {}


@kopf.index(GROUP, VERSION, PLURAL)
def lipsync_waiting(body: kopf.Body, **_: Any) -> dict[str, ModelRef]:
    return waiting_entry(body) or {}


@kopf.index(GROUP, VERSION, PLURAL)
def lipsync_published(body: kopf.Body, **_: Any) -> dict[str, PublishedEngine]:
    return published_entry(body) or {}


@kopf.index(GROUP, VERSION, PLURAL)
def lipsync_models(body: kopf.Body, **_: Any) -> dict[str, ModelRef]:
    return model_entry(body)


def view(kwargs: dict[str, Any], cluster_pods: IndexView[str, PodUse] | None = None) -> ClusterView:
    """The indexes a handler was given, as a `ClusterView` (they stay live: kopf updates them).
    ``cluster_pods``: every namespace's pods (``podwatch``) when kopf watches only some."""
    return ClusterView(
        nodes=kwargs["lipsync_nodes"],
        pods=kwargs["lipsync_pods"] if cluster_pods is None else cluster_pods,
        build_pods=kwargs["lipsync_build_pods"],
        pod_problems=kwargs["lipsync_pod_problems"],
        jobs=kwargs["lipsync_jobs"],
        deployments=kwargs["lipsync_deployments"],
        hpas=kwargs["lipsync_hpas"],
        scaled_objects=kwargs.get("lipsync_scaled_objects", {}),
        models=kwargs["lipsync_models"],
        builds=kwargs["lipsync_builds"],
        waiting=kwargs["lipsync_waiting"],
        published=kwargs["lipsync_published"],
    )
