"""desired_state: the operator's decisions, from spec and observed cluster, without a cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lipsync_contract.api import LipSyncModelSpec, LipSyncModelStatus
from lipsync_contract.result import BuildResult
from lipsync_operator.builds import shared_build, superseded_jobs, waits_for
from lipsync_operator.config import OperatorConfig
from lipsync_operator.desired import DesiredState, desired_state, engine_keys, previous_spec
from lipsync_operator.engines import published_engines
from lipsync_operator.manifests.common import Owner
from lipsync_operator.observed import (
    BuildJob,
    GpuNode,
    JobPhase,
    Observed,
    ServerDeployment,
    build_job,
    gpu_node,
    server_deployment,
)

pytestmark = pytest.mark.unit

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
OWNER = Owner(name="anna", namespace="default", uid="uid-1", generation=2)
CONFIG = OperatorConfig(runtime_image="registry.example/lipsync-runtime:1.0")


def node_object(
    name: str,
    *,
    product: str = H100,
    gpus: int = 8,
    cc: tuple[str, str] = ("9", "0"),
    strategy: str | None = None,
    slices: int = 1,
    ready: bool = True,
    nodepool: str | None = None,
) -> dict[str, Any]:
    labels = {
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.compute.major": cc[0],
        "nvidia.com/gpu.compute.minor": cc[1],
        "nvidia.com/gpu.memory": "81559",
    }
    if strategy is not None:
        labels["nvidia.com/gpu.sharing-strategy"] = strategy
        labels["nvidia.com/gpu.replicas"] = str(slices)
    if nodepool is not None:
        labels["karpenter.sh/nodepool"] = nodepool
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus * slices)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def node(name: str, **kwargs: Any) -> GpuNode:
    parsed = gpu_node(node_object(name, **kwargs), autoscaled_label=CONFIG.autoscaled_node_label)
    assert parsed is not None
    return parsed


def spec(**changes: Any) -> LipSyncModelSpec:
    base = {
        "model": {"uri": "https://m.example/m/unet.onnx"},
        "avatar": {"uri": "pvc://avatars/anna"},
    }
    return LipSyncModelSpec.model_validate({**base, **changes})


def plan(
    model: LipSyncModelSpec,
    observed: Observed,
    previous: LipSyncModelStatus | None = None,
) -> DesiredState:
    return desired_state(OWNER, model, observed, CONFIG, previous=previous, now=NOW)


def ready(key: str, fps: float = 250.0) -> BuildResult:
    return BuildResult(
        key=key,
        state="Ready",
        psnr_db=44.0,
        frames_per_second=fps,
        build_seconds=120.0,
        artifact=f"/cache/engines/{key[7:]}/engine-abc.plan",
    )


def deployment(
    name: str, product: str, key: str, replicas: int, ready_replicas: int, **extra: Any
) -> ServerDeployment:
    values: dict[str, Any] = {
        "name": name,
        "product": product,
        "engine_key": key,
        "artifact": "engine-old.plan",
        "replicas": replicas,
        "ready_replicas": ready_replicas,
        "updated_replicas": replicas,
        "rolled_out": True,
    }
    return ServerDeployment(**{**values, **extra})


def keys_of(state: DesiredState) -> dict[str, str]:
    return {p.pool.product: p.key for p in state.plans}


# --- targets and builds ---------------------------------------------------------------------


def test_one_build_job_per_gpu_product_present() -> None:
    observed = Observed(nodes=(node("a1"), node("a2"), node("b1", product=L4, cc=("8", "9"))))
    state = plan(spec(), observed)
    assert [p.pool.product for p in state.plans] == [H100, L4]
    assert len(state.jobs) == 2
    job_products = {
        j["metadata"]["labels"]["lipsync.dev/gpu-product"]: j["metadata"]["name"]
        for j in state.jobs
    }
    assert set(job_products) == {H100, L4}
    assert all(name.startswith("anna-build-") for name in job_products.values())
    assert state.deployments == []
    assert state.status.phase == "Building"
    assert {e.state for e in state.status.engines} == {"Building"}


def test_engine_keys_differ_by_product_and_compute_capability_only_where_they_should() -> None:
    base = plan(spec(), Observed(nodes=(node("a"), node("b", product=L4, cc=("8", "9")))))
    keys = keys_of(base)
    assert keys[H100] != keys[L4]
    again = plan(spec(), Observed(nodes=(node("a"), node("b", product=L4, cc=("8", "9")))))
    assert keys_of(again) == keys
    scaled = plan(spec(replicasPerGPU=2), Observed(nodes=(node("a"),)))
    assert keys_of(scaled)[H100] == keys[H100], "replica count must not change the engine"
    fp32 = plan(spec(precision="fp32"), Observed(nodes=(node("a"),)))
    assert keys_of(fp32)[H100] != keys[H100]


def test_listed_products_limit_the_targets_and_absent_ones_are_reported() -> None:
    observed = Observed(nodes=(node("a"), node("b", product=L4)))
    state = plan(spec(gpus={"products": [L4, "Tesla-T4"]}), observed)
    assert [p.pool.product for p in state.plans] == [L4, "Tesla-T4"]
    t4 = state.status.engines[1]
    assert t4.state == "Pending"
    assert t4.reason.startswith("NoNodes")
    assert len(state.jobs) == 1
    degraded = state.status.condition("Degraded")
    assert degraded is not None
    assert degraded.reason == "GPUProductAbsent"


def test_no_gpu_nodes_means_pending() -> None:
    state = plan(spec(), Observed(nodes=(node("a", ready=False),)))
    assert state.plans == ()
    assert state.status.phase == "Pending"
    engines_ready = state.status.condition("EnginesReady")
    assert engines_ready is not None
    assert engines_ready.reason == "NoGPUNodes"


def test_build_job_manifest() -> None:
    state = plan(spec(), Observed(nodes=(node("a"),)))
    job = state.jobs[0]
    key = state.plans[0].key
    assert job["metadata"]["annotations"]["lipsync.dev/engine-key"] == key
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "lipsync.dev/v1alpha1",
        "kind": "LipSyncModel",
        "name": "anna",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert len(job["metadata"]["name"]) <= 63
    job_spec = job["spec"]
    assert job_spec["backoffLimit"] == 1
    assert job_spec["activeDeadlineSeconds"] == 3600
    assert job_spec["ttlSecondsAfterFinished"] == 3600
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expression = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression == {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": [H100, f"{H100}-SHARED"],
    }
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    args = container["args"]
    assert args[0] == "build"
    assert args[args.index("--gpu-product") + 1] == H100
    assert args[args.index("--compute-capability") + 1] == "9.0"
    assert args[args.index("--precision") + 1] == "fp16"
    assert args[args.index("--cache") + 1] == "/cache"
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]


def test_build_job_mounts_the_claims_its_pvc_uris_name_read_only() -> None:
    model = spec(
        model={"uri": "pvc://models/unet328/unet.onnx"},
        precision="int8",
        calibration={"uri": "pvc://calib/anna/"},
    )
    pod = plan(model, Observed(nodes=(node("a"),))).jobs[0]["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in pod["volumes"][2:]}
    assert set(claims) == {"models", "calib"}
    assert all(v["persistentVolumeClaim"]["readOnly"] for v in pod["volumes"][2:])
    container = pod["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[claims["models"]]["mountPath"] == "/mnt/pvc/models"
    assert mounts[claims["calib"]]["readOnly"] is True
    assert container["env"] == [
        {"name": "LIPSYNC_PVC_ROOT", "value": "/mnt/pvc"},
        {"name": "LIPSYNC_PVC_MOUNTS", "value": "calib=/mnt/pvc/calib,models=/mnt/pvc/models"},
    ]
    # The URI, not the mount, is what the builder is given (and what the key covers).
    args = container["args"]
    assert args[args.index("--model") + 1] == "pvc://models/unet328/unet.onnx"


def test_build_job_for_remote_uris_mounts_no_claims() -> None:
    pod = plan(spec(), Observed(nodes=(node("a"),))).jobs[0]["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["cache", "tmp"]
    assert "env" not in pod["containers"][0]


def test_build_job_args_reproduce_the_operators_key() -> None:
    from lipsync_contract.request import BuildRequest

    state = plan(
        spec(precision="int8", calibration={"uri": "https://m.example/cal/"}),
        Observed(nodes=(node("a"),)),
    )
    args = state.jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    params: dict[str, Any] = {
        name.removeprefix("--").replace("-", "_"): value for name, value in flags.items()
    }
    for name in (
        "batch_min",
        "batch_opt",
        "batch_max",
        "calibration_samples",
        "verify_samples",
        "measure_frames",
        "workspace_mib",
        "optimization_level",
    ):
        params[name] = int(params[name])
    request = BuildRequest.from_flat(params)
    assert request.key() == state.plans[0].key


def test_cache_hit_means_ready_without_a_job() -> None:
    first = plan(spec(), Observed(nodes=(node("a"),)))
    key = first.plans[0].key
    state = plan(spec(), Observed(nodes=(node("a"),), published={key: ready(key)}))
    assert state.jobs == []
    engine = state.status.engines[0]
    assert engine.state == "Ready"
    assert engine.psnr_db == 44.0
    assert engine.frames_per_second == 250.0


def test_running_job_is_not_recreated() -> None:
    key = plan(spec(), Observed(nodes=(node("a"),))).plans[0].key
    running = BuildJob(name="anna-build-x", key=key, product=H100, phase="Active")
    state = plan(spec(), Observed(nodes=(node("a"),), jobs=(running,)))
    assert state.jobs == []
    assert state.status.engines[0].state == "Building"
    assert state.status.engines[0].job == "anna-build-x"


def test_succeeded_job_result_from_termination_message() -> None:
    key = plan(spec(), Observed(nodes=(node("a"),))).plans[0].key
    pod = {
        "metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "builder",
                    "state": {"terminated": {"exitCode": 0, "message": ready(key).to_json()}},
                }
            ]
        },
    }
    job_object = {
        "metadata": {
            "name": "anna-build-1",
            "labels": {"lipsync.dev/gpu-product": H100},
            "annotations": {"lipsync.dev/engine-key": key},
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    job = build_job(job_object, [pod])
    assert job.phase == "Succeeded"
    assert job.result is not None
    state = plan(spec(), Observed(nodes=(node("a", gpus=2),), jobs=(job,)))
    assert state.status.engines[0].state == "Ready"
    [deploy] = state.deployments
    assert deploy["spec"]["replicas"] == 2
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "/engine/engine-abc.plan"


def test_failed_build_reports_the_builders_reason_and_keeps_the_old_engine_serving() -> None:
    new_spec = spec(precision="fp32")
    new_key = plan(new_spec, Observed(nodes=(node("a"),))).plans[0].key
    failure = BuildResult(key=new_key, state="Failed", reason="accuracy gate: PSNR 21.0 < 40.0")
    failed = BuildJob(
        name="anna-build-2", key=new_key, product=H100, phase="Failed", result=failure
    )
    old = deployment("anna-nvidia-h100-80gb-hbm3", H100, "sha256:" + "0" * 64, 8, 8)
    state = plan(new_spec, Observed(nodes=(node("a"),), jobs=(failed,), deployments=(old,)))
    assert state.jobs == [], "a failed key is not rebuilt in a loop"
    engine = state.status.engines[0]
    assert engine.state == "Failed"
    assert "PSNR 21.0" in engine.reason
    assert engine.serving_key == old.engine_key
    [deploy] = state.deployments
    assert deploy["metadata"]["annotations"]["lipsync.dev/engine-key"] == old.engine_key
    assert state.status.phase == "Degraded"
    engines_ready = state.status.condition("EnginesReady")
    assert engines_ready is not None
    assert engines_ready.status == "False"
    assert "PSNR 21.0" in engines_ready.message
    assert any(e.reason == "EngineFailed" and e.type == "Warning" for e in state.events)


def test_failed_build_with_nothing_serving_is_failed() -> None:
    key = plan(spec(), Observed(nodes=(node("a"),))).plans[0].key
    failed = BuildJob(
        name="j", key=key, product=H100, phase="Failed", failure="DeadlineExceeded: too slow"
    )
    state = plan(spec(), Observed(nodes=(node("a"),), jobs=(failed,)))
    assert state.status.phase == "Failed"
    assert state.status.engines[0].reason == "DeadlineExceeded: too slow"


def test_key_mismatch_between_operator_and_builder_is_a_failure() -> None:
    key = plan(spec(), Observed(nodes=(node("a"),))).plans[0].key
    odd = ready("sha256:" + "f" * 64)
    done = BuildJob(name="j", key=key, product=H100, phase="Succeeded", result=odd)
    state = plan(spec(), Observed(nodes=(node("a"),), jobs=(done,)))
    assert state.status.engines[0].state == "Failed"
    assert state.status.engines[0].reason.startswith("KeyMismatch")


# --- one build per key, cluster-wide -------------------------------------------------------


def other_build(key: str, phase: JobPhase = "Active", **extra: Any) -> BuildJob:
    """A build Job of the same key started by model "bob" in another namespace."""
    values: dict[str, Any] = {
        "name": "bob-build-1",
        "namespace": "team-b",
        "key": key,
        "product": H100,
        "phase": phase,
        "created": "2025-01-01T00:00:00+00:00",
    }
    return BuildJob(**{**values, **extra})


def h100_key() -> str:
    return plan(spec(), Observed(nodes=(node("a"),))).plans[0].key


def test_shared_build_prefers_a_ready_result_then_the_oldest_running_job() -> None:
    key = h100_key()
    young = other_build(key, name="b", created="2025-01-01T00:00:05+00:00")
    old = other_build(key, name="a", created="2025-01-01T00:00:01+00:00")
    tie = other_build(key, name="a", namespace="team-a", created=old.created)
    finished = other_build(
        key, "Succeeded", name="z", created="2025-01-01T00:09:00+00:00", result=ready(key)
    )
    failed = other_build(key, "Failed", name="f")
    assert shared_build([young, old], key) == old
    assert shared_build([young, old, tie], key) == tie, "namespace breaks a tie"
    assert shared_build([young, finished, old], key) == finished
    assert shared_build([failed, young], key) == young
    assert shared_build([failed], key) == failed
    assert shared_build([other_build(key, deleting=True)], key) is None
    assert shared_build([other_build("sha256:" + "0" * 64)], key) is None


def test_a_model_waits_for_another_models_build_of_its_key() -> None:
    key = h100_key()
    observed = Observed(nodes=(node("a"),), builds={key: (other_build(key),)})
    state = plan(spec(), observed)
    assert state.jobs == [], "the key is being built already"
    [engine] = state.status.engines
    assert (engine.state, engine.job) == ("Building", "team-b/bob-build-1")
    assert state.status.phase == "Building"


def test_a_model_serves_the_engine_another_model_built() -> None:
    key = h100_key()
    built = other_build(key, "Succeeded", result=ready(key))
    state = plan(spec(), Observed(nodes=(node("a"),), builds={key: (built,)}))
    assert state.jobs == []
    [engine] = state.status.engines
    assert (engine.state, engine.key, engine.artifact) == ("Ready", key, "engine-abc.plan")
    [deploy] = state.deployments
    assert deploy["metadata"]["annotations"]["lipsync.dev/engine-key"] == key
    assert deploy["metadata"]["name"].startswith("anna-"), "its own servers"


def test_the_later_of_two_racing_builds_is_deleted() -> None:
    key = h100_key()
    mine = BuildJob(
        name="anna-build-1", namespace="default", key=key, product=H100, phase="Active",
        created="2025-01-01T00:00:03+00:00",
    )  # fmt: skip
    theirs = other_build(key, created="2025-01-01T00:00:02+00:00")
    observed = Observed(nodes=(node("a"),), jobs=(mine,), builds={key: (mine, theirs)})
    state = plan(spec(), observed)
    assert [(r.kind, r.name) for r in state.stale] == [("Job", "anna-build-1")]
    assert state.status.engines[0].job == "team-b/bob-build-1"
    # The winner's owner sees the same two Jobs and keeps its own.
    assert superseded_jobs(Observed(jobs=(theirs,), builds={key: (mine, theirs)}), [key]) == []


def test_a_build_whose_owner_was_deleted_is_started_again() -> None:
    key = h100_key()
    gone = other_build(key, deleting=True)
    state = plan(spec(), Observed(nodes=(node("a"),), builds={key: (gone,)}))
    [job] = state.jobs
    assert job["metadata"]["name"].startswith("anna-build-")
    assert job["metadata"]["labels"]["lipsync.dev/engine"] == key[7:19]


def test_another_models_failed_build_does_not_undo_a_published_engine() -> None:
    key = h100_key()
    observed = Observed(
        nodes=(node("a"),),
        published={key: ready(key)},
        builds={key: (other_build(key, "Failed", failure="DeadlineExceeded"),)},
    )
    assert plan(spec(), observed).status.engines[0].state == "Ready"


def test_engine_keys_are_the_keys_desired_state_builds() -> None:
    nodes = (node("a"), node("b", product=L4, cc=("8", "9")))
    state = plan(spec(), Observed(nodes=nodes))
    listed = engine_keys(OWNER, spec(), Observed(nodes=nodes), CONFIG, now=NOW)
    assert listed == [p.key for p in state.plans]


def test_waiting_models_are_found_by_a_building_engine_of_the_key() -> None:
    key = h100_key()
    waiting = {"status": {"engines": [{"key": key, "state": "Building"}]}}
    assert waits_for(waiting, key)
    assert not waits_for({"status": {"engines": [{"key": key, "state": "Ready"}]}}, key)
    assert not waits_for({"metadata": {"name": "new"}}, key)


def test_build_job_parsing_reads_namespace_age_and_deletion() -> None:
    obj = {
        "metadata": {
            "name": "bob-build-1",
            "namespace": "team-b",
            "creationTimestamp": "2025-01-01T00:00:02Z",
            "deletionTimestamp": "2025-01-01T00:05:00Z",
            "annotations": {"lipsync.dev/engine-key": "sha256:ab"},
        },
    }
    parsed = build_job(obj)
    assert (parsed.namespace, parsed.created, parsed.deleting) == (
        "team-b",
        "2025-01-01T00:00:02+00:00",
        True,
    )
    assert parsed.ref == "team-b/bob-build-1"


# --- serving --------------------------------------------------------------------------------


def _ready_observed(model: LipSyncModelSpec, nodes: tuple[GpuNode, ...], **kw: Any) -> Observed:
    keys = keys_of(plan(model, Observed(nodes=nodes)))
    return Observed(nodes=nodes, published={k: ready(k) for k in keys.values()}, **kw)


def test_exclusive_one_pod_per_gpu_with_n_instances() -> None:
    model = spec(replicasPerGPU=6)
    nodes = (node("a", gpus=8), node("b", gpus=4))
    state = plan(model, _ready_observed(model, nodes))
    [deploy] = state.deployments
    assert deploy["spec"]["replicas"] == 12
    pod = deploy["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--instances") + 1] == "6"
    expressions = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions[1] == {
        "key": "nvidia.com/gpu.sharing-strategy",
        "operator": "NotIn",
        "values": ["mps", "time-slicing"],
    }
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert state.status.engines[0].gpus == 12


@pytest.mark.parametrize(("sharing", "label"), [("timeSlicing", "time-slicing"), ("mps", "mps")])
def test_shared_modes_run_n_pods_per_gpu_on_configured_nodes(sharing: str, label: str) -> None:
    model = spec(replicasPerGPU=4, sharing=sharing)
    configured = node("a", gpus=2, strategy=label, slices=4)
    too_few_slices = node("b", gpus=2, strategy=label, slices=2)
    plain = node("c", gpus=2)
    state = plan(model, _ready_observed(model, (configured, too_few_slices, plain)))
    [deploy] = state.deployments
    assert deploy["spec"]["replicas"] == 8
    pod = deploy["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--instances") + 1] == "1"
    expressions = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions[1]["values"] == [label]
    degraded = state.status.condition("Degraded")
    assert degraded is not None
    assert degraded.reason == "SharingNotConfigured"
    assert "b" in degraded.message
    assert "c" in degraded.message


def test_shared_product_label_suffix_is_the_same_product() -> None:
    shared = node("a", product=f"{H100}-SHARED", strategy="time-slicing", slices=6)
    state = plan(spec(sharing="timeSlicing"), Observed(nodes=(shared,)))
    assert [p.pool.product for p in state.plans] == [H100]


def _not_ready(name: str, since: datetime, **kwargs: Any) -> GpuNode:
    obj = node_object(name, ready=False, **kwargs)
    obj["status"]["conditions"][0]["lastTransitionTime"] = since.isoformat()
    parsed = gpu_node(obj)
    assert parsed is not None
    return parsed


def test_cordoned_nodes_and_short_not_ready_blips_keep_their_replicas() -> None:
    cordoned = node_object("c")
    cordoned["spec"] = {"unschedulable": True}
    parsed = gpu_node(cordoned)
    assert parsed is not None
    assert not parsed.schedulable
    blip = _not_ready("blip", NOW - timedelta(seconds=60))
    assert not blip.schedulable
    model = spec(replicasPerGPU=1)
    nodes = (node("a", gpus=4), parsed, blip)
    # Cordoned with all 8 servers still running there: nothing changes.
    state = plan(model, _ready_observed(model, nodes, serving_pods_by_node={"c": 8}))
    assert state.deployments[0]["spec"]["replicas"] == 4 + 8 + 8


def test_a_drained_node_gives_up_the_places_of_pods_evicted_from_it() -> None:
    cordoned = node_object("c")
    cordoned["spec"] = {"unschedulable": True}
    parsed = gpu_node(cordoned)
    assert parsed is not None
    model = spec(replicasPerGPU=1)
    nodes = (node("a", gpus=4), parsed)
    midway = plan(model, _ready_observed(model, nodes, serving_pods_by_node={"a": 4, "c": 5}))
    assert midway.deployments[0]["spec"]["replicas"] == 4 + 5
    drained = plan(model, _ready_observed(model, nodes, serving_pods_by_node={"a": 4}))
    assert drained.deployments[0]["spec"]["replicas"] == 4


def test_a_node_not_ready_past_the_grace_period_stops_counting() -> None:
    model = spec(replicasPerGPU=1)
    long_gone = _not_ready("gone", NOW - timedelta(seconds=CONFIG.node_grace_seconds + 1))
    unknown = node("never-ready", ready=False)  # NotReady with no transition time
    state = plan(model, _ready_observed(model, (node("a", gpus=4), long_gone, unknown)))
    assert state.deployments[0]["spec"]["replicas"] == 4


def test_a_silent_node_counts_its_grace_from_its_last_heartbeat() -> None:
    # NotReady at t0, then the node controller flips it to Unknown (a new transition time).
    obj = node_object("silent", ready=False)
    t0 = NOW - timedelta(seconds=CONFIG.node_grace_seconds + 1)
    obj["status"]["conditions"][0].update(
        status="Unknown",
        lastHeartbeatTime=t0.isoformat(),
        lastTransitionTime=(NOW - timedelta(seconds=5)).isoformat(),
    )
    silent = gpu_node(obj)
    assert silent is not None
    assert silent.not_ready_since == t0
    assert not silent.counts(NOW, timedelta(seconds=CONFIG.node_grace_seconds))


def test_gpu_count_comes_from_allocatable_not_the_gfd_label() -> None:
    obj = node_object("a", gpus=8)
    obj["status"]["allocatable"]["nvidia.com/gpu"] = "6"  # two GPUs unhealthy
    parsed = gpu_node(obj)
    assert parsed is not None
    assert parsed.gpus == 6


def test_replicas_follow_nodes_joining_and_leaving() -> None:
    model = spec(replicasPerGPU=1)
    two = plan(model, _ready_observed(model, (node("a"), node("b"))))
    one = plan(model, _ready_observed(model, (node("a"),)))
    assert two.deployments[0]["spec"]["replicas"] == 16
    assert one.deployments[0]["spec"]["replicas"] == 8


def _static_on_pool(
    model: LipSyncModelSpec, nodes: tuple[GpuNode, ...], current: ServerDeployment | None
) -> DesiredState:
    observed = _ready_observed(model, nodes)
    deployments = (current,) if current is not None else ()
    return plan(model, replace(observed, deployments=deployments))


def test_a_static_model_never_fills_nodes_a_node_autoscaler_added_for_pending_pods() -> None:
    model = spec(replicasPerGPU=1)
    name = "anna-nvidia-h100-80gb-hbm3"
    pool = (node("a", gpus=1, nodepool="h100"), node("b", gpus=1, nodepool="h100"))
    first = _static_on_pool(model, pool, None)
    [deploy] = first.deployments
    assert deploy["spec"]["replicas"] == 2
    assert deploy["metadata"]["annotations"]["lipsync.dev/autoscaled-gpus"] == "2"
    key = keys_of(first)[H100]
    current = deployment(name, H100, key, 2, 2, autoscaled_gpus=2)
    # Karpenter added node c for a Pending build or surge pod: it is spare, not demand.
    grown = _static_on_pool(model, (*pool, node("c", gpus=1, nodepool="h100")), current)
    [deploy] = grown.deployments
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1  # rolls onto it
    assert deploy["metadata"]["annotations"]["lipsync.dev/autoscaled-gpus"] == "2"
    # The emptied node is consolidated away: the count holds.
    settled = (pool[1], node("c", gpus=1, nodepool="h100"))
    assert _static_on_pool(model, settled, current).deployments[0]["spec"]["replicas"] == 2
    # A node lost: fewer replicas, nothing Pending, and the claim shrinks, so a node added
    # later for a Pending pod is not filled either.
    lost = _static_on_pool(model, pool[:1], current)
    assert lost.deployments[0]["spec"]["replicas"] == 1
    assert lost.deployments[0]["metadata"]["annotations"]["lipsync.dev/autoscaled-gpus"] == "1"


def test_nodes_outside_a_node_autoscaler_are_still_followed() -> None:
    model = spec(replicasPerGPU=1)
    name = "anna-nvidia-h100-80gb-hbm3"
    pool = (node("a", gpus=1, nodepool="h100"),)
    key = keys_of(_static_on_pool(model, pool, None))[H100]
    current = deployment(name, H100, key, 1, 1, autoscaled_gpus=1)
    joined = _static_on_pool(model, (*pool, node("fixed", gpus=2)), current)
    assert joined.deployments[0]["spec"]["replicas"] == 3


def test_a_product_that_left_has_its_deployment_deleted() -> None:
    model = spec()
    gone = deployment("anna-nvidia-l4", L4, "sha256:" + "1" * 64, 4, 4)
    state = plan(model, _ready_observed(model, (node("a"),), deployments=(gone,)))
    assert [(r.kind, r.name) for r in state.stale] == [("Deployment", "anna-nvidia-l4")]


def test_spec_change_builds_first_and_only_then_rolls() -> None:
    old_spec, new_spec = spec(), spec(precision="fp32")
    nodes = (node("a", gpus=2),)
    old_key = keys_of(plan(old_spec, Observed(nodes=nodes)))[H100]
    new_key = keys_of(plan(new_spec, Observed(nodes=nodes)))[H100]
    current = deployment("anna-nvidia-h100-80gb-hbm3", H100, old_key, 2, 2)
    cache = {old_key: ready(old_key)}

    building = plan(new_spec, Observed(nodes=nodes, deployments=(current,), published=cache))
    assert len(building.jobs) == 1
    [deploy] = building.deployments
    assert deploy["metadata"]["annotations"]["lipsync.dev/engine-key"] == old_key
    # Every GPU serves: the build borrows one from the servers while it runs.
    assert deploy["spec"]["replicas"] == 1
    assert building.status.phase == "Building"
    available = building.status.condition("Available")
    assert available is not None
    assert available.status == "True"

    cache[new_key] = ready(new_key)
    rolling = plan(new_spec, Observed(nodes=nodes, deployments=(current,), published=cache))
    [deploy] = rolling.deployments
    assert deploy["metadata"]["annotations"]["lipsync.dev/engine-key"] == new_key
    assert deploy["spec"]["replicas"] == 2
    # No free GPU for a surge pod: one GPU's worth of pods at a time.
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert rolling.status.phase == "Rolling"
    progressing = rolling.status.condition("Progressing")
    assert progressing is not None
    assert progressing.reason == "RollingOut"

    done = deployment("anna-nvidia-h100-80gb-hbm3", H100, new_key, 2, 2)
    settled = plan(new_spec, Observed(nodes=nodes, deployments=(done,), published=cache))
    assert settled.status.phase == "Ready"
    assert settled.stale == ()


def _observed_deployment(manifest: dict[str, Any], ready_replicas: int) -> ServerDeployment:
    """A rendered Deployment as the API returns it once rolled out."""
    replicas = manifest["spec"]["replicas"]
    status = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready_replicas,
    }
    metadata = {**manifest["metadata"], "generation": 1}
    return server_deployment({**manifest, "metadata": metadata, "status": status})


def test_the_previous_engine_keeps_its_template_while_the_new_one_builds() -> None:
    old_spec = spec(batching={"maxBatch": 1})
    new_spec = spec(batching={"maxBatch": 2})
    nodes = (node("a", gpus=2),)
    old_key = keys_of(plan(old_spec, Observed(nodes=nodes)))[H100]
    new_key = keys_of(plan(new_spec, Observed(nodes=nodes)))[H100]
    assert old_key != new_key, "the batch profile is part of the key"
    cache = {old_key: ready(old_key)}
    [serving] = plan(old_spec, Observed(nodes=nodes, published=cache)).deployments
    current = _observed_deployment(serving, ready_replicas=2)
    assert current.serving_spec

    building = plan(new_spec, Observed(nodes=nodes, deployments=(current,), published=cache))
    [deploy] = building.deployments
    # Only the count changes (the build borrows a GPU): no pod is replaced for the old engine,
    # and the new batch size never reaches a server of the engine built for the old one.
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["template"] == serving["spec"]["template"]

    cache[new_key] = ready(new_key)
    rolling = plan(new_spec, Observed(nodes=nodes, deployments=(current,), published=cache))
    [deploy] = rolling.deployments
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--max-batch-size") + 1] == "2"
    assert deploy["spec"]["template"]["metadata"]["annotations"]["lipsync.dev/engine-key"] == (
        new_key
    )


def test_an_unreadable_recorded_spec_falls_back_to_the_current_one() -> None:
    assert previous_spec("") is None
    assert previous_spec("{not json") is None
    assert previous_spec(spec().model_dump_json(by_alias=True)) == spec()


def test_free_gpus_keep_the_surge_rollout_and_other_workloads_are_not_squeezed() -> None:
    model = spec(replicasPerGPU=1)
    nodes = (node("a", gpus=4),)
    observed = _ready_observed(model, nodes, gpu_used_by_others={"a": 1})
    [deploy] = plan(model, observed).deployments
    # Another tenant holds one GPU: three servers, none Pending.
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    autoscaled = spec(replicasPerGPU=1, autoscaling={"enabled": True, "maxReplicas": 4})
    scaled = deployment(
        "anna-nvidia-h100-80gb-hbm3", H100, keys_of(plan(autoscaled, observed))[H100], 1, 1
    )
    [deploy] = plan(
        autoscaled,
        _ready_observed(autoscaled, nodes, deployments=(scaled,), gpu_used_by_others={"a": 1}),
    ).deployments
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_stale_build_jobs_of_old_keys_are_deleted() -> None:
    old = BuildJob(name="anna-build-old", key="sha256:" + "2" * 64, product=H100, phase="Active")
    state = plan(spec(), Observed(nodes=(node("a"),), jobs=(old,)))
    assert [(r.kind, r.name) for r in state.stale] == [("Job", "anna-build-old")]


def test_ready_status_endpoint_and_columns() -> None:
    model = spec(replicasPerGPU=1)
    nodes = (node("a", gpus=2), node("b", product=L4, gpus=1, cc=("8", "9")))
    observed = _ready_observed(model, nodes)
    keys = keys_of(plan(model, observed))
    serving = (
        deployment("anna-nvidia-h100-80gb-hbm3", H100, keys[H100], 2, 2),
        deployment("anna-nvidia-l4", L4, keys[L4], 1, 1),
    )
    state = plan(model, Observed(nodes=nodes, published=observed.published, deployments=serving))
    status = state.status
    assert status.phase == "Ready"
    assert status.replicas == 3
    assert status.ready_replicas == 3
    assert status.endpoint == "anna.default.svc:8001"
    assert status.gpu_products == f"{H100},{L4}"
    assert status.observed_generation == 2
    assert {c.type: c.status for c in status.conditions} == {
        "EnginesReady": "True",
        "Available": "True",
        "Progressing": "False",
        "Degraded": "False",
        "PodsHealthy": "True",
    }
    assert all(c.observed_generation == 2 for c in status.conditions)


def test_condition_transition_times_only_move_on_change() -> None:
    model = spec()
    observed = Observed(nodes=(node("a"),))
    first = plan(model, observed)
    later = desired_state(
        OWNER, model, observed, CONFIG, previous=first.status, now=NOW + timedelta(minutes=5)
    )
    for before, after in zip(first.status.conditions, later.status.conditions, strict=True):
        assert before.last_transition_time == after.last_transition_time
    assert later.events == (), "no change, no events"
    assert any(e.reason == "PhaseBuilding" for e in first.events)


def test_service_and_disruption_budget_cover_all_products() -> None:
    state = plan(spec(), Observed(nodes=(node("a"),)))
    service = state.service
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": 8001, "metrics": 8002}
    assert "lipsync.dev/gpu-product" not in service["spec"]["selector"]
    pdb = state.disruption_budget
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert pdb["apiVersion"] == "policy/v1"


# --- autoscaling ----------------------------------------------------------------------------


KEDA = OperatorConfig(
    runtime_image=CONFIG.runtime_image,
    autoscaler="keda",
    prometheus_address="http://prometheus.monitoring.svc:9090",
)


def test_autoscaling_leaves_replicas_to_an_hpa_on_cpu_by_default() -> None:
    model = spec(
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 20, "targetFps": 25}
    )
    nodes = (node("a"),)
    state = plan(model, _ready_observed(model, nodes))
    [deploy] = state.deployments
    assert "replicas" not in deploy["spec"]
    [hpa] = state.autoscalers
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    # No adapter declared: only the metric metrics-server serves.
    [cpu_metric] = hpa["spec"]["metrics"]
    assert cpu_metric["resource"]["name"] == "cpu"


def test_the_frames_pods_metric_is_used_only_when_an_adapter_serves_it() -> None:
    model = spec(autoscaling={"enabled": True, "targetFps": 25})
    nodes = (node("a"),)
    adapter = OperatorConfig(runtime_image=CONFIG.runtime_image, hpa_frames_metric=True)
    state = desired_state(
        OWNER, model, _ready_observed(model, nodes), adapter, previous=None, now=NOW
    )
    pods_metric, cpu_metric = state.autoscalers[0]["spec"]["metrics"]
    assert pods_metric["pods"]["metric"]["name"] == "lipsync_frames_per_second"
    assert pods_metric["pods"]["target"]["averageValue"] == "25"
    assert cpu_metric["resource"]["name"] == "cpu"


def keda_plan(
    model: LipSyncModelSpec, observed: Observed, previous: LipSyncModelStatus | None = None
) -> DesiredState:
    return desired_state(OWNER, model, observed, KEDA, previous=previous, now=NOW)


def test_keda_scales_on_served_frames_and_wanted_streams_from_prometheus() -> None:
    model = spec(autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 6})
    nodes = (node("a"),)
    state = keda_plan(model, _ready_observed(model, nodes))  # the builder measured 250 fps
    [scaled] = state.autoscalers
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec_ = scaled["spec"]
    assert spec_["scaleTargetRef"]["name"] == "anna-nvidia-h100-80gb-hbm3"
    assert (spec_["minReplicaCount"], spec_["maxReplicaCount"]) == (0, 6)
    frames, wanted = spec_["triggers"]
    assert frames["metadata"]["serverAddress"] == "http://prometheus.monitoring.svc:9090"
    assert frames["metadata"]["query"] == (
        'sum(rate(lipsync_frames_total{namespace="default",lipsync_dev_model="anna",'
        'lipsync_dev_gpu_product="NVIDIA-H100-80GB-HBM3"}[1m]))'
    )
    assert frames["metadata"]["threshold"] == "200"  # 80% of 250 fps on an exclusive GPU
    assert wanted["metadata"]["query"] == (
        'sum(lipsync_wanted_streams{namespace="default",lipsync_dev_model="anna"})'
    )
    assert wanted["metadata"]["threshold"] == "8"  # 200 fps / 25 fps per stream
    assert {t["metadata"]["activationThreshold"] for t in (frames, wanted)} == {"0"}
    assert (spec_["pollingInterval"], spec_["cooldownPeriod"]) == (15, 300)
    assert "replicas" not in state.deployments[0]["spec"]


def test_per_product_targets_override_and_shared_gpus_divide_the_measurement() -> None:
    nodes = (node("a"), node("l", product=L4, cc=("8", "9")))
    override = spec(autoscaling={"enabled": True, "productTargetFps": {L4: 12.5}})
    by_product = {
        a["metadata"]["labels"]["lipsync.dev/gpu-product"]: a
        for a in keda_plan(override, _ready_observed(override, nodes)).autoscalers
    }
    assert by_product[L4]["spec"]["triggers"][0]["metadata"]["threshold"] == "12.5"
    assert by_product[H100]["spec"]["triggers"][0]["metadata"]["threshold"] == "200"
    # Two products share the model's client demand.
    assert by_product[H100]["spec"]["triggers"][1]["metadata"]["threshold"] == "16"
    shared_nodes = (node("s", strategy="time-slicing", slices=4),)
    shared = spec(sharing="timeSlicing", replicasPerGPU=4, autoscaling={"enabled": True})
    [scaled] = keda_plan(shared, _ready_observed(shared, shared_nodes)).autoscalers
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "50"  # 250 x 0.8 / 4


def _autoscaled(
    model: LipSyncModelSpec, nodes: tuple[GpuNode, ...], replicas: int, **scalers: Any
) -> Observed:
    """The model's one H100 Deployment at ``replicas``, under the given autoscalers."""
    observed = _ready_observed(model, nodes)
    key = keys_of(plan(model, observed))[H100]
    current = deployment("anna-nvidia-h100-80gb-hbm3", H100, key, replicas, replicas)
    return replace(observed, deployments=(current,), **scalers)


