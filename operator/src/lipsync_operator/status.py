"""The LipSyncModel status, computed from the per-product plans; and the events of its changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from lipsync_contract.api import Condition, ConditionStatus, EngineStatus, LipSyncModelStatus, Phase
from lipsync_operator.conditions import condition
from lipsync_operator.podhealth import PodProblem, summary

CHILD_FAILED = "ChildApplyFailed"  # the Degraded reason when the API server refuses a child


@dataclass(frozen=True)
class EventNote:
    """A Kubernetes Event to post on the LipSyncModel."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class ProductSummary:
    """What status needs from one product's plan."""

    engine: EngineStatus
    has_nodes: bool
    unfit_nodes: tuple[str, ...]  # nodes not configured for the sharing mode
    rolled_out: bool  # the Deployment runs the wanted key on all its pods (or needs none)
    scaled_to_zero: bool = False  # its autoscaler took it to zero pods (idle, not broken)


def _join(items: Sequence[str]) -> str:
    return ", ".join(items)


def compute_status(
    products: Sequence[ProductSummary],
    generation: int,
    endpoint: str,
    previous: LipSyncModelStatus | None,
    now: datetime,
    *,
    pod_problems: Sequence[PodProblem] = (),
) -> LipSyncModelStatus:
    old = previous.conditions if previous is not None else []
    engines = [p.engine for p in products]
    present = [p for p in products if p.has_nodes]
    failed = [e for e in engines if e.state == "Failed"]
    building = [e for e in engines if e.state == "Building"]
    absent = [e.gpu_product for e in engines if e.state == "Pending"]
    unfit = [node for p in products for node in p.unfit_nodes]
    replicas = sum(e.replicas for e in engines)
    ready = sum(e.ready_replicas for e in engines)
    serving = ready > 0
    stale_rollout = [p.engine.gpu_product for p in products if not p.rolled_out]
    idle = bool(products) and all(p.scaled_to_zero for p in products if p.engine.replicas == 0)

    def cond(type_: str, ok: bool, reason: str, message: str) -> Condition:
        status: ConditionStatus = "True" if ok else "False"
        return condition(
            old, type_, status, reason=reason, message=message, generation=generation, now=now
        )

    if not present:
        engines_ready = cond("EnginesReady", False, "NoGPUNodes", "no schedulable GPU node matches")
    elif failed:
        detail = "; ".join(f"{e.gpu_product}: {e.reason}" for e in failed)
        engines_ready = cond("EnginesReady", False, "BuildFailed", detail)
    elif building:
        names = _join([e.gpu_product for e in building])
        engines_ready = cond("EnginesReady", False, "Building", f"building for {names}")
    else:
        names = _join([e.gpu_product for e in engines if e.state == "Ready"])
        engines_ready = cond("EnginesReady", True, "AllEnginesReady", f"engines ready for {names}")

    if not serving and replicas == 0 and idle:
        available = cond(
            "Available", False, "ScaledToZero", "scaled to zero: a wanted stream wakes it"
        )
    else:
        available = cond(
            "Available",
            serving,
            "ReplicasReady" if serving else "NoReadyReplicas",
            f"{ready}/{replicas} server pods ready",
        )

    if building:
        progressing = cond("Progressing", True, "Building", engines_ready.message)
    elif stale_rollout:
        progressing = cond("Progressing", True, "RollingOut", f"rolling {_join(stale_rollout)}")
    else:
        progressing = cond("Progressing", False, "Settled", "nothing to build or roll out")

    problems = []
    if failed:
        problems.append(("BuildFailed", engines_ready.message))
    if unfit:
        problems.append(
            ("SharingNotConfigured", f"nodes not configured for the sharing mode: {_join(unfit)}")
        )
    if absent and present:
        problems.append(("GPUProductAbsent", f"no schedulable node for {_join(absent)}"))
    if problems:
        degraded = cond(
            "Degraded", True, problems[0][0], "; ".join(message for _, message in problems)
        )
    else:
        degraded = cond("Degraded", False, "AsExpected", "")

    if pod_problems:
        pods_healthy = cond("PodsHealthy", False, *summary(pod_problems))
    else:
        pods_healthy = cond("PodsHealthy", True, "AsExpected", "")

    phase: Phase
    if failed and not serving and not building:
        phase = "Failed"
    elif problems and serving:
        phase = "Degraded"
    elif not present:
        phase = "Pending"
    elif building:
        phase = "Building"
    elif stale_rollout or ready < replicas or (replicas == 0 and not idle):
        phase = "Rolling"
    else:
        phase = "Ready"

    return LipSyncModelStatus(
        observed_generation=generation,
        phase=phase,
        conditions=[engines_ready, available, progressing, degraded, pods_healthy],
        engines=engines,
        gpu_products=",".join(e.gpu_product for e in engines if e.state != "Pending"),
        replicas=replicas,
        ready_replicas=ready,
        endpoint=endpoint,
    )


