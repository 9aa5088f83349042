"""Why a model's pod cannot start, in the kubelet's or the scheduler's words.

A server or build pod that cannot pull its image, crash-loops, cannot create its container or
finds no node sits in ``Pending`` or ``Running`` without becoming ready; its owner's status would
only say "0/1 ready". `pod_problem` reads the reason off the pod's own status, so the model's
``PodsHealthy`` condition and an Event can name it (as ``kubectl describe pod`` would).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

# Waiting reasons that do not go away by themselves (ContainerCreating and PodInitializing do).
KUBELET_FAILURES = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "PostStartHookError",
        "PreStartHookError",
        "RunContainerError",
    }
)
UNSCHEDULABLE = "Unschedulable"
MESSAGE_LINE = 300  # characters of a container's last words kept in a condition
SHOWN = 3  # problems a condition message spells out; the rest are counted


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str  # the kubelet's waiting reason, or the scheduler's Unschedulable
    message: str

    def describe(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"pod {self.pod}: {self.reason}{detail}"


def _last_exit(container: Obj) -> str:
    terminated = (container.get("lastState") or {}).get("terminated") or {}
    if "exitCode" not in terminated:
        return ""
    reason = terminated.get("reason")
    said = f" ({reason})" if reason else ""
    # The container's termination message, or its last log lines (FallbackToLogsOnError):
    # the line that says why.
    lines = [line for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    if lines:
        said += f": {lines[-1].strip()[:MESSAGE_LINE]}"
    return f"last exit code {terminated['exitCode']}{said}"


def _container_problem(containers: Iterable[Obj]) -> tuple[str, str] | None:
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason not in KUBELET_FAILURES:
            continue
        parts = [str(waiting.get("message") or ""), _last_exit(container)]
        detail = "".join(f"; {part}" for part in parts if part)
        return reason, f"container {container.get('name')}{detail}"
    return None


def pod_problem(pod: Obj) -> PodProblem | None:
    """What keeps ``pod`` from starting, or None (it runs, starts, or has finished)."""
    meta: Obj = pod.get("metadata") or {}
    status: Obj = pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    name = str(meta.get("name", ""))
    containers: Sequence[Obj] = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    found = _container_problem(containers)
    if found is not None:
        return PodProblem(name, *found)
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == UNSCHEDULABLE
        ):
            return PodProblem(name, UNSCHEDULABLE, str(condition.get("message") or ""))
    return None


def summary(problems: Sequence[PodProblem]) -> tuple[str, str]:
    """(reason, message) for a condition: the kubelet's failures before the scheduler's waits,
    the first one's reason, the first few spelled out."""
    ordered = sorted(problems, key=lambda p: (p.reason == UNSCHEDULABLE, p.pod, p.reason))
    message = "; ".join(problem.describe() for problem in ordered[:SHOWN])
    if len(ordered) > SHOWN:
        message += f"; and {len(ordered) - SHOWN} more pods"
    return ordered[0].reason, message