def test_switching_to_keda_replaces_the_hpa() -> None:
    model = spec(autoscaling={"enabled": True})
    name = "anna-nvidia-h100-80gb-hbm3"
    state = keda_plan(model, _autoscaled(model, (node("a"),), 3, hpas=frozenset({name})))
    assert [(r.kind, r.name) for r in state.stale] == [("HorizontalPodAutoscaler", name)]
    assert state.plans[0].replica_handover is None  # an autoscaler already owns the count


def test_scaled_to_zero_is_ready_and_idle_not_rolling() -> None:
    model = spec(autoscaling={"enabled": True, "minReplicas": 0})
    name = "anna-nvidia-h100-80gb-hbm3"
    idle = _autoscaled(model, (node("a"),), 0, scaled_objects=frozenset({name}))
    state = keda_plan(model, idle)
    assert state.status.phase == "Ready"
    available = state.status.condition("Available")
    assert available is not None
    assert (available.status, available.reason) == ("False", "ScaledToZero")
    assert state.stale == ()


def test_a_product_at_zero_keeps_its_deployment_when_its_last_node_goes() -> None:
    """The node autoscaler removes the empty node; the Deployment (and KEDA) must stay so a
    wanted stream brings a pod, and the pod a node, back. The engine comes from the cache."""
    model = spec(gpus={"products": [H100]}, autoscaling={"enabled": True, "minReplicas": 0})
    nodes = (node("a"),)
    observed = _ready_observed(model, nodes)
    before = keda_plan(model, observed)
    name = "anna-nvidia-h100-80gb-hbm3"
    key = keys_of(before)[H100]
    gone = Observed(
        published=observed.published,
        deployments=(deployment(name, H100, key, 0, 0),),
        scaled_objects=frozenset({name}),
    )
    state = keda_plan(model, gone, previous=before.status)
    assert keys_of(state)[H100] == key
    assert state.jobs == []  # no rebuild
    assert [d["metadata"]["name"] for d in state.deployments] == [name]
    assert len(state.autoscalers) == 1
    assert state.stale == ()
    assert state.status.phase == "Ready"
    # Without autoscaling, a product with no node is not served (nothing would bring nodes).
    static = spec(gpus={"products": [H100]})
    assert plan(static, gone, previous=before.status).deployments == []


