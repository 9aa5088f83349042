"""Typed views of what the operator reads from the cluster, parsed from API objects (dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from lipsync_contract.result import BuildResult, parse_build_result
from lipsync_operator.naming import (
    ANNOTATION_ARTIFACT,
    ANNOTATION_ARTIFACT_SHA256,
    ANNOTATION_AUTOSCALED_GPUS,
    ANNOTATION_ENCODER_ARTIFACT,
    ANNOTATION_ENCODER_ARTIFACT_SHA256,
    ANNOTATION_ENCODER_KEY,
    ANNOTATION_ENGINE_KEY,
    ANNOTATION_SERVING_SPEC,
    LABEL_PRODUCT,
)
from lipsync_operator.podhealth import PodProblem

Obj = Mapping[str, Any]

GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_COUNT = "nvidia.com/gpu.count"
GFD_MAJOR = "nvidia.com/gpu.compute.major"
GFD_MINOR = "nvidia.com/gpu.compute.minor"
GFD_MEMORY = "nvidia.com/gpu.memory"
GFD_REPLICAS = "nvidia.com/gpu.replicas"
GFD_SHARING = "nvidia.com/gpu.sharing-strategy"
# With time-slicing or MPS and renameByDefault=false, GFD appends this to the product label.
SHARED_SUFFIX = "-SHARED"
BUILDER_CONTAINER = "builder"


def _int(value: object, default: int = 0) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _timestamp(value: object) -> datetime | None:
    """An API timestamp (RFC 3339 string, or a datetime from the client's to_dict)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _path(obj: Obj, *keys: str) -> Any:
    node: Any = obj
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


@dataclass(frozen=True)
class GpuNode:
    """One node's GPUs as GPU Feature Discovery and the device plugin describe them."""

    name: str
    product: str  # without the -SHARED suffix: the engine is the same
    product_label: str  # the label as it is on the node
    gpus: int  # healthy physical GPUs: allocatable / sharing replicas
    compute_capability: str
    memory_mib: int
    allocatable: int  # nvidia.com/gpu allocatable: gpus x sharing replicas
    sharing_strategy: str  # none | time-slicing | mps
    sharing_replicas: int
    ready: bool = True
    cordoned: bool = False
    not_ready_since: datetime | None = None  # the Ready condition's last transition
    autoscaled: bool = False  # added by a node autoscaler (Karpenter's nodepool label)

    @property
    def schedulable(self) -> bool:
        """New pods (build Jobs, surge pods) can land here."""
        return self.ready and not self.cordoned

    def counts(self, now: datetime, grace: timedelta) -> bool:
        """Its GPUs still count for replicas: Ready, or NotReady for less than ``grace``.

        Cordoned nodes count: a drain moves pods (bounded by the PodDisruptionBudget), it does
        not shrink the Deployment.
        """
        if self.ready:
            return True
        return self.not_ready_since is not None and now - self.not_ready_since < grace


def _not_ready_since(ready_condition: Mapping[str, Any]) -> datetime | None:
    """When the node stopped being Ready. The node controller turns a silent node's False into
    Unknown with a new transition time; its last heartbeat still says when it was last heard."""
    transition = _timestamp(ready_condition.get("lastTransitionTime"))
    heartbeat = _timestamp(ready_condition.get("lastHeartbeatTime"))
    if ready_condition.get("status") == "Unknown" and transition and heartbeat:
        return min(transition, heartbeat)
    return transition


def gpu_node(
    obj: Obj, gpu_resource: str = "nvidia.com/gpu", autoscaled_label: str = ""
) -> GpuNode | None:
    """Parse a Node; None when it has no GPU product label.

    ``autoscaled_label``: a node carrying this label key was added by a node autoscaler.
    """
    labels: Mapping[str, str] = _path(obj, "metadata", "labels") or {}
    product_label = labels.get(GFD_PRODUCT, "")
    if not product_label:
        return None
    allocatable = _int((_path(obj, "status", "allocatable") or {}).get(gpu_resource, 0))
    replicas = max(1, _int(labels.get(GFD_REPLICAS, 1), 1))
    # The device plugin's allocatable drops unhealthy GPUs; GFD's gpu.count label does not.
    gpus = allocatable // replicas
    major, minor = labels.get(GFD_MAJOR, ""), labels.get(GFD_MINOR, "")
    conditions = _path(obj, "status", "conditions") or []
    ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    since = None
    if ready_condition is not None and not ready:
        since = _not_ready_since(ready_condition)
    return GpuNode(
        name=str(_path(obj, "metadata", "name")),
        product=product_label.removesuffix(SHARED_SUFFIX),
        product_label=product_label,
        gpus=gpus,
        compute_capability=f"{major}.{minor}" if major else "",
        memory_mib=_int(labels.get(GFD_MEMORY, 0)),
        allocatable=allocatable,
        sharing_strategy=labels.get(GFD_SHARING, "none") or "none",
        sharing_replicas=replicas,
        ready=ready,
        cordoned=bool(_path(obj, "spec", "unschedulable")),
        not_ready_since=since,
        autoscaled=bool(autoscaled_label) and autoscaled_label in labels,
    )


JobPhase = Literal["Active", "Succeeded", "Failed"]


@dataclass(frozen=True)
class BuildJob:
    """A build Job of some model, with the builder's result when it has finished."""

    name: str
    key: str
    product: str
    phase: JobPhase
    result: BuildResult | None = None
    failure: str = ""  # the Job's own reason when there is no result (deadline, eviction)
    namespace: str = ""
    created: str = ""  # creationTimestamp, RFC 3339 (sorts in time order)
    deleting: bool = False  # its owner was deleted, or someone deleted it
    # False: the operator's signature does not verify (signing.py); such a Job is never followed.
    signed: bool = True

    @property
    def ref(self) -> str:
        """``namespace/name``: how a model that waits for it names it."""
        return f"{self.namespace}/{self.name}"

    @property
    def ready_result(self) -> BuildResult | None:
        """The builder's Ready result, when the Job succeeded with one."""
        result = self.result
        if self.phase == "Succeeded" and result is not None and result.state == "Ready":
            return result
        return None


def _finished(obj: Obj) -> tuple[JobPhase, str]:
    for condition in _path(obj, "status", "conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", ""
        if condition.get("type") == "Failed":
            reason = condition.get("reason", "Failed")
            message = condition.get("message", "")
            return "Failed", f"{reason}: {message}" if message else reason
    return "Active", ""


def termination_message(pod: Obj, container: str = BUILDER_CONTAINER) -> str | None:
    for status in _path(pod, "status", "containerStatuses") or []:
        if status.get("name") == container:
            message = _path(status, "state", "terminated", "message")
            return str(message) if message else None
    return None


def build_job(obj: Obj, pods: Sequence[Obj] = ()) -> BuildJob:
    """Parse a build Job and the pods it ran (the newest result wins)."""
    phase, failure = _finished(obj)
    result = None
    ordered = sorted(pods, key=lambda p: str(_path(p, "metadata", "creationTimestamp") or ""))
    for pod in ordered:
        message = termination_message(pod)
        parsed = parse_build_result(message) if message else None
        if parsed is not None:
            result = parsed
    created = _timestamp(_path(obj, "metadata", "creationTimestamp"))
    return BuildJob(
        name=str(_path(obj, "metadata", "name")),
        key=str((_path(obj, "metadata", "annotations") or {}).get(ANNOTATION_ENGINE_KEY, "")),
        product=str((_path(obj, "metadata", "labels") or {}).get(LABEL_PRODUCT, "")),
        phase=phase,
        result=result,
        failure=failure,
        namespace=str(_path(obj, "metadata", "namespace") or ""),
        created=created.isoformat() if created is not None else "",
        deleting=bool(_path(obj, "metadata", "deletionTimestamp")),
    )


@dataclass(frozen=True)
class ServedEngine:
    """What a product's servers load: the UNet engine and, for speech input, its audio encoder."""

    key: str
    artifact: str
    encoder_key: str = ""
    encoder_artifact: str = ""
    # As built: the servers refuse an artifact with another digest ("": not checked).
    artifact_sha256: str = ""
    encoder_artifact_sha256: str = ""


@dataclass(frozen=True)
class ServerDeployment:
    """A server Deployment the operator owns."""

    name: str
    product: str
    engine_key: str
    artifact: str  # file name of the engine in its cache entry
    replicas: int  # spec.replicas (the HPA's choice when it scales)
    ready_replicas: int
    updated_replicas: int
    rolled_out: bool  # the controller has seen the latest spec and every pod is updated
    encoder_key: str = ""
    encoder_artifact: str = ""
    artifact_sha256: str = ""
    encoder_artifact_sha256: str = ""
    serving_spec: str = ""  # JSON of the spec its pod template was rendered from
    # GPUs on node-autoscaled nodes it may serve on without an autoscaler (None: not recorded).
    autoscaled_gpus: int | None = None

    @property
    def engine(self) -> ServedEngine:
        return ServedEngine(
            self.engine_key,
            self.artifact,
            self.encoder_key,
            self.encoder_artifact,
            self.artifact_sha256,
            self.encoder_artifact_sha256,
        )


def server_deployment(obj: Obj) -> ServerDeployment:
    spec_replicas = _path(obj, "spec", "replicas")
    replicas = 1 if spec_replicas is None else _int(spec_replicas)
    status: Mapping[str, Any] = obj.get("status") or {}
    generation = _int(_path(obj, "metadata", "generation"), 0)
    observed = _int(status.get("observedGeneration", 0))
    updated = _int(status.get("updatedReplicas", 0))
    total = _int(status.get("replicas", 0))
    annotations: Mapping[str, str] = _path(obj, "metadata", "annotations") or {}
    return ServerDeployment(
        name=str(_path(obj, "metadata", "name")),
        product=str((_path(obj, "metadata", "labels") or {}).get(LABEL_PRODUCT, "")),
        engine_key=annotations.get(ANNOTATION_ENGINE_KEY, ""),
        artifact=annotations.get(ANNOTATION_ARTIFACT, ""),
        serving_spec=annotations.get(ANNOTATION_SERVING_SPEC, ""),
        replicas=replicas,
        ready_replicas=_int(status.get("readyReplicas", 0)),
        updated_replicas=updated,
        rolled_out=observed >= generation and updated >= replicas and total <= replicas,
        encoder_key=annotations.get(ANNOTATION_ENCODER_KEY, ""),
        encoder_artifact=annotations.get(ANNOTATION_ENCODER_ARTIFACT, ""),
        artifact_sha256=annotations.get(ANNOTATION_ARTIFACT_SHA256, ""),
        encoder_artifact_sha256=annotations.get(ANNOTATION_ENCODER_ARTIFACT_SHA256, ""),
        autoscaled_gpus=_optional_int(annotations.get(ANNOTATION_AUTOSCALED_GPUS)),
    )


def _optional_int(value: str | None) -> int | None:
    return _int(value, -1) if value is not None and _int(value, -1) >= 0 else None


def pod_gpu_request(pod: Obj, gpu_resource: str) -> int:
    """GPU units a pod holds: its containers' requests (or limits: they equal for GPUs)."""
    total = 0
    for container in _path(pod, "spec", "containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("requests") or {}).get(gpu_resource)
        if amount is None:
            amount = (resources.get("limits") or {}).get(gpu_resource, 0)
        total += _int(amount)
    return total


def gpu_requests_by_node(pods: Sequence[Obj], gpu_resource: str, nodes: set[str]) -> dict[str, int]:
    """GPU units per node held by bound pods that have not finished, over ``nodes`` only."""
    used: dict[str, int] = {}
    for pod in pods:
        node = _path(pod, "spec", "nodeName")
        if node not in nodes or _path(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        units = pod_gpu_request(pod, gpu_resource)
        if units:
            used[node] = used.get(node, 0) + units
    return used


def pods_by_node(pods: Sequence[Obj], nodes: set[str]) -> dict[str, int]:
    """Bound pods per node over ``nodes``, leaving out pods that finished or are being deleted."""
    counts: dict[str, int] = {}
    for pod in pods:
        node = _path(pod, "spec", "nodeName")
        if node not in nodes or _path(pod, "metadata", "deletionTimestamp"):
            continue
        if _path(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        counts[node] = counts.get(node, 0) + 1
    return counts


@dataclass(frozen=True)
class Observed:
    """Everything desired_state reads: nodes, owned children, known engines, GPU use by others."""

    nodes: tuple[GpuNode, ...] = ()
    jobs: tuple[BuildJob, ...] = ()
    deployments: tuple[ServerDeployment, ...] = ()
    hpas: frozenset[str] = frozenset()
    scaled_objects: frozenset[str] = frozenset()  # KEDA's, when the operator uses KEDA
    # Engines this model's status records as published (the operator never reads the cache).
    published: Mapping[str, BuildResult] = field(default_factory=dict)
    # Build Jobs of this model's engine keys, by key, in every namespace the operator reads:
    # any model's build of a key is every model's build of it.
    builds: Mapping[str, tuple[BuildJob, ...]] = field(default_factory=dict)
    # GPU units requested per node by running or scheduled pods that are not this model's.
    gpu_used_by_others: Mapping[str, int] = field(default_factory=dict)
    # This model's server pods per node (bound, not being deleted): what a cordoned node keeps.
    serving_pods_by_node: Mapping[str, int] = field(default_factory=dict)
    # This model's server and build pods that cannot start, and why.
    pod_problems: tuple[PodProblem, ...] = ()

    @property
    def autoscalers(self) -> frozenset[str]:
        """Names of the HPAs and ScaledObjects this model owns."""
        return self.hpas | self.scaled_objects

    def deployment_for(self, product: str) -> ServerDeployment | None:
        return next((d for d in self.deployments if d.product == product), None)