def invalid_spec_status(
    message: str, generation: int, previous: LipSyncModelStatus | None, now: datetime
) -> LipSyncModelStatus:
    """Status for a spec the operator cannot act on: Failed, with the reason, children kept."""
    old = previous.conditions if previous is not None else []
    base = previous or LipSyncModelStatus()
    flags: tuple[tuple[str, ConditionStatus], ...] = (
        ("EnginesReady", "False"),
        ("Progressing", "False"),
        ("Degraded", "True"),
    )
    invalid = {"reason": "InvalidSpec", "message": message}
    conditions = [
        condition(old, type_, flag, **invalid, generation=generation, now=now)
        for type_, flag in flags
    ]
    available = base.condition("Available")
    if available is not None:
        conditions.insert(1, available)
    return base.model_copy(
        update={"observed_generation": generation, "phase": "Failed", "conditions": conditions}
    )


def child_failure_status(
    status: LipSyncModelStatus,
    message: str,
    previous: LipSyncModelStatus | None,
    now: datetime,
) -> LipSyncModelStatus:
    """``status`` with the API server's refusal of a child on it: Degraded, and a phase that
    says so (Degraded while pods serve, else Failed), never the phase the refused change hid."""
    old = previous.conditions if previous is not None else []
    generation = status.observed_generation or 0
    degraded = condition(
        old, "Degraded", "True", reason=CHILD_FAILED, message=message, generation=generation,
        now=now,
    )  # fmt: skip
    conditions = [c for c in status.conditions if c.type != "Degraded"] + [degraded]
    phase: Phase = "Degraded" if status.ready_replicas > 0 else "Failed"
    return status.model_copy(update={"phase": phase, "conditions": conditions})


def once_per_message(
    previous: LipSyncModelStatus | None, reason: str, message: str
) -> list[EventNote]:
    """A Warning for a problem on the Degraded condition, unless it already says the same."""
    degraded = previous.condition("Degraded") if previous is not None else None
    if degraded is not None and degraded.reason == reason and degraded.message == message:
        return []
    return [EventNote("Warning", reason, message)]


def transition_events(
    previous: LipSyncModelStatus | None, current: LipSyncModelStatus
) -> list[EventNote]:
    """One event per engine state change and per phase change."""
    events: list[EventNote] = []
    before = {e.gpu_product: e for e in previous.engines} if previous is not None else {}
    for engine in current.engines:
        old = before.get(engine.gpu_product)
        if old is not None and old.state == engine.state and old.key == engine.key:
            continue
        if engine.state == "Failed":
            events.append(
                EventNote("Warning", "EngineFailed", f"{engine.gpu_product}: {engine.reason}")
            )
        elif engine.state == "Ready":
            detail = f" (PSNR {engine.psnr_db:.1f} dB)" if engine.psnr_db is not None else ""
            events.append(
                EventNote("Normal", "EngineReady", f"{engine.gpu_product}: {engine.key}{detail}")
            )
        elif engine.state == "Building":
            events.append(
                EventNote("Normal", "EngineBuilding", f"{engine.gpu_product}: job {engine.job}")
            )
    events += _pod_events(previous, current)
    old_phase = previous.phase if previous is not None else None
    if old_phase != current.phase:
        kind: Literal["Normal", "Warning"] = (
            "Warning" if current.phase in ("Failed", "Degraded") else "Normal"
        )
        events.append(
            EventNote(kind, f"Phase{current.phase}", f"phase {old_phase} -> {current.phase}")
        )
    return events


# Reasons the kubelet alternates between for one cause (it retries the pull with a back-off).
_SAME_CAUSE = {"ErrImagePull": "ImagePullBackOff"}


def _pod_events(
    previous: LipSyncModelStatus | None, current: LipSyncModelStatus
) -> list[EventNote]:
    """A Warning when pods stop being able to start, or start failing for another cause."""
    now = current.condition("PodsHealthy")
    if now is None or now.status != "False":
        return []
    before = previous.condition("PodsHealthy") if previous is not None else None
    if before is not None and before.status == "False":
        cause = _SAME_CAUSE.get(now.reason, now.reason)
        if _SAME_CAUSE.get(before.reason, before.reason) == cause:
            return []
    return [EventNote("Warning", now.reason, now.message)]