def test_hand_scaled_deployment_is_not_undone_under_autoscaling() -> None:
    model = spec(autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 10})
    nodes = (node("a"),)
    observed = _ready_observed(model, nodes)
    key = keys_of(plan(model, observed))[H100]
    name = "anna-nvidia-h100-80gb-hbm3"
    scaled = deployment(name, H100, key, 5, 5)
    state = plan(
        model,
        Observed(
            nodes=nodes, published=observed.published, deployments=(scaled,), hpas=frozenset({name})
        ),
    )
    assert "replicas" not in state.deployments[0]["spec"]
    assert state.plans[0].replica_handover is None
    assert state.status.replicas == 5
    assert state.status.phase == "Ready"


def test_turning_autoscaling_on_hands_the_current_count_over() -> None:
    model = spec(autoscaling={"enabled": True})
    nodes = (node("a"),)
    observed = _ready_observed(model, nodes)
    key = keys_of(plan(model, observed))[H100]
    current = deployment("anna-nvidia-h100-80gb-hbm3", H100, key, 8, 8)
    state = plan(model, Observed(nodes=nodes, published=observed.published, deployments=(current,)))
    assert state.plans[0].replica_handover == 8


def test_turning_autoscaling_off_deletes_the_hpa_and_sets_replicas() -> None:
    model = spec(replicasPerGPU=1)
    nodes = (node("a"),)
    observed = _ready_observed(model, nodes)
    name = "anna-nvidia-h100-80gb-hbm3"
    state = plan(model, Observed(nodes=nodes, published=observed.published, hpas=frozenset({name})))
    assert [(r.kind, r.name) for r in state.stale] == [("HorizontalPodAutoscaler", name)]
    assert state.deployments[0]["spec"]["replicas"] == 8


