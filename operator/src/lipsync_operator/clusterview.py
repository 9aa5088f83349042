"""What a reconcile reads, from watch-fed in-memory indexes instead of API lists.

kopf keeps one watch per resource kind and, for each ``@kopf.index`` (see ``indexes.py``), a
mapping of key -> the values of every object that produced that key. `ClusterView` holds those
mappings and answers the questions a reconcile asks; it never calls the API. The index functions
and the view are pure, so both are unit-tested with plain dicts standing in for kopf's indexes.

To add a lookup (as build Jobs by engine key across namespaces were added): write a pure
``*_entry`` function here, register it in ``indexes.py`` with ``@kopf.index``, add a field and
a method to `ClusterView`, and pass the injected index in ``indexes.view``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import ValidationError

from lipsync_contract.api import EngineStatus, LipSyncModelStatus
from lipsync_contract.result import parse_build_result
from lipsync_operator import naming
from lipsync_operator.observed import (
    BuildJob,
    GpuNode,
    Observed,
    ServerDeployment,
    build_job,
    gpu_node,
    pod_gpu_request,
    server_deployment,
    termination_message,
)
from lipsync_operator.podhealth import PodProblem, pod_problem
from lipsync_operator.signing import BuildSigner

Obj = Mapping[str, Any]
K = TypeVar("K")
V = TypeVar("V")
# kopf.Index is a Mapping of key -> Store (an iterable of values); plain dicts of lists fit too.
IndexView = Mapping[K, Iterable[V]]

ALL_PRODUCTS = "*"  # the models index key of models whose spec selects every GPU product


@dataclass(frozen=True)
class PodUse:
    """A bound, unfinished pod as the capacity plan sees it."""

    namespace: str
    model: str  # its lipsync.dev/model label ("" for other pods)
    server: bool  # a LipSyncModel server pod
    gpus: int  # GPU units it requests
    deleting: bool


@dataclass(frozen=True)
class BuildPod:
    """A build Job's pod and the result its builder wrote, if it has finished."""

    created: str
    message: str


@dataclass(frozen=True)
class ModelRef:
    namespace: str
    name: str
    uid: str


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def owner_uids(obj: Obj, kind: str) -> list[str]:
    """UIDs of the owners of ``kind`` in the lipsync.dev group."""
    return [
        str(ref["uid"])
        for ref in _meta(obj).get("ownerReferences") or []
        if ref.get("kind") == kind and str(ref.get("apiVersion", "")).startswith("lipsync.dev/")
    ]


# -- index entries: object -> {key: value} (None: not indexed) ---------------------------------


def node_entry(
    obj: Obj, gpu_resource: str, autoscaled_label: str = ""
) -> dict[str, GpuNode] | None:
    node = gpu_node(obj, gpu_resource, autoscaled_label)
    return None if node is None else {node.name: node}


def pod_entry(obj: Obj, gpu_resource: str) -> dict[str, PodUse] | None:
    """Bound, unfinished pods that hold GPUs or serve a model, by node."""
    node = (obj.get("spec") or {}).get("nodeName")
    phase = (obj.get("status") or {}).get("phase")
    if not node or phase in ("Succeeded", "Failed"):
        return None
    labels: Mapping[str, str] = _meta(obj).get("labels") or {}
    server = labels.get(naming.LABEL_COMPONENT) == naming.COMPONENT_SERVER and (
        naming.LABEL_MODEL in labels
    )
    units = pod_gpu_request(obj, gpu_resource)
    if not units and not server:
        return None
    use = PodUse(
        namespace=str(_meta(obj).get("namespace", "")),
        model=labels.get(naming.LABEL_MODEL, ""),
        server=server,
        gpus=units,
        deleting=bool(_meta(obj).get("deletionTimestamp")),
    )
    return {str(node): use}


def build_pod_entry(obj: Obj) -> dict[tuple[str, str], BuildPod] | None:
    """Build pods by (namespace, job name)."""
    meta = _meta(obj)
    job = (meta.get("labels") or {}).get("job-name")
    if not job:
        return None
    created = meta.get("creationTimestamp") or ""
    pod = BuildPod(created=str(created), message=termination_message(obj) or "")
    return {(str(meta.get("namespace", "")), str(job)): pod}


