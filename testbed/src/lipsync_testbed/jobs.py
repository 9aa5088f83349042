"""Drive pods on fake nodes to completion, the way a kubelet would.

`finish_pod` sets a pod's terminal status (phase, container exit codes and the
termination message). `JobPodRunner` watches Job pods matching a label selector,
runs each pod's container command locally as a subprocess and then finishes the
pod with the subprocess's exit code and termination message, so the Job
controller sees Complete/Failed Jobs as in a real cluster.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.localpods import LocalPodRule
from lipsync_testbed.nodes import FakeNodes
from lipsync_testbed.podrefs import env_var_value

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


@dataclass(frozen=True)
class PodRun:
    """The outcome of one pod's local run."""

    namespace: str
    name: str
    argv: tuple[str, ...]
    exit_code: int
    message: str
    output_path: Path

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")


def _default_command_map() -> dict[str, list[str]]:
    return {"python": [sys.executable], "python3": [sys.executable]}


@dataclass
class JobPodRunner:
    """Runs the containers of Job pods on fake nodes as local subprocesses.

    - Pods are found by `label_selector` (all namespaces unless `namespace`), owned
      by a Job, bound to a KWOK node and Running (KWOK's pod-ready stage), or Pending
      when `local_pods` selects them (KWOK leaves those to a local runner; do not run a
      `PodRunner` on the same pods).
    - argv is the first container's `command` + `args` (the image entrypoint is
      unknown here, so a command is required); `command_map` rewrites argv[0]
      (default: python/python3 -> this interpreter).
    - Environment: this process's environment (if `inherit_env`), then the
      container's `env` (values, fieldRef, configMapKeyRef, secretKeyRef).
    - The container's terminationMessagePath is mapped to a local temp file:
      every occurrence of that path in argv and env values is replaced, and
      `termination_message_env` (if set) names an env var holding the local path.
      `path_map` adds further pod-path -> local-path prefix rewrites.
    - The pod is then finished with the exit code and the termination message
      (or, for FallbackToLogsOnError, the output's tail on failure).
    """

    api: client.ApiClient
    label_selector: str
    namespace: str | None = None
    path_map: Mapping[str, str] = field(default_factory=dict)
    command_map: Mapping[str, Sequence[str]] = field(default_factory=_default_command_map)
    termination_message_env: str | None = "TERMINATION_MESSAGE_PATH"
    inherit_env: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 300.0
    poll_interval: float = 0.3
    max_parallel: int = 4
    work_dir: Path | None = None
    on_finished: Callable[[PodRun], None] | None = None
    local_pods: LocalPodRule = field(default_factory=LocalPodRule)

    def __post_init__(self) -> None:
        self.runs: dict[str, PodRun] = {}
        self.errors: list[str] = []
        self._seen: set[str] = set()
        self._fake_nodes = FakeNodes(client.CoreV1Api(self.api))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="job-pod")
        self._futures: list[Future[None]] = []
        self._own_work_dir = self.work_dir is None
        self._work_dir = self.work_dir or Path(tempfile.mkdtemp(prefix="lipsync-job-pods-"))

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> JobPodRunner:
        self._thread = threading.Thread(target=self._loop, name="job-pod-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> JobPodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_for(self, namespace: str, name: str) -> PodRun | None:
        with self._lock:
            return self.runs.get(f"{namespace}/{name}")

    # -- watching --------------------------------------------------------------

    def _loop(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self._stop.is_set():
            try:
                if self.namespace:
                    pods = core.list_namespaced_pod(
                        self.namespace, label_selector=self.label_selector
                    ).items
                else:
                    pods = core.list_pod_for_all_namespaces(
                        label_selector=self.label_selector
                    ).items
                for pod in pods:
                    if self._claim(core, pod):
                        self._futures.append(self._pool.submit(self._run_pod, pod))
            except Exception as exc:  # keep watching; report at the end
                log.warning("job pod runner: listing pods failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def _claim(self, core: client.CoreV1Api, pod: client.V1Pod) -> bool:
        meta, spec = pod_meta(pod), pod_spec(pod)
        uid = meta.uid or ""
        if uid in self._seen or meta.deletion_timestamp is not None:
            return False
        phase = pod.status.phase if pod.status else None
        # KWOK makes other pods Running; it leaves the local rule's pods Pending.
        started = phase == "Running" or (phase == "Pending" and self.local_pods.matches(pod))
        if not started or not spec.node_name:
            return False
        if not any(o.kind == "Job" for o in meta.owner_references or []):
            return False
        if not self._fake_nodes.is_fake(spec.node_name):
            return False
        self._seen.add(uid)
        return True

    # -- running ---------------------------------------------------------------

    def _env(
        self, core: client.CoreV1Api, pod: client.V1Pod, container: client.V1Container
    ) -> dict[str, str]:
        env: dict[str, str] = dict(os.environ) if self.inherit_env else {}
        env.update(self.extra_env)
        own: dict[str, str] = {}  # what `$(VAR)` may refer to: the container's own variables
        for var in container.env or []:
            own[var.name] = env_var_value(core, pod, var, own)
        return {**env, **own}

    def _run_pod(self, pod: client.V1Pod) -> None:
        meta = pod_meta(pod)
        namespace, name = meta.namespace or "default", meta.name or ""
        key = f"{namespace}/{name}"
        try:
            self._execute(pod)
        except Exception as exc:
            log.exception("job pod runner: %s failed", key)
            with self._lock:
                self.errors.append(f"{key}: {exc!r}")
            try:
                finish_pod(
                    self.api,
                    namespace,
                    name,
                    succeeded=False,
                    message=f"test bed runner error: {exc}",
                    exit_code=128,
                    reason="StartError",
                )
            except Exception:
                log.exception("job pod runner: could not fail pod %s", key)

    def _execute(self, pod: client.V1Pod) -> None:
        core = client.CoreV1Api(self.api)
        meta = pod_meta(pod)
        namespace, name = meta.namespace or "default", meta.name or ""
        container = pod_spec(pod).containers[0]
        pod_dir = self._work_dir / f"{namespace}_{name}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        term_local = pod_dir / "termination-log"
        term_local.touch()
        term_path = container.termination_message_path or DEFAULT_TERMINATION_MESSAGE_PATH
        mapping = {term_path: str(term_local), **self.path_map}

        command = list(container.command or [])
        if not command:
            raise ValueError(
                f"container {container.name} has no command; "
                "the image entrypoint cannot run locally"
            )
        argv = [_rewrite(a, mapping) for a in [*command, *(container.args or [])]]
        if argv[0] in self.command_map:
            argv = [*self.command_map[argv[0]], *argv[1:]]
        env = {k: _rewrite(v, mapping) for k, v in self._env(core, pod, container).items()}
        if self.termination_message_env:
            env[self.termination_message_env] = str(term_local)

        output_path = pod_dir / "output.log"
        log.info("job pod runner: %s/%s: %s", namespace, name, argv)
        reason: str | None = None
        with output_path.open("wb") as out:
            try:
                proc = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=pod_dir,
                    timeout=self.timeout,
                    check=False,
                )
                exit_code = proc.returncode
            except subprocess.TimeoutExpired:
                exit_code, reason = 137, "DeadlineExceeded"
            except OSError as exc:
                out.write(f"{exc}\n".encode())
                exit_code, reason = 127, "StartError"
        if exit_code < 0:  # killed by a signal, reported as 128 + signal like a container
            exit_code = 128 - exit_code
        raw = term_local.read_bytes()[:MAX_TERMINATION_MESSAGE_BYTES]
        message = raw.decode("utf-8", errors="replace")
        policy = container.termination_message_policy
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            lines = output_path.read_text(encoding="utf-8", errors="replace").splitlines()
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])[-2048:]
        run = PodRun(namespace, name, tuple(argv), exit_code, message, output_path)
        with self._lock:
            self.runs[f"{namespace}/{name}"] = run
        finish_pod(
            self.api,
            namespace,
            name,
            succeeded=exit_code == 0,
            message=message or None,
            exit_code=exit_code,
            reason=reason,
        )
        if self.on_finished is not None:
            self.on_finished(run)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until every pod claimed so far has been run and finished."""
        deadline = time.monotonic() + timeout
        for fut in list(self._futures):
            fut.result(timeout=max(0.0, deadline - time.monotonic()))


def _rewrite(value: str, mapping: Mapping[str, str]) -> str:
    for pod_path, local_path in mapping.items():
        value = value.replace(pod_path, local_path)
    return value
