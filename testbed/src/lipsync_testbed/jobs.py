"""Finish pods on KWOK nodes the way a kubelet would: `finish_pod` sets a pod's terminal
status (phase, container exit codes and the termination message), so the Job controller sees
Complete/Failed Jobs (the operator scale benchmark's builds)."""

from __future__ import annotations

import datetime
import logging

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def pod_meta(pod: client.V1Pod) -> client.V1ObjectMeta:
    if pod.metadata is None:
        raise ValueError("pod without metadata")
    return pod.metadata


def pod_spec(pod: client.V1Pod) -> client.V1PodSpec:
    if pod.spec is None:
        raise ValueError(f"pod {pod_meta(pod).name} without spec")
    return pod.spec


def _terminated_status(
    container: client.V1Container,
    previous: client.V1ContainerStatus | None,
    *,
    exit_code: int,
    message: str | None,
    reason: str,
) -> client.V1ContainerStatus:
    now = _now()
    started = now
    if previous is not None and previous.state is not None and previous.state.running is not None:
        started = previous.state.running.started_at or now
    terminated = client.V1ContainerStateTerminated(
        exit_code=exit_code,
        reason=reason,
        message=message or None,
        started_at=started,
        finished_at=now,
    )
    return client.V1ContainerStatus(
        name=container.name,
        image=container.image or "",
        image_id="",
        ready=False,
        started=False,
        restart_count=previous.restart_count if previous is not None else 0,
        state=client.V1ContainerState(terminated=terminated),
    )


def finish_pod(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    succeeded: bool,
    message: str | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    container: str | None = None,
) -> None:
    """Drive a pod to Succeeded or Failed, as the kubelet would after its containers exit.

    `message` (the termination message) and `exit_code` go to the named container
    (default: the first one); other containers terminate with exit code 0. The
    status is replaced with optimistic concurrency; conflicts are retried.
    """
    core = client.CoreV1Api(api)
    code = exit_code if exit_code is not None else (0 if succeeded else 1)
    if succeeded and code != 0:
        raise ValueError("a succeeded pod's containers exit with code 0")
    for _attempt in range(20):
        pod = core.read_namespaced_pod(name, namespace)
        spec = pod_spec(pod)
        target = container or spec.containers[0].name
        status = pod.status or client.V1PodStatus()
        previous = {s.name: s for s in status.container_statuses or []}
        statuses = []
        for item in spec.containers:
            mine = item.name == target
            default_reason = "Completed" if code == 0 else "Error"
            statuses.append(
                _terminated_status(
                    item,
                    previous.get(item.name),
                    exit_code=code if mine else 0,
                    message=message if mine else None,
                    reason=(reason or default_reason) if mine else "Completed",
                )
            )
        now = _now()
        conditions = [
            c for c in status.conditions or [] if c.type not in ("Ready", "ContainersReady")
        ]
        for kind in ("Ready", "ContainersReady"):
            conditions.append(
                client.V1PodCondition(
                    type=kind, status="False", reason="PodCompleted", last_transition_time=now
                )
            )
        status.phase = "Succeeded" if succeeded else "Failed"
        status.container_statuses = statuses
        status.conditions = conditions
        pod.status = status
        try:
            core.replace_namespaced_pod_status(name, namespace, pod)
        except ApiException as exc:
            if exc.status == 409:
                continue
            raise
        log.info("pod %s/%s -> %s (exit %d)", namespace, name, status.phase, code)
        return
    raise RuntimeError(f"pod {namespace}/{name}: too many update conflicts")