# --- parsing --------------------------------------------------------------------------------


def test_deployment_parsing_reads_key_artifact_and_rollout() -> None:
    obj: dict[str, Any] = {
        "metadata": {
            "name": "d",
            "generation": 3,
            "labels": {"lipsync.dev/gpu-product": H100},
            "annotations": {
                "lipsync.dev/engine-key": "sha256:ab",
                "lipsync.dev/engine-artifact": "engine-1.plan",
            },
        },
        "spec": {"replicas": 4},
        "status": {
            "observedGeneration": 2,
            "replicas": 4,
            "updatedReplicas": 4,
            "readyReplicas": 3,
        },
    }
    parsed = server_deployment(obj)
    assert (parsed.engine_key, parsed.artifact, parsed.ready_replicas) == (
        "sha256:ab",
        "engine-1.plan",
        3,
    )
    assert not parsed.rolled_out, "the controller has not seen generation 3 yet"
    assert parsed.autoscaled_gpus is None
    for recorded, expected in (("3", 3), ("-1", None), ("x", None)):
        obj["metadata"]["annotations"]["lipsync.dev/autoscaled-gpus"] = recorded
        assert server_deployment(obj).autoscaled_gpus == expected


def test_node_without_gpu_labels_is_ignored_and_allocatable_is_the_fallback_count() -> None:
    assert gpu_node({"metadata": {"name": "cpu", "labels": {}}, "status": {}}) is None
    obj = node_object("a", strategy="time-slicing", slices=4)
    del obj["metadata"]["labels"]["nvidia.com/gpu.count"]
    parsed = gpu_node(obj)
    assert parsed is not None
    assert parsed.gpus == 8
    assert parsed.allocatable == 32


