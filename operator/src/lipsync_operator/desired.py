"""desired_state: spec + observed cluster -> the child objects, stale children and status.

Pure: no API calls, no clock (``now`` is an argument). The handlers read, call this, apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lipsync_contract.api import LipSyncModelSpec, LipSyncModelStatus
from lipsync_contract.enginekey import short_key
from lipsync_contract.request import BuildRequest
from lipsync_operator import naming
from lipsync_operator.builds import superseded_jobs
from lipsync_operator.capacity import (
    RolloutPlan,
    claimed_autoscaled_gpus,
    plan_rollout,
    pool_capacity,
    wanted_servers,
)
from lipsync_operator.config import OperatorConfig
from lipsync_operator.engines import EngineVerdict, build_request, engine_verdict
from lipsync_operator.manifests.autoscaler import ScaleTarget, autoscaler
from lipsync_operator.manifests.build_job import build_job
from lipsync_operator.manifests.common import Manifest, Owner
from lipsync_operator.manifests.network_policy import network_policy
from lipsync_operator.manifests.server import server_deployment
from lipsync_operator.manifests.service import disruption_budget, endpoint, service
from lipsync_operator.observed import Observed, ServedEngine, ServerDeployment
from lipsync_operator.policy import (
    allot_gpus,
    builder_image,
    cache_subdir,
    check_spec,
    gpu_limit,
)
from lipsync_operator.pools import GpuPool, gpu_pools, pods_per_gpu
from lipsync_operator.status import (
    EventNote,
    ProductSummary,
    compute_status,
    transition_events,
)
from lipsync_operator.targets import target_fps


@dataclass(frozen=True)
class ChildRef:
    """A child object to delete."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class ProductPlan:
    """What one GPU product gets."""

    pool: GpuPool
    summary: ProductSummary
    key: str
    job: Manifest | None  # to create (None: cached, running, finished, or nothing to build on)
    deployment: Manifest | None
    autoscaler: Manifest | None  # an HPA or a KEDA ScaledObject
    # Under an autoscaler the operator stops applying spec.replicas. When it starts doing so, the
    # current count is first applied by a separate field manager so it is not reset to 1.
    replica_handover: int | None


@dataclass(frozen=True)
class DesiredState:
    plans: tuple[ProductPlan, ...]
    service: Manifest
    disruption_budget: Manifest
    network_policy: Manifest | None
    status: LipSyncModelStatus
    stale: tuple[ChildRef, ...]
    events: tuple[EventNote, ...]

    @property
    def jobs(self) -> list[Manifest]:
        return [p.job for p in self.plans if p.job is not None]

    @property
    def deployments(self) -> list[Manifest]:
        return [p.deployment for p in self.plans if p.deployment is not None]

    @property
    def autoscalers(self) -> list[Manifest]:
        return [p.autoscaler for p in self.plans if p.autoscaler is not None]

    def applies(self) -> list[Manifest]:
        """Objects to server-side apply, in order: builds, then the Service, then servers."""
        guard = [self.network_policy] if self.network_policy is not None else []
        return [
            *self.jobs,
            self.service,
            self.disruption_budget,
            *guard,
            *self.deployments,
            *self.autoscalers,
        ]


def _request(
    owner: Owner, spec: LipSyncModelSpec, pool: GpuPool, config: OperatorConfig
) -> BuildRequest | None:
    """The build of a product with schedulable nodes, or of one an autoscaled model remembers
    (None: nothing to build on)."""
    if not pool.present and not pool.remembered_capability:
        return None
    cache_dir = cache_subdir(spec, config, owner.namespace, owner.name)
    return build_request(spec, pool.product, pool.compute_capability, config, cache_dir)


def _pools(
    spec: LipSyncModelSpec,
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    previous: LipSyncModelStatus | None,
) -> list[GpuPool]:
    grace = timedelta(seconds=config.node_grace_seconds)
    remembered = remembered_products(spec, previous)
    return gpu_pools(spec, observed.nodes, now=now, grace=grace, remembered=remembered)


def engine_keys(
    owner: Owner,
    spec: LipSyncModelSpec,
    observed: Observed,
    config: OperatorConfig,
    *,
    now: datetime,
    previous: LipSyncModelStatus | None = None,
) -> list[str]:
    """The keys desired_state builds or waits for: what to look up other models' builds of."""
    pools = _pools(spec, observed, config, now, previous)
    requests = (_request(owner, spec, pool, config) for pool in pools)
    return [request.key() for request in requests if request is not None]


@dataclass(frozen=True)
class BuildStep:
    """The product's engine key, where its engine stands, and the build Job to create if any."""

    key: str
    verdict: EngineVerdict
    job: Manifest | None