def job_entry(obj: Obj, signer: BuildSigner) -> dict[str, BuildJob] | None:
    """Owned build Jobs by owner UID (their results come from the build pods index), marked
    unsigned when the operator's signature does not verify: a model never follows such a Job,
    even its own (its results would be published to every model of the key)."""
    job = replace(build_job(obj), signed=signer.verified(obj))
    return {uid: job for uid in owner_uids(obj, "LipSyncModel")} or None


def deployment_entry(obj: Obj) -> dict[str, ServerDeployment] | None:
    deployment = server_deployment(obj)
    return {uid: deployment for uid in owner_uids(obj, "LipSyncModel")} or None


def hpa_entry(obj: Obj) -> dict[str, str] | None:
    """Owned autoscalers' names by owner UID (HPAs, and KEDA ScaledObjects in their index)."""
    name = str(_meta(obj).get("name", ""))
    return {uid: name for uid in owner_uids(obj, "LipSyncModel")} or None


def pod_problem_entry(obj: Obj) -> dict[tuple[str, str], PodProblem] | None:
    """A model's pods that cannot start, by (namespace, model label)."""
    meta = _meta(obj)
    model = (meta.get("labels") or {}).get(naming.LABEL_MODEL)
    problem = pod_problem(obj) if model else None
    if problem is None:
        return None
    return {(str(meta.get("namespace", "")), str(model)): problem}


def build_key_entry(obj: Obj, signer: BuildSigner) -> dict[str, BuildJob] | None:
    """Every model's build Jobs by engine key, in all namespaces (one build per key): only
    those the operator signed, so a look-alike Job is never followed."""
    labels: Mapping[str, str] = _meta(obj).get("labels") or {}
    if labels.get(naming.LABEL_COMPONENT) != naming.COMPONENT_BUILD:
        return None
    if not signer.verified(obj):
        return None
    job = build_job(obj)
    return {job.key: job} if job.key else None


def _ref(obj: Obj) -> ModelRef:
    meta = _meta(obj)
    return ModelRef(str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta["uid"]))


def waiting_entry(obj: Obj) -> dict[str, ModelRef] | None:
    """Models by the engine keys their status says are building (maybe in another's Job)."""
    engines = (obj.get("status") or {}).get("engines") or []
    keys = {str(e["key"]) for e in engines if e.get("key") and e.get("state") == "Building"}
    return {key: _ref(obj) for key in keys} or None


@dataclass(frozen=True)
class PublishedEngine:
    """A Ready engine a model's status publishes, and the namespace of that model."""

    namespace: str
    engine: EngineStatus


def published_entry(obj: Obj) -> dict[str, PublishedEngine] | None:
    """Models' Ready engines by key, from their status: another model's engine of a key serves
    a model of the same namespace (its build's pod, and so the Job's result, may be gone with its
    node). Only the same namespace: whoever may write a model's status there may already write
    the model's own."""
    try:
        status = LipSyncModelStatus.model_validate(dict(obj.get("status") or {}))
    except ValidationError:
        return None
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    ready = {
        e.key: PublishedEngine(namespace, e)
        for e in status.engines
        if e.state == "Ready" and e.key and e.artifact
    }
    return ready or None


def model_entry(obj: Obj) -> dict[str, ModelRef]:
    """Models by the GPU products they select (ALL_PRODUCTS when they select every one)."""
    ref = _ref(obj)
    gpus = (obj.get("spec") or {}).get("gpus") or {}
    products = [str(p) for p in gpus.get("products") or []] or [ALL_PRODUCTS]
    return {product: ref for product in products}


# -- the view ---------------------------------------------------------------------------------


def _values(index: IndexView[K, V], key: K) -> list[V]:
    return list(index[key]) if key in index else []


