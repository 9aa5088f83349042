"""Pod status as a kubelet reports it, built from container states (pure, no I/O)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def timestamp(when: datetime.datetime | None = None) -> str:
    moment = when or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """One container's reported state (the fields of a containerStatus)."""

    name: str
    image: str
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict[str, Any] | None:
        value = self.state.get("terminated")
        return value if isinstance(value, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "state": self.state,
            "lastState": self.last_state,
            "restartCount": self.restart_count,
            "ready": self.ready,
            "started": self.started,
        }


def running_state(started_at: str) -> dict[str, Any]:
    return {"running": {"startedAt": started_at}}


def terminated_state(
    exit_code: int, started_at: str, finished_at: str, message: str = "", reason: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if message:
        body["message"] = message
    return {"terminated": body}


def waiting_state(reason: str, message: str = "") -> dict[str, Any]:
    body = {"reason": reason}
    if message:
        body["message"] = message
    return {"waiting": body}


def pod_phase(
    containers: Sequence[ContainerState],
    *,
    initialized: bool,
    restart_policy: str,
    failed_init: bool,
) -> str:
    """Pending until initialized and started; Running while any container runs or will
    restart; Succeeded/Failed when every container has terminated for good."""
    if failed_init:
        return "Failed"
    ended = [c.terminated for c in containers]
    if initialized and ended and all(t is not None for t in ended):
        codes = [int(t["exitCode"]) for t in ended if t is not None]
        restarts = restart_policy == "Always" or (
            restart_policy == "OnFailure" and any(code != 0 for code in codes)
        )
        if not restarts:
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    began = any(c.running or c.restart_count or c.terminated for c in containers)
    return "Running" if initialized and began else "Pending"


def _condition(
    kind: str, ok: bool, previous: Mapping[str, Mapping[str, Any]], now: str, reason: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now
    condition: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": since}
    if reason and not ok:
        condition["reason"] = reason
    return condition


def pod_conditions(
    containers: Sequence[ContainerState],
    *,
    initialized: bool,
    phase: str,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    managed: str | None = None,
) -> list[dict[str, Any]]:
    """PodScheduled, Initialized, ContainersReady and Ready (and the `managed` condition,
    True, when given); transition times kept."""
    terminal = phase in ("Succeeded", "Failed")
    ready = initialized and not terminal and all(c.ready for c in containers)
    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    return [
        _condition("PodScheduled", True, previous, now),
        _condition("Initialized", initialized, previous, now, "ContainersNotInitialized"),
        _condition("ContainersReady", ready, previous, now, not_ready),
        _condition("Ready", ready, previous, now, not_ready),
        *([_condition(managed, True, previous, now)] if managed else []),
    ]
