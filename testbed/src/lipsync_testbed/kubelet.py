"""A local kubelet for the test bed: pods selected by a `LocalPodRule` on fake nodes run
as local processes, with their own address, volumes, probes, restarts and termination.

One control thread lists the pods every `poll_interval`, starts and stops the
containers' processes (so their parent-death signal stays tied to it) and writes
each pod's status; probes run on a small thread pool. See hack/cluster/README.md
("Pods that really run") for the rules.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed import mountns
from lipsync_testbed.localpods import (
    MANAGED_CONDITION,
    ImageEntrypoint,
    LocalPodRule,
    container_argv,
    default_image_entrypoints,
    image_repository,
    local_program,
)
from lipsync_testbed.nodes import FakeNodes
from lipsync_testbed.podaddresses import AddressKind, PodAddresses
from lipsync_testbed.podenv import expand, rewrite_paths
from lipsync_testbed.podrefs import env_from, env_var_value
from lipsync_testbed.podstatus import (
    ContainerState,
    pod_conditions,
    pod_phase,
    running_state,
    terminated_state,
    timestamp,
    waiting_state,
)
from lipsync_testbed.podvolumes import (
    HostLayout,
    VolumeBuilder,
    VolumeNotReadyError,
    token_lifetime,
)
from lipsync_testbed.probes import ProbeContext, ProbeTracker, probe_once
from lipsync_testbed.processes import set_parent_death_signal

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
MERGE_PATCH = "application/merge-patch+json"
# Host variables a container must not inherit: they would point its clients elsewhere.
_HOST_ONLY_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def default_command_map() -> dict[str, list[str]]:
    """Programs of the project's images -> this environment's programs."""
    bin_dir = Path(sys.executable).parent
    mapping: dict[str, list[str]] = {"python": [sys.executable], "python3": [sys.executable]}
    lipsync = bin_dir / "lipsync"
    if lipsync.exists():
        mapping["lipsync"] = [str(lipsync)]
    return mapping


def pod_dir(root: Path, namespace: str, name: str) -> Path | None:
    """`<root>/pods/<ns>_<name>_<uid>` of the newest pod with that name."""
    dirs = sorted((root / "pods").glob(f"{namespace}_{name}_*"), key=lambda p: p.stat().st_mtime)
    return dirs[-1] if dirs else None


def pod_log_path(
    root: Path, namespace: str, name: str, container: str | None = None, *, previous: bool = False
) -> Path | None:
    """`<pod dir>/logs/<container>/<restart count>.log`, the layout a kubelet keeps;
    `previous` is the run before the latest; `container` defaults to the first by name."""
    directory = pod_dir(root, namespace, name)
    if directory is None:
        return None
    logs = directory / "logs"
    names = sorted(p.name for p in logs.iterdir()) if logs.is_dir() else []
    chosen = container or (names[0] if names else None)
    if chosen is None:
        return None
    runs = sorted((logs / chosen).glob("*.log"), key=lambda p: int(p.stem))
    index = -2 if previous else -1
    return runs[index] if len(runs) >= -index else None


def read_pod_log(
    root: Path, namespace: str, name: str, container: str | None = None, *, previous: bool = False
) -> str:
    """A container's stdout and stderr ('' when it never ran)."""
    path = pod_log_path(root, namespace, name, container, previous=previous)
    return path.read_text(encoding="utf-8", errors="replace") if path else ""


@dataclass
class _Run:
    """One container of a local pod: its current process, state and probes."""

    container: client.V1Container
    status: ContainerState
    log_dir: Path
    term_file: Path
    proc: subprocess.Popen[bytes] | None = None
    started_mono: float = 0.0
    started_at: str = ""
    backoff_until: float = 0.0
    backoff: float = 0.0
    done: bool = False
    kill_reason: str = ""
    kill_deadline: float = 0.0
    probes: dict[str, ProbeTracker] = field(default_factory=dict)
    pending: dict[str, Future[tuple[bool, str]]] = field(default_factory=dict)


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    pod: client.V1Pod
    dir: Path
    ip: str = ""
    host_ip: str = ""
    start_time: str = ""
    volumes: dict[str, Path] | None = None
    init: list[_Run] = field(default_factory=list)
    main: list[_Run] = field(default_factory=list)
    init_failed: bool = False
    waiting_message: str = ""
    terminating_since: float = 0.0
    refresh_tokens_at: float = 0.0
    finished: bool = False
    last_status: dict[str, Any] = field(default_factory=dict)
    last_written: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def runs(self) -> list[_Run]:
        return [*self.init, *self.main]