@dataclass(frozen=True)
class ClusterView:
    """The operator's indexes, read-only; see the module docstring."""

    nodes: IndexView[str, GpuNode] = field(default_factory=dict)
    pods: IndexView[str, PodUse] = field(default_factory=dict)
    build_pods: IndexView[tuple[str, str], BuildPod] = field(default_factory=dict)
    jobs: IndexView[str, BuildJob] = field(default_factory=dict)
    deployments: IndexView[str, ServerDeployment] = field(default_factory=dict)
    hpas: IndexView[str, str] = field(default_factory=dict)
    scaled_objects: IndexView[str, str] = field(default_factory=dict)  # only with KEDA
    models: IndexView[str, ModelRef] = field(default_factory=dict)
    builds: IndexView[str, BuildJob] = field(default_factory=dict)  # by engine key
    waiting: IndexView[str, ModelRef] = field(default_factory=dict)  # by engine key
    published: IndexView[str, PublishedEngine] = field(default_factory=dict)  # by engine key
    # by (namespace, model label)
    pod_problems: IndexView[tuple[str, str], PodProblem] = field(default_factory=dict)

    def snapshot(self) -> ClusterView:
        """A copy in plain dicts: kopf changes its indexes on the event loop, so a reconcile in
        a worker thread reads a copy taken on the loop, never the live indexes."""
        copies = {
            name: {key: list(values) for key, values in getattr(self, name).items()}
            for name in self.__dataclass_fields__
        }
        return ClusterView(**copies)

    def gpu_nodes(self) -> tuple[GpuNode, ...]:
        return tuple(sorted((n for s in self.nodes.values() for n in s), key=lambda n: n.name))

    def build_job(self, namespace: str, job: BuildJob) -> BuildJob:
        """The Job with the newest result its pods wrote."""
        pods = sorted(_values(self.build_pods, (namespace, job.name)), key=lambda p: p.created)
        result = job.result
        for pod in pods:
            parsed = parse_build_result(pod.message) if pod.message else None
            if parsed is not None:
                result = parsed
        return replace(job, result=result)

    def observed(self, namespace: str, model: str, uid: str) -> Observed:
        """Everything `desired_state` reads about one model, except its published engines."""
        nodes = self.gpu_nodes()
        names = {node.name for node in nodes}
        label = naming.label_value(model)
        others: dict[str, int] = {}
        serving: dict[str, int] = {}
        for node in names:
            for pod in _values(self.pods, node):
                if pod.namespace == namespace and pod.model == label:
                    if pod.server and not pod.deleting:
                        serving[node] = serving.get(node, 0) + 1
                elif pod.gpus:
                    others[node] = others.get(node, 0) + pod.gpus
        jobs = sorted(_values(self.jobs, uid), key=lambda j: j.name)
        return Observed(
            nodes=nodes,
            jobs=tuple(self.build_job(namespace, job) for job in jobs),
            deployments=tuple(sorted(_values(self.deployments, uid), key=lambda d: d.name)),
            hpas=frozenset(_values(self.hpas, uid)),
            scaled_objects=frozenset(_values(self.scaled_objects, uid)),
            gpu_used_by_others=others,
            serving_pods_by_node=serving,
            pod_problems=tuple(_values(self.pod_problems, (namespace, label))),
        )

    def builds_by_key(self, keys: Iterable[str]) -> dict[str, tuple[BuildJob, ...]]:
        """Every model's build Jobs of ``keys``, with their results."""
        found = {
            key: tuple(self.build_job(job.namespace, job) for job in _values(self.builds, key))
            for key in set(keys)
        }
        return {key: jobs for key, jobs in found.items() if jobs}

    def published_engines(self, keys: Iterable[str], namespace: str) -> list[EngineStatus]:
        """One Ready engine per key of ``keys`` that the status of a model in ``namespace``
        publishes."""
        found = (
            [p.engine for p in _values(self.published, key) if p.namespace == namespace]
            for key in sorted(set(keys))
        )
        return [engines[0] for engines in found if engines]

    def waiting_for(self, key: str) -> list[ModelRef]:
        return _values(self.waiting, key)

    def models_labelled(self, namespace: str, label: str) -> set[ModelRef]:
        """Models in ``namespace`` whose pods carry the model label ``label``."""
        return {
            ref
            for refs in self.models.values()
            for ref in refs
            if ref.namespace == namespace and naming.label_value(ref.name) == label
        }

    def models_on(self, products: Iterable[str]) -> set[ModelRef]:
        """Models that select any of ``products`` (or every product)."""
        found: set[ModelRef] = set(_values(self.models, ALL_PRODUCTS))
        for product in products:
            found.update(_values(self.models, product))
        return found