def _build_step(
    owner: Owner, spec: LipSyncModelSpec, pool: GpuPool, observed: Observed, config: OperatorConfig
) -> BuildStep:
    request = _request(owner, spec, pool, config)
    key = request.key() if request is not None else ""
    job_name = naming.job_name(owner.name, short_key(key)) if key else ""
    verdict = engine_verdict(pool, key, job_name, observed)
    job = None
    if verdict.needs_job and request is not None:
        job = build_job(
            owner,
            request,
            key=key,
            product_labels=pool.product_labels,
            image=builder_image(spec, config),
            cache_dir=cache_subdir(spec, config, owner.namespace, owner.name),
            config=config,
            credentials_secret=spec.credentials_secret,
        )
    return BuildStep(key, verdict, job)


@dataclass(frozen=True)
class ServingChoice:
    """The engine the servers run, and the spec their template is rendered from."""

    engine: ServedEngine | None
    template_spec: LipSyncModelSpec


def _serving_choice(
    spec: LipSyncModelSpec, verdict: EngineVerdict, current: ServerDeployment | None
) -> ServingChoice:
    if verdict.status.state == "Ready":
        return ServingChoice(verdict.engine, spec)
    if current is not None and current.engine_key and current.artifact:
        # The previous engine keeps serving, with the settings it was started with (a batching
        # change must not reach it before its own engine): the template changes once, when the
        # new engine is Ready.
        return ServingChoice(current.engine, previous_spec(current.serving_spec) or spec)
    return ServingChoice(None, spec)


@dataclass(frozen=True)
class ReplicaPlan:
    """How many servers, how they roll, and the autoscaled GPUs a static model claims."""

    rollout: RolloutPlan
    claimed_gpus: int | None


def _replica_plan(
    spec: LipSyncModelSpec,
    pool: GpuPool,
    observed: Observed,
    current: ServerDeployment | None,
    *,
    allotted_gpus: int,
    building: bool,
) -> ReplicaPlan:
    per_gpu = pods_per_gpu(spec)
    serving_pods = observed.serving_pods_by_node
    fixed = claimed = None
    if spec.autoscaling.enabled:
        fixed = current.replicas if current is not None else spec.autoscaling.min_replicas
    else:
        recorded = current.autoscaled_gpus if current is not None else None
        claimed = claimed_autoscaled_gpus(pool, recorded)
    wanted = min(wanted_servers(pool, per_gpu, serving_pods, claimed), allotted_gpus * per_gpu)
    rollout = plan_rollout(
        wanted,
        pool_capacity(pool, observed.gpu_used_by_others, serving_pods),
        building=building and current is not None,
        pods_per_gpu=per_gpu,
        fixed_replicas=fixed,
    )
    return ReplicaPlan(rollout, claimed)


@dataclass(frozen=True)
class Servers:
    """The product's Deployment and autoscaler (None: nothing to serve), and its replicas."""

    deployment: Manifest | None
    autoscaler: Manifest | None
    replicas: int
    handover: int | None  # replicas to hand to a new autoscaler, once


def _servers(
    owner: Owner,
    spec: LipSyncModelSpec,
    pool: GpuPool,
    observed: Observed,
    config: OperatorConfig,
    *,
    choice: ServingChoice,
    plan: ReplicaPlan,
    build: BuildStep,
    allotted_gpus: int,
    products: int,
) -> Servers:
    serving, autoscaling = choice.engine, spec.autoscaling
    # An autoscaled product keeps its Deployment with no GPU left: its pods bring nodes back.
    if serving is None or (allotted_gpus == 0 and not autoscaling.enabled):
        return Servers(None, None, 0, None)
    current = observed.deployment_for(pool.product)
    name = naming.deployment_name(owner.name, pool.product)
    deployment = server_deployment(
        owner,
        choice.template_spec,
        product=pool.product,
        product_labels=pool.product_labels,
        engine=serving,
        replicas=None if autoscaling.enabled else plan.rollout.replicas,
        rollout_strategy=plan.rollout.strategy,
        cache_dir=cache_subdir(choice.template_spec, config, owner.namespace, owner.name),
        config=config,
        autoscaled_gpus=plan.claimed_gpus,
    )
    if not autoscaling.enabled:
        return Servers(deployment, None, plan.rollout.replicas, None)
    handover = None
    if current is not None and name not in observed.autoscalers:
        handover = current.replicas
    published = observed.published.get(serving.key)
    measured = published.frames_per_second if published is not None else None
    fps = target_fps(
        autoscaling,
        pool.product,
        measured or build.verdict.status.frames_per_second,
        pods_per_gpu(spec),
    )
    target = ScaleTarget(name, pool.product, fps, products)
    hpa = autoscaler(owner, target, autoscaling, config)
    return Servers(deployment, hpa, plan.rollout.replicas, handover)