def test_an_audio_encoder_is_built_in_the_same_job_and_mounted_beside_the_unet() -> None:
    model = spec(
        model={"uri": "pvc://models/unet328/unet.onnx"},
        audioEncoder={"uri": "pvc://encoders/ave.onnx"},
    )
    nodes = (node("a"),)
    [job] = plan(model, Observed(nodes=nodes)).jobs
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--audio-encoder") + 1] == "pvc://encoders/ave.onnx"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"][2:]}
    assert claims == {"models", "encoders"}

    key = keys_of(plan(model, Observed(nodes=nodes)))[H100]
    encoder_key = "sha256:" + "e" * 64
    encoder = BuildResult(
        key=encoder_key, state="Ready", artifact=f"/cache/engines/{'e' * 64}/ave.plan"
    )
    built = ready(key).model_copy(update={"audio_encoder": encoder})
    state = plan(model, Observed(nodes=nodes, published={key: built}))
    [deploy] = state.deployments
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["subPath"] for m in container["volumeMounts"] if "subPath" in m}
    assert mounts["/audio-encoder"] == "engines/" + "e" * 64
    assert container["args"][container["args"].index("--audio-encoder") + 1] == (
        "/audio-encoder/ave.plan"
    )
    annotations = deploy["metadata"]["annotations"]
    assert annotations["lipsync.dev/audio-encoder-key"] == encoder_key
    [engine] = state.status.engines
    assert (engine.encoder_key, engine.encoder_artifact) == (encoder_key, "ave.plan")
    # After the Job is gone, the status alone still says which encoder serves.
    published = published_engines(state.status, "/cache")
    # Results from the status name artifacts as the builder's do: by their URI in the cache.
    assert published[key].artifact == built.artifact
    assert published[key].audio_encoder == encoder.model_copy(update={"cache_hit": True})
    again = plan(model, Observed(nodes=nodes, published=published))
    assert again.deployments[0]["metadata"]["annotations"] == annotations