@dataclass
class PodRunner:
    """Runs the pods selected by `rule` that are bound to fake nodes, like a kubelet.

    - `namespace`: only this namespace (default: all).
    - `work_dir`: per-pod directories `pods/<ns>_<name>_<uid>/` (logs, volumes) and the
      fake node filesystem `node/` (default: a temporary directory, removed on stop).
    - `host_paths`, `claim_dirs`: see `HostLayout` (hostPath prefixes and claims -> dirs).
    - `image_entrypoints`, `command_map`: what images run when a container has no
      command, and argv[0] -> local program (default: `lipsync`, `python`, `python3`).
    - `addresses`: `alias`, `loopback` or None (detect; see podaddresses).
    - `restart_backoff`: (first, longest) restart delay in seconds, doubling between.
    - `shutdown_grace`: on `stop()`, the longest wait between SIGTERM and SIGKILL.
    """

    api: client.ApiClient
    rule: LocalPodRule = field(default_factory=LocalPodRule)
    namespace: str | None = None
    work_dir: Path | None = None
    host_paths: Mapping[str, Path] = field(default_factory=dict)
    claim_dirs: Mapping[str, Path] = field(default_factory=dict)
    image_entrypoints: Mapping[str, ImageEntrypoint] = field(
        default_factory=default_image_entrypoints
    )
    command_map: Mapping[str, Sequence[str]] = field(default_factory=default_command_map)
    addresses: AddressKind | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    restart_backoff: tuple[float, float] = (10.0, 300.0)
    poll_interval: float = 0.25
    shutdown_grace: float = 8.0

    def __post_init__(self) -> None:
        self._own_work_dir = self.work_dir is None
        self.root = self.work_dir or Path(tempfile.mkdtemp(prefix="lipsync-pods-"))
        self.layout = HostLayout(self.root / "node", self.host_paths, self.claim_dirs)
        self.errors: list[str] = []
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pod-probe")
        self._core = client.CoreV1Api(self.api)
        self._nodes = FakeNodes(self._core)
        self._volumes = VolumeBuilder(self._core, self.layout)
        self._ips = PodAddresses(self.addresses or PodAddresses.detect())
        self._ips.sweep()
        self._namespaces, self._map_root = mountns.available()
        server = urlsplit(self.api.configuration.host)
        self._service_host = server.hostname or "127.0.0.1"
        self._service_port = str(server.port or 443)

    @property
    def address_kind(self) -> AddressKind:
        return self._ips.kind

    @property
    def mount_namespaces(self) -> bool:
        """Whether /run mounts (the service-account token) appear at their in-pod paths."""
        return self._namespaces

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> PodRunner:
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._thread.start()
        # A runner never stopped still gives its addresses back when the interpreter exits
        # (its processes die with the control thread: parent-death signal).
        atexit.register(self._ips.free_all)
        return self

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after each pod's grace period), finish
        pods being deleted, free the addresses. Pods still wanted keep their last status."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        self._probe_pool.shutdown(wait=True, cancel_futures=True)
        self._ips.free_all()
        atexit.unregister(self._ips.free_all)
        if self._own_work_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read -------------------------------------------------------------

    def pod_dir(self, namespace: str, name: str) -> Path | None:
        """The newest directory of a pod with that name (logs survive the pod)."""
        return pod_dir(self.root, namespace, name)

    def log(
        self, namespace: str, name: str, container: str | None = None, *, previous: bool = False
    ) -> str:
        """A container's output (stdout and stderr), like `kubectl logs [--previous]`."""
        return read_pod_log(self.root, namespace, name, container, previous=previous)

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of every container's latest log, for failure reports."""
        parts = []
        for logs in sorted((self.root / "pods").glob("*/logs/*")):
            runs = sorted(logs.glob("*.log"), key=lambda p: int(p.stem))
            if runs:
                text = runs[-1].read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"==> {runs[-1]} <==\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def pod_ip(self, namespace: str, name: str) -> str | None:
        with self._lock:
            for pod in self._pods.values():
                if (pod.namespace, pod.name) == (namespace, name):
                    return pod.ip
        return None

    # -- control loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep running; tests read .errors
                log.exception("pod runner: sync failed")
                self._record_error(f"sync: {exc!r}")
            self._stop.wait(self.poll_interval)
        self._shutdown()

    def _record_error(self, message: str) -> None:
        with self._lock:
            if message not in self.errors:
                self.errors.append(message)

    def _list(self) -> list[client.V1Pod]:
        if self.namespace:
            return list(self._core.list_namespaced_pod(self.namespace).items)
        return list(self._core.list_pod_for_all_namespaces().items)

    def _sync(self) -> None:
        seen: set[str] = set()
        for pod in self._list():
            meta, spec = pod.metadata, pod.spec
            if meta is None or spec is None or not spec.node_name or not self.rule.matches(pod):
                continue
            if not self._nodes.is_fake(spec.node_name):
                continue
            uid = meta.uid or ""
            seen.add(uid)
            local = self._pods.get(uid)
            if local is None:
                local = self._adopt(pod)
                if local is None:
                    continue
            local.pod = pod
            try:
                self._drive(local)
            except Exception as exc:
                log.exception("pod runner: %s", local.key)
                self._record_error(f"{local.key}: {exc!r}")
        for uid in [u for u in self._pods if u not in seen]:
            self._forget(self._pods[uid], kill=True)

    def _adopt(self, pod: client.V1Pod) -> _Pod | None:
        meta = pod.metadata or client.V1ObjectMeta()
        phase = pod.status.phase if pod.status else None
        namespace, name, uid = meta.namespace or "default", meta.name or "", meta.uid or ""
        if meta.deletion_timestamp is not None:
            self._delete_now(namespace, name, uid)  # never started here: nothing to stop
            return None
        if phase in ("Succeeded", "Failed"):
            return None
        pod_dir = self.root / "pods" / f"{namespace}_{name}_{uid}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        local = _Pod(uid=uid, namespace=namespace, name=name, pod=pod, dir=pod_dir)
        spec = pod.spec or client.V1PodSpec(containers=[])
        local.init = [self._new_run(local, c) for c in spec.init_containers or []]
        local.main = [self._new_run(local, c) for c in spec.containers]
        previous_ip = pod.status.pod_ip if pod.status else None
        local.ip = previous_ip if previous_ip and self._ips.claim(previous_ip) else ""
        local.ip = local.ip or self._ips.allocate()
        local.host_ip = self._nodes.internal_ip(spec.node_name or "") or "127.0.0.1"
        local.start_time = timestamp()
        with self._lock:
            self._pods[uid] = local
        log.info("pod runner: %s gets %s", local.key, local.ip)
        return local

    def _new_run(self, pod: _Pod, container: client.V1Container) -> _Run:
        log_dir = pod.dir / "logs" / container.name
        log_dir.mkdir(parents=True, exist_ok=True)
        term = pod.dir / "termination" / container.name
        term.parent.mkdir(parents=True, exist_ok=True)
        return _Run(
            container=container,
            status=ContainerState(name=container.name, image=container.image or ""),
            log_dir=log_dir,
            term_file=term,
        )

    def _forget(self, pod: _Pod, *, kill: bool) -> None:
        if kill:
            for run in pod.runs():
                self._kill(run, signal.SIGKILL)
        self._ips.free(pod.ip)
        with self._lock:
            self._pods.pop(pod.uid, None)
        shutil.rmtree(pod.dir / "volumes", ignore_errors=True)

    def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        try:
            self._core.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- one pod ---------------------------------------------------------------------

    def _drive(self, pod: _Pod) -> None:
        meta = pod.pod.metadata or client.V1ObjectMeta()
        if meta.deletion_timestamp is not None:
            self._terminate(pod, meta)
            return
        if pod.finished:
            return
        if pod.volumes is None and not self._prepare(pod):
            self._write_status(pod)
            return
        self._refresh_tokens(pod)
        for run in pod.runs():
            self._reap(pod, run)
        if not self._run_init(pod):
            self._write_status(pod)
            return
        for run in pod.main:
            self._advance(pod, run)
        status = self._write_status(pod)
        if status.get("phase") in ("Succeeded", "Failed"):
            pod.finished = True
            self._ips.free(pod.ip)

    def _prepare(self, pod: _Pod) -> bool:
        self._write_status(pod)  # podIP first: the volumes' downward API may read it
        fresh = self._core.read_namespaced_pod(pod.name, pod.namespace)
        pod.pod = fresh
        try:
            pod.volumes = self._volumes.build(fresh, pod.dir)
        except VolumeNotReadyError as exc:
            pod.waiting_message = str(exc)
            return False
        pod.waiting_message = ""
        self._schedule_token_refresh(pod)
        return True

    def _schedule_token_refresh(self, pod: _Pod) -> None:
        lifetime = token_lifetime(pod.pod)
        pod.refresh_tokens_at = time.monotonic() + 0.8 * lifetime if lifetime else 0.0

    def _refresh_tokens(self, pod: _Pod) -> None:
        if pod.refresh_tokens_at and time.monotonic() >= pod.refresh_tokens_at and pod.volumes:
            self._volumes.refresh_tokens(pod.pod, pod.volumes)
            self._schedule_token_refresh(pod)

    def _run_init(self, pod: _Pod) -> bool:
        """Run init containers one at a time; True once all have succeeded."""
        for run in pod.init:
            if run.done:
                continue
            terminated = run.status.terminated
            if run.proc is None and terminated is not None and terminated["exitCode"] == 0:
                run.done = True
                continue
            self._advance(pod, run)
            return False
        return True

    def _restart_policy(self, pod: _Pod) -> str:
        spec = pod.pod.spec
        return (spec.restart_policy if spec else None) or "Always"

    def _advance(self, pod: _Pod, run: _Run) -> None:
        now = time.monotonic()
        if run.proc is None and not run.done and now >= run.backoff_until:
            self._start(pod, run)
        if run.proc is not None:
            self._probe(pod, run, now)
            if run.kill_reason and now >= run.kill_deadline:
                self._kill(run, signal.SIGKILL)

    def _reap(self, pod: _Pod, run: _Run) -> None:
        """Notice an exit; decide on a restart per restartPolicy."""
        if run.proc is None or run.proc.poll() is None:
            return
        code = run.proc.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal
        run.proc = None
        message = self._termination_message(run, code)
        reason = "Error" if code else "Completed"
        if run.kill_reason.startswith("failed"):
            reason = "Error"
        state = terminated_state(code, run.started_at, timestamp(), message, reason)
        run.status.ready = False
        run.status.started = False
        run.kill_reason = ""
        run.probes.clear()
        run.pending.clear()
        policy = self._restart_policy(pod)
        is_init = run in pod.init
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if is_init:
            restart = code != 0 and policy != "Never"
            if code != 0 and policy == "Never":
                pod.init_failed = True
        if not restart:
            run.status.state = state
            run.done = True
            return
        run.status.last_state = state
        first, longest = self.restart_backoff
        run.backoff = min(longest, run.backoff * 2) if run.backoff else first
        run.backoff_until = time.monotonic() + run.backoff
        run.status.restart_count += 1
        self._event(
            pod, "BackOff", f"Back-off restarting failed container {run.container.name}", "Warning"
        )
        run.status.state = waiting_state(
            "CrashLoopBackOff",
            f"back-off {run.backoff:.0f}s restarting failed container={run.container.name} "
            f"pod={pod.name}",
        )

    def _termination_message(self, run: _Run, code: int) -> str:
        try:
            raw = run.term_file.read_bytes()[:MAX_TERMINATION_MESSAGE_BYTES]
        except FileNotFoundError:
            raw = b""
        message = raw.decode("utf-8", errors="replace").strip()
        policy = run.container.termination_message_policy or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            path = run.log_dir / f"{run.status.restart_count}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])[-MAX_TERMINATION_MESSAGE_BYTES:]
        return message

    # -- starting a container --------------------------------------------------------

    def _mounts(self, pod: _Pod, run: _Run) -> list[tuple[str, str]]:
        volumes = pod.volumes or {}
        mounts = []
        for mount in run.container.volume_mounts or []:
            if mount.name not in volumes:
                raise ValueError(
                    f"container {run.container.name} mounts unknown volume {mount.name!r}"
                )
            host = volumes[mount.name] / (mount.sub_path or "")
            if mount.sub_path:
                host.mkdir(parents=True, exist_ok=True)
            mounts.append((mount.mount_path, str(host)))
        term_path = run.container.termination_message_path or DEFAULT_TERMINATION_MESSAGE_PATH
        mounts.append((term_path, str(run.term_file)))
        return mounts

    def _container_env(self, pod: _Pod, run: _Run) -> dict[str, str]:
        """The container's own variables (what `$(VAR)` may refer to), in order."""
        env: dict[str, str] = {
            "KUBERNETES_SERVICE_HOST": self._service_host,
            "KUBERNETES_SERVICE_PORT": self._service_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": self._service_port,
            "HOSTNAME": pod.name,
        }
        for source in run.container.env_from or []:
            env.update(env_from(self._core, pod.pod, source))
        for var in run.container.env or []:
            env[var.name] = env_var_value(self._core, pod.pod, var, env)
        return env

    def _process_env(
        self,
        container: client.V1Container,
        own: Mapping[str, str],
        mounts: Sequence[tuple[str, str]],
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY_ENV}
        image = self.image_entrypoints.get(image_repository(container.image or ""))
        env.update(image.env if image else ())
        env.update(self.extra_env)
        env.update({k: rewrite_paths(v, mounts) for k, v in own.items()})
        return env

    def _argv(
        self,
        container: client.V1Container,
        own: Mapping[str, str],
        mounts: Sequence[tuple[str, str]],
    ) -> list[str]:
        argv = container_argv(container, self.image_entrypoints)
        return local_program(
            [rewrite_paths(expand(a, own), mounts) for a in argv], self.command_map
        )

    def _start(self, pod: _Pod, run: _Run) -> None:
        container = run.container
        try:
            mounts = self._mounts(pod, run)
            own = self._container_env(pod, run)
            argv = self._argv(container, own, mounts)
        except (ValueError, ApiException) as exc:
            run.status.state = waiting_state("CreateContainerConfigError", str(exc))
            run.backoff_until = time.monotonic() + 2.0
            return
        binds = [(host, path) for path, host in mounts if mountns.under_run(path)]
        if binds and self._namespaces:
            argv = mountns.wrap(argv, binds, map_root=self._map_root)
        env = self._process_env(container, own, mounts)
        run.term_file.write_bytes(b"")
        workdir = rewrite_paths(container.working_dir or "", mounts) or str(pod.dir)
        log_path = run.log_dir / f"{run.status.restart_count}.log"
        log.info("pod runner: %s/%s: %s", pod.key, container.name, argv)
        with log_path.open("ab") as out:
            try:
                run.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir if Path(workdir).is_dir() else str(pod.dir),
                    start_new_session=True,
                    preexec_fn=set_parent_death_signal,  # noqa: PLW1509
                )
            except OSError as exc:
                out.write(f"{exc}\n".encode())
                run.status.state = waiting_state("RunContainerError", str(exc))
                run.backoff_until = time.monotonic() + max(2.0, self.restart_backoff[0])
                return
        run.started_mono = time.monotonic()
        run.started_at = timestamp()
        run.status.state = running_state(run.started_at)
        self._event(pod, "Started", f"Started container {container.name}")
        run.status.started = container.startup_probe is None
        run.status.ready = container.readiness_probe is None and container.startup_probe is None
        for kind in ("startup", "readiness", "liveness"):
            probe = getattr(container, f"{kind}_probe")
            if probe is not None:
                run.probes[kind] = ProbeTracker(probe, run.started_mono)

    # -- probes ----------------------------------------------------------------------

    def _probe_context(self, pod: _Pod, run: _Run) -> ProbeContext:
        mounts = self._mounts(pod, run)
        own = self._container_env(pod, run)
        ports = {p.name: p.container_port for p in run.container.ports or [] if p.name}

        def exec_argv(command: Sequence[str]) -> list[str]:
            argv = [rewrite_paths(expand(a, own), mounts) for a in command]
            return local_program(argv, self.command_map)

        env = self._process_env(run.container, own, mounts)
        return ProbeContext(pod.ip, ports, env, exec_argv, str(pod.dir))

    def _probe(self, pod: _Pod, run: _Run, now: float) -> None:
        startup = run.probes.get("startup")
        kinds = (
            ["startup"]
            if startup is not None and startup.result is not True
            else [k for k in ("readiness", "liveness") if k in run.probes]
        )
        for kind in kinds:
            tracker = run.probes[kind]
            future = run.pending.get(kind)
            if future is not None:
                if not future.done():
                    continue
                del run.pending[kind]
                ok, reason = future.result()
                self._on_probe(pod, run, kind, tracker.record(ok), reason)
            elif tracker.due(now) and not run.kill_reason:
                tracker.last = now
                ctx = self._probe_context(pod, run)
                run.pending[kind] = self._probe_pool.submit(probe_once, tracker.probe, ctx)

    def _on_probe(self, pod: _Pod, run: _Run, kind: str, verdict: bool | None, reason: str) -> None:
        if verdict is None:
            return
        if not verdict:
            self._event(pod, "Unhealthy", f"{kind.capitalize()} probe failed: {reason}", "Warning")
        if kind == "readiness":
            run.status.ready = verdict
            return
        if kind == "startup" and verdict:
            run.status.started = True
            run.status.ready = "readiness" not in run.probes
            return
        if verdict:
            return
        # A failed liveness or startup probe: the kubelet kills the container.
        log.warning(
            "pod runner: %s/%s %s probe failed (%s)", pod.key, run.container.name, kind, reason
        )
        grace = run.probes[kind].probe.termination_grace_period_seconds
        self._request_stop(pod, run, f"failed {kind} probe", grace)

    def _event(self, pod: _Pod, reason: str, message: str, kind: str = "Normal") -> None:
        """Record an Event on the pod, as the kubelet does (best effort)."""
        now = datetime.datetime.now(datetime.UTC)
        node = pod.pod.spec.node_name if pod.pod.spec else None
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod.name}."),
            involved_object=client.V1ObjectReference(
                api_version="v1", kind="Pod", name=pod.name, namespace=pod.namespace, uid=pod.uid
            ),
            reason=reason,
            message=message,
            type=kind,
            source=client.V1EventSource(component="kubelet", host=node),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._core.create_namespaced_event(pod.namespace, event)
        except ApiException as exc:
            log.info("pod runner: event %s for %s not recorded: %s", reason, pod.key, exc)

    # -- stopping ----------------------------------------------------------------------

    def _grace(self, pod: _Pod) -> float:
        meta, spec = pod.pod.metadata, pod.pod.spec
        if meta is not None and meta.deletion_grace_period_seconds is not None:
            return float(meta.deletion_grace_period_seconds)
        if spec is not None and spec.termination_grace_period_seconds is not None:
            return float(spec.termination_grace_period_seconds)
        return 30.0

    def _request_stop(self, pod: _Pod, run: _Run, reason: str, grace: float | None) -> None:
        if run.proc is None or run.kill_reason:
            return
        run.kill_reason = reason
        seconds = self._grace(pod) if grace is None else grace
        run.kill_deadline = time.monotonic() + seconds
        message = f"Stopping container {run.container.name}"
        if reason != "deletion":
            message += f" ({reason})"
        self._event(pod, "Killing", message)
        self._kill(run, signal.SIGTERM)

    @staticmethod
    def _kill(run: _Run, sig: signal.Signals) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)  # the container's whole process tree
            else:
                proc.send_signal(sig)  # SIGTERM goes to the container's main process

    def _terminate(self, pod: _Pod, meta: client.V1ObjectMeta) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the pod."""
        if not pod.terminating_since:
            pod.terminating_since = time.monotonic()
            for run in pod.runs():
                self._request_stop(pod, run, "deletion", None)
        for run in pod.runs():
            if run.proc is not None and time.monotonic() >= run.kill_deadline:
                self._kill(run, signal.SIGKILL)
            if run.proc is not None and run.proc.poll() is not None:
                run.proc = None
        if any(run.proc is not None for run in pod.runs()):
            return
        self._delete_now(pod.namespace, pod.name, pod.uid)
        self._forget(pod, kill=False)

    def _shutdown(self) -> None:
        pods = list(self._pods.values())
        for pod in pods:
            for run in pod.runs():
                self._request_stop(pod, run, "shutdown", None)
        longest = max([self._grace(p) for p in pods] + [0.0])
        deadline = time.monotonic() + min(longest, self.shutdown_grace)
        while time.monotonic() < deadline and any(
            r.proc is not None and r.proc.poll() is None for p in pods for r in p.runs()
        ):
            time.sleep(0.05)
        for pod in pods:
            deleting = pod.pod.metadata is not None and pod.pod.metadata.deletion_timestamp
            for run in pod.runs():
                self._kill(run, signal.SIGKILL)
                if run.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        run.proc.wait(timeout=5)
            with contextlib.suppress(ApiException):
                if deleting:
                    self._delete_now(pod.namespace, pod.name, pod.uid)
                else:
                    self._release(pod)
            self._forget(pod, kill=False)

    # -- status ------------------------------------------------------------------------

    def _release(self, pod: _Pod) -> None:
        """Hand a pod back when the runner stops: its containers are gone and KWOK may
        remove it once deleted (MANAGED_CONDITION False; the last status stays)."""
        conditions = [
            {**c, "status": "False"} if c.get("type") == MANAGED_CONDITION else c
            for c in pod.last_written.get("conditions", [])
        ]
        if not conditions:
            return
        body = {"status": {"conditions": conditions}}
        self._core.patch_namespaced_pod_status(
            pod.name, pod.namespace, body, _content_type=MERGE_PATCH
        )

    def _write_status(self, pod: _Pod) -> dict[str, Any]:
        initialized = all(r.done for r in pod.init) and pod.volumes is not None
        containers = [r.status for r in pod.main]
        if pod.waiting_message:
            for state in containers:
                state.state = waiting_state("ContainerCreating", pod.waiting_message)
        policy = self._restart_policy(pod)
        phase = pod_phase(
            containers,
            initialized=initialized,
            restart_policy=policy,
            failed_init=pod.init_failed,
        )
        previous = {
            c.type: {"status": c.status, "lastTransitionTime": timestamp(c.last_transition_time)}
            for c in (pod.pod.status.conditions if pod.pod.status else None) or []
            if c.last_transition_time is not None
        }
        now = timestamp()
        status: dict[str, Any] = {
            "phase": phase,
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "hostIP": pod.host_ip,
            "hostIPs": [{"ip": pod.host_ip}],
            "startTime": pod.start_time,
            "conditions": pod_conditions(
                containers,
                initialized=initialized,
                phase=phase,
                previous=previous,
                now=now,
                managed=MANAGED_CONDITION,
            ),
            "containerStatuses": [c.to_json() for c in containers],
        }
        if pod.init:
            status["initContainerStatuses"] = [r.status.to_json() for r in pod.init]
        comparable = {
            **status,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in status["conditions"]
            ],
        }
        if comparable == pod.last_status:
            return status
        try:
            self._core.patch_namespaced_pod_status(
                pod.name, pod.namespace, {"status": status}, _content_type=MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status == 404:
                return status
            raise
        pod.last_status = comparable
        pod.last_written = status
        return status