def _plan_product(
    owner: Owner,
    spec: LipSyncModelSpec,
    pool: GpuPool,
    observed: Observed,
    config: OperatorConfig,
    *,
    products: int,
    allotted_gpus: int,
) -> ProductPlan:
    """``products``: how many of the model's products serve (their autoscalers share its
    demand); ``allotted_gpus``: how many of the pool's GPUs the model's limit leaves this one."""
    build = _build_step(owner, spec, pool, observed, config)
    current = observed.deployment_for(pool.product)
    choice = _serving_choice(spec, build.verdict, current)
    building = build.verdict.status.state == "Building"
    plan = _replica_plan(
        spec, pool, observed, current, allotted_gpus=allotted_gpus, building=building
    )
    servers = _servers(
        owner, spec, pool, observed, config, choice=choice, plan=plan,
        build=build, allotted_gpus=allotted_gpus, products=products,
    )  # fmt: skip
    serving = choice.engine if servers.deployment is not None else None
    rolled_out = servers.deployment is None or (
        current is not None
        and current.engine_key == serving_key(serving)
        and current.rolled_out
        and (spec.autoscaling.enabled or current.replicas == servers.replicas)
    )
    engine = build.verdict.status.model_copy(
        update={
            "serving_key": serving_key(serving),
            "gpus": allotted_gpus,
            "replicas": servers.replicas,
            "ready_replicas": current.ready_replicas if current is not None else 0,
        }
    )
    summary = ProductSummary(
        engine=engine,
        has_nodes=pool.present or servers.deployment is not None,
        unfit_nodes=tuple(node.name for node in pool.unfit),
        rolled_out=rolled_out and (choice.engine is None or choice.engine.key == build.key),
        scaled_to_zero=spec.autoscaling.enabled
        and servers.deployment is not None
        and servers.replicas == 0,
    )
    return ProductPlan(
        pool, summary, build.key, build.job, servers.deployment, servers.autoscaler,
        servers.handover,
    )  # fmt: skip


def remembered_products(
    spec: LipSyncModelSpec, previous: LipSyncModelStatus | None
) -> dict[str, str]:
    """Autoscaled: the products with a Ready engine, and its compute capability (their nodes
    may all be gone while the product is scaled to zero)."""
    if not spec.autoscaling.enabled or previous is None:
        return {}
    return {
        e.gpu_product: e.compute_capability
        for e in previous.engines
        if e.state == "Ready" and e.compute_capability
    }


def previous_spec(recorded: str) -> LipSyncModelSpec | None:
    """The spec a Deployment's template was rendered from (None: not recorded or unreadable)."""
    if not recorded:
        return None
    try:
        return LipSyncModelSpec.model_validate_json(recorded)
    except ValueError:
        return None


def serving_key(serving: ServedEngine | None) -> str:
    return serving.key if serving is not None else ""


def _stale(plans: tuple[ProductPlan, ...], observed: Observed) -> tuple[ChildRef, ...]:
    keys = {plan.key for plan in plans if plan.key}
    deployments = {d["metadata"]["name"] for p in plans if (d := p.deployment) is not None}
    scalers = {(a["kind"], a["metadata"]["name"]) for p in plans if (a := p.autoscaler) is not None}
    stale = [ChildRef("batch/v1", "Job", job.name) for job in observed.jobs if job.key not in keys]
    stale += [ChildRef("batch/v1", "Job", job.name) for job in superseded_jobs(observed, keys)]
    stale += [
        ChildRef("apps/v1", "Deployment", d.name)
        for d in observed.deployments
        if d.name not in deployments
    ]
    for api_version, kind, names in (
        ("autoscaling/v2", "HorizontalPodAutoscaler", observed.hpas),
        ("keda.sh/v1alpha1", "ScaledObject", observed.scaled_objects),
    ):
        stale += [
            ChildRef(api_version, kind, name)
            for name in sorted(names)
            if (kind, name) not in scalers
        ]
    return tuple(stale)


def desired_state(
    owner: Owner,
    spec: LipSyncModelSpec,
    observed: Observed,
    config: OperatorConfig,
    *,
    previous: LipSyncModelStatus | None,
    now: datetime,
) -> DesiredState:
    """Everything the operator should make true for one LipSyncModel.

    Raises a LipSyncError (one-line reason) for a spec it cannot act on, or one the
    operator's policy refuses (``policy.check_spec``), before anything is created.
    """
    check_spec(spec, config)
    pools = _pools(spec, observed, config, now, previous)
    allotted = allot_gpus({pool.product: pool.gpus for pool in pools}, gpu_limit(spec, config))
    served = sum(1 for pool in pools if pool.gpus > 0 or pool.remembered_capability)
    plans = tuple(
        _plan_product(
            owner,
            spec,
            pool,
            observed,
            config,
            products=served,
            allotted_gpus=allotted[pool.product],
        )
        for pool in pools
    )
    status = compute_status(
        [plan.summary for plan in plans],
        owner.generation,
        endpoint(owner),
        previous,
        now,
        pod_problems=observed.pod_problems,
    )
    return DesiredState(
        plans=plans,
        service=service(owner),
        disruption_budget=disruption_budget(owner),
        network_policy=network_policy(owner, config) if config.network_policy else None,
        status=status,
        stale=_stale(plans, observed),
        events=tuple(transition_events(previous, status)),
    )