# --- isolation (operator policy) -------------------------------------------------------------


def test_a_spec_the_policy_refuses_raises_before_anything_is_planned() -> None:
    from lipsync_operator.policy import PolicyError

    observed = Observed(nodes=(node("a1"),))
    with pytest.raises(PolicyError, match=r"spec\.avatar\.uri 'pvc://c/\.\./x'"):
        plan(spec(avatar={"uri": "pvc://c/../x"}), observed)
    with pytest.raises(PolicyError, match=r"spec\.avatar\.uri 'file:///'.*disabled"):
        plan(spec(avatar={"uri": "file:///"}), observed)
    with pytest.raises(PolicyError, match=r"spec\.images\.builder"):
        plan(spec(images={"builder": "evil.example/b:1"}), observed)


def test_server_and_build_pods_mount_no_service_account_token() -> None:
    model = spec()
    nodes = (node("a1"),)
    [job] = plan(model, Observed(nodes=nodes)).jobs
    [deploy] = plan(model, _ready_observed(model, nodes)).deployments
    for pod in (job["spec"]["template"]["spec"], deploy["spec"]["template"]["spec"]):
        assert pod["automountServiceAccountToken"] is False


def test_an_allowed_builder_override_changes_the_key_and_builds_into_a_private_cache() -> None:
    allowed = OperatorConfig(runtime_image=CONFIG.runtime_image, allow_image_overrides=True)
    nodes = (node("a1"),)
    own = spec(images={"builder": "team.example/builder:2"})
    default_key = keys_of(plan(spec(), Observed(nodes=nodes)))[H100]
    state = desired_state(OWNER, own, Observed(nodes=nodes), allowed, previous=None, now=NOW)
    [job] = state.jobs
    assert keys_of(state)[H100] != default_key
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "team.example/builder:2"
    runtime = container["args"][container["args"].index("--runtime") + 1]
    assert runtime == "team.example/builder:2 in private/default/anna"
    [cache] = [m for m in container["volumeMounts"] if m["name"] == "cache"]
    assert cache == {"name": "cache", "mountPath": "/cache", "subPath": "private/default/anna"}
    # The directory is made first, by the operator's own image as the pods' user (a subPath
    # the kubelet creates is root's), and only there the builder image sees the cache root.
    [init] = job["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == CONFIG.runtime_image
    assert init["command"] == ["mkdir", "-p", "/cache/private/default/anna"]
    assert init["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    assert init["securityContext"] == container["securityContext"]
    shared = desired_state(OWNER, spec(), Observed(nodes=nodes), allowed, previous=None, now=NOW)
    [shared_job] = shared.jobs
    assert "initContainers" not in shared_job["spec"]["template"]["spec"]

    key = keys_of(state)[H100]
    served = Observed(nodes=nodes, published={key: ready(key)})
    [deploy] = desired_state(OWNER, own, served, allowed, previous=None, now=NOW).deployments
    mounts = deploy["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    [engine] = [m for m in mounts if m["mountPath"] == "/engine"]
    assert engine["subPath"] == f"private/default/anna/engines/{key[7:]}"
    assert engine["readOnly"] is True


def test_the_gpu_limit_caps_the_servers_over_all_products() -> None:
    capped = OperatorConfig(runtime_image=CONFIG.runtime_image, max_gpus_per_model=10)
    model = spec(gpus={"products": []})
    nodes = (node("a1", gpus=8), node("a2", gpus=8), node("b1", product=L4, gpus=8))
    observed = _ready_observed(model, nodes)
    state = desired_state(OWNER, model, observed, capped, previous=None, now=NOW)
    replicas = {
        p.pool.product: p.deployment["spec"]["replicas"] for p in state.plans if p.deployment
    }
    assert replicas == {H100: 10}  # L4 gets what is left: nothing, so no Deployment
    assert {e.gpu_product: e.gpus for e in state.status.engines} == {H100: 10, L4: 0}
    lowered = spec(gpus={"products": [], "max": 2})
    state = desired_state(OWNER, lowered, observed, capped, previous=None, now=NOW)
    assert [d["spec"]["replicas"] for d in state.deployments] == [2]


def test_each_model_gets_a_network_policy_for_its_servers() -> None:
    state = plan(spec(), Observed(nodes=(node("a1"),)))
    policy = state.network_policy
    assert policy is not None
    assert policy in state.applies()
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "server",
        "lipsync.dev/model": "anna",
    }
    grpc, metrics = policy["spec"]["ingress"]
    assert grpc["ports"] == [{"protocol": "TCP", "port": 8001}]
    assert grpc["from"][0]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["default"]}
    ]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 8002}]
    assert metrics["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "monitoring"
    ]
    wider = OperatorConfig(grpc_client_namespaces=("*",), metrics_namespace="")
    state = desired_state(OWNER, spec(), Observed(), wider, previous=None, now=NOW)
    assert state.network_policy is not None
    assert state.network_policy["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8001}]}
    ]
    off = OperatorConfig(network_policy=False)
    assert (
        desired_state(OWNER, spec(), Observed(), off, previous=None, now=NOW).network_policy is None
    )
