"""Start and stop the local control plane: etcd, kube-apiserver, controller-manager,
scheduler and the KWOK controller, all on 127.0.0.1 with free ports."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kubernetes import client

from lipsync_testbed import coredns, hostclean, processes
from lipsync_testbed.audit import AUDIT_LOG, LIST_AUDIT_POLICY
from lipsync_testbed.autoscaling import AutoscalingEndpoints, AutoscalingOptions, start_autoscaling
from lipsync_testbed.heartbeats import NodeHeartbeats
from lipsync_testbed.hostclean import HostRecord
from lipsync_testbed.hostnet import (
    KWOK_POD_CIDR,
    SERVICE_CIDR,
    HostNetwork,
    NodeAddresses,
    create_bridge,
    delete_node_netns,
    free_slot,
    route_to_peer,
)
from lipsync_testbed.karpenternodes import KarpenterMachines
from lipsync_testbed.kubeconfig import write_kubeconfig
from lipsync_testbed.nodeconfig import NodeLayout
from lipsync_testbed.nodes import (
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_ANNOTATION_VALUE,
    NodeSpec,
    add_nodes,
    load_node_pool,
    mark_node_not_ready,
    remove_node,
    wait_node_ready,
)
from lipsync_testbed.pki import ClusterPKI, generate_pki
from lipsync_testbed.processes import ManagedProcess
from lipsync_testbed.realnode import (
    NODE_BINARIES,
    REAL_NODE_LABEL,
    RealNode,
    coredns_image,
    image_archives,
)
from lipsync_testbed.versions import Binaries, ClusterSetupError, cache_root, repo_root
from lipsync_testbed.waiting import WaitTimeoutError, wait_for

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


# Controllers a GPU operator exercises; node IPAM, cloud and storage controllers
# have nothing to do without real nodes or a cloud.
CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "resourcequota-controller",
    # Static PersistentVolumes bind to their claims (examples/testbed/volumes.yaml).
    "persistentvolume-binder-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
    "taint-eviction-controller",
)


def default_state_dir() -> Path:
    """Where `python -m lipsync_testbed up` keeps its state ($LIPSYNC_CLUSTER_DIR overrides)."""
    env = os.environ.get("LIPSYNC_CLUSTER_DIR")
    return Path(env) if env else cache_root() / "cluster"


def default_node_pool_file() -> Path:
    return repo_root() / "hack" / "cluster" / "nodepool.yaml"


@dataclass
class ClusterState:
    """What a running test bed needs to be found again and stopped: pids, paths, ports."""

    state_dir: Path
    kubeconfig: Path
    server: str
    processes: list[ManagedProcess] = field(default_factory=list)
    autoscaling: AutoscalingEndpoints | None = None

    def save(self) -> None:
        data: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "processes": [p.to_json() for p in self.processes],
        }
        if self.autoscaling is not None:
            data["autoscaling"] = self.autoscaling.to_json()
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        path = state_dir / STATE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(data["kubeconfig"]),
            server=str(data["server"]),
            processes=[ManagedProcess.from_json(p) for p in data["processes"]],
            autoscaling=(
                AutoscalingEndpoints.from_json(data["autoscaling"])
                if "autoscaling" in data
                else None
            ),
        )


class LocalCluster:
    """A real Kubernetes control plane with KWOK fake nodes, for tests and development.

    Use as a context manager, or call start() and stop(). Every process is
    recorded (pid) in <state_dir>/state.json and stopped by pid.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        binaries: Binaries | None = None,
        node_pool: Path | Sequence[NodeSpec] | None = None,
        startup_timeout: float = 120.0,
        die_with_parent: bool = False,
        autoscaling: AutoscalingOptions | None = None,
        heartbeats: NodeHeartbeats | None = None,
        audit_lists: bool = False,
        real_nodes: Sequence[NodeSpec] = (),
        images: Sequence[Path] = (),
    ) -> None:
        self.state_dir = state_dir
        self.binaries = binaries or Binaries.default()
        self._node_pool = node_pool
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        # Prometheus, KEDA and Karpenter (lipsync_testbed.autoscaling); off by default. The
        # nodes Karpenter launches boot as real nodes, so it needs `real_nodes`.
        self.autoscaling = autoscaling
        # Node lease duration and NotReady grace period (longer for large fleets on small machines).
        self.heartbeats = heartbeats or NodeHeartbeats()
        # An audit log of LIST requests (lipsync_testbed.audit), for benchmarks; off by default.
        self.audit_lists = audit_lists
        # Nodes run by a real kubelet + containerd (lipsync_testbed.realnode), with `images`
        # (OCI archives) imported into each; they put the API server on the test bed's network.
        self.real_node_specs = list(real_nodes)
        self.images = list(images)
        self.host_network = HostNetwork.for_state_dir(state_dir)
        self.real_nodes: list[RealNode] = []
        self._real_nodes_lock = threading.RLock()  # Karpenter's machines come and go in a thread
        self._karpenter_machines: KarpenterMachines | None = None
        self._host_record: HostRecord | None = None
        self.log_dir = state_dir / "logs"
        self.kubeconfig = state_dir / "kubeconfig"
        self.state = ClusterState(state_dir=state_dir, kubeconfig=self.kubeconfig, server="")
        self._api_client: client.ApiClient | None = None
        self._pki: ClusterPKI | None = None
        self.nodes: list[NodeSpec] = []

    @classmethod
    def attach(cls, state_dir: Path, *, binaries: Binaries | None = None) -> LocalCluster:
        """A handle on a test bed already started from `state_dir` (e.g. by the CLI)."""
        state = ClusterState.load(state_dir)
        if state is None:
            raise ClusterSetupError(f"no test bed state in {state_dir}")
        cluster = cls(state_dir, binaries=binaries)
        cluster.state = state
        cluster.ensure_running()
        return cluster

    # -- public API ---------------------------------------------------------

    @property
    def server(self) -> str:
        return self.state.server

    @property
    def processes(self) -> list[ManagedProcess]:
        return list(self.state.processes)

    @property
    def api_client(self) -> client.ApiClient:
        """A kubernetes ApiClient authenticated as cluster admin."""
        if self._api_client is None:
            self._api_client = self.new_api_client()
        return self._api_client

    def new_api_client(self) -> client.ApiClient:
        """A fresh ApiClient (for threads that should not share a connection pool)."""
        pki = self.state_dir / "pki"
        configuration = client.Configuration(
            host=self.server,
            ssl_ca_cert=str(pki / "ca.crt"),
            cert_file=str(pki / "admin.crt"),
            key_file=str(pki / "admin.key"),
        )
        return client.ApiClient(configuration)

    def start(self) -> LocalCluster:
        self.binaries.require(
            ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        )
        if self.autoscaling is not None and not self.real_node_specs:
            raise ClusterSetupError(
                "autoscaling needs real nodes: Karpenter's nodes boot as real nodes beside them"
            )
        if (existing := ClusterState.load(self.state_dir)) and any(
            processes.is_same_process(p) for p in existing.processes
        ):
            raise ClusterSetupError(
                f"a test bed is already running from {self.state_dir}; stop it first "
                "(python -m lipsync_testbed down)"
            )
        self.nodes = self._load_nodes()
        started = time.monotonic()
        self._prepare_dirs()
        try:
            if self.real_node_specs:
                self._claim_host_network()
            self._start_components()
            add_nodes(self.api_client, self.nodes, timeout=self.startup_timeout)
            if self.real_node_specs:
                self._start_real_nodes()
            if self.autoscaling is not None and self._pki is not None:
                self.state.autoscaling = start_autoscaling(self, self._pki, self.autoscaling)
                self.state.save()
                self._karpenter_machines = KarpenterMachines(
                    self.new_api_client(), self, self.autoscaling.instance_types
                ).start()
        except BaseException:
            log.error("test bed failed to start; logs:\n%s", self.log_tails())
            self.stop()
            raise
        log.info("test bed up in %.1fs: %s", time.monotonic() - started, self.kubeconfig)
        return self

    def stop(self) -> None:
        """Stop every process this test bed started, by pid, in reverse start order."""
        if self._karpenter_machines is not None:
            self._karpenter_machines.stop()
            self._karpenter_machines = None
        if self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]
            self._api_client = None
        errors: list[str] = []
        for proc in reversed(self.state.processes):
            try:
                processes.stop(proc)
            except (RuntimeError, OSError) as exc:
                errors.append(f"{proc.name}: {exc}")
        record = self._host_record or self._saved_host_record()
        if record is not None:
            errors += [f"left on the host: {item}" for item in hostclean.clean(record)]
            self._host_record = None
        if errors:
            raise ClusterSetupError("failed to stop: " + "; ".join(errors))

    @property
    def host_record(self) -> HostRecord:
        """What this test bed's real nodes put on the host (lipsync_testbed.hostclean)."""
        layouts = [self._node_layout(spec) for spec in self.real_node_specs]
        return HostRecord(
            tag=self.host_network.tag,
            owner_pid=os.getpid(),
            node_roots=[str(p) for layout in layouts for p in (layout.root, layout.socket_dir)],
            cgroup_roots=[layout.cgroup_root for layout in layouts],
            nodes=len(layouts),
            slot=self.host_network.slot,
        )

    def _saved_host_record(self) -> HostRecord | None:
        path = hostclean.RECORD_DIR / f"{self.host_network.tag}.json"
        return HostRecord.load(path) if path.is_file() else None

    def _node_layout(self, spec: NodeSpec) -> NodeLayout:
        return NodeLayout(
            name=spec.name,
            root=self.state_dir / "nodes" / spec.name,
            socket_dir=hostclean.socket_dir(self.host_network.tag, spec.name),
        )

    def _claim_host_network(self) -> None:
        """Clean up after dead test beds, record what this one creates, create the bridge."""
        self.binaries.require(NODE_BINARIES)
        with hostclean.host_claim():
            hostclean.sweep_stale()
            self.host_network = HostNetwork.for_state_dir(self.state_dir, free_slot())
            self._host_record = self.host_record
            self._host_record.save()
            create_bridge(self.host_network)

    def _start_real_nodes(self) -> None:
        assert self._host_record is not None
        # The host's leftovers belong to the test bed as long as its API server lives (the
        # CLI's `up` returns; a killed test run takes the API server with it).
        apiserver = next(p for p in self.state.processes if p.name == "kube-apiserver")
        self._host_record.owner_pid = apiserver.pid
        self._host_record.save()
        net = self.host_network
        addresses = [net.node(i) for i in range(len(self.real_node_specs))]
        for spec, node in zip(self.real_node_specs, addresses, strict=True):
            real = RealNode(
                spec, node, self._node_layout(spec), self.binaries, self._require_pki(), self.server
            )
            self.real_nodes.append(real)
            self._boot_real_node(real, addresses)
        for real in self.real_nodes:
            real.register(self.api_client, timeout=self.startup_timeout)
            real.start_firewall(self.spawn, SERVICE_CIDR)
        self.kubectl(
            "apply",
            "-f",
            "-",
            input_text=coredns.manifest_yaml(coredns_image(), {REAL_NODE_LABEL: "true"}),
        )
        wait_for(
            lambda: _deployment_available(self.api_client, coredns.NAMESPACE, coredns.NAME),
            timeout=self.startup_timeout,
            interval=0.5,
            description="CoreDNS available",
        )

    def _require_pki(self) -> ClusterPKI:
        if self._pki is None:
            raise ClusterSetupError("the test bed has not started")
        return self._pki

    def _boot_real_node(self, real: RealNode, peers: Sequence[NodeAddresses]) -> None:
        """A real node's namespace, containerd with the images, kubelet and kube-proxy."""
        real.prepare(self.host_network, peers)
        real.start_runtime(self.spawn)
        real.import_images([*image_archives(self.binaries), *self.images])
        real.start_node_agents(self.spawn)

    def add_real_node(self, spec: NodeSpec) -> RealNode:
        """Start one more real node while the test bed runs, as a node autoscaler adds one;
        returns when it is Ready (with its GPUs) and its firewall runs. A node that fails to
        start is taken away again, as `remove_real_node` does."""
        with self._real_nodes_lock:
            record = self._host_record
            if record is None:
                raise ClusterSetupError("add_real_node needs a test bed started with real nodes")
            if any(real.name == spec.name for real in self.real_nodes):
                raise ClusterSetupError(f"real node {spec.name} already runs")
            used = {real.addresses.index for real in self.real_nodes}
            node = self.host_network.node(next(i for i in range(len(used) + 1) if i not in used))
            layout = self._node_layout(spec)
            record.nodes = max(record.nodes, node.index + 1)
            record.node_roots += [str(layout.root), str(layout.socket_dir)]
            record.cgroup_roots.append(layout.cgroup_root)
            record.save()  # before anything exists, so a killed run still cleans it
            peers = [real.addresses for real in self.real_nodes]
            real = RealNode(spec, node, layout, self.binaries, self._require_pki(), self.server)
            self.real_nodes.append(real)
        try:
            self._boot_real_node(real, [*peers, node])
            for peer in peers:
                route_to_peer(peer, node)
            real.register(self.api_client, timeout=self.startup_timeout)
            real.start_firewall(self.spawn, SERVICE_CIDR)
        except BaseException:
            self.remove_real_node(spec.name, missing_ok=True)
            raise
        log.info("real node %s added", spec.name)
        return real

    def set_real_node_ready(self, name: str, ready: bool, *, timeout: float = 120.0) -> None:
        """NotReady: the node's kubelet hangs (SIGSTOP; its containers run on) and its Ready
        condition goes False as the node controller would set it; Ready: the kubelet goes on
        and reports the node Ready again."""
        [kubelet] = [p for p in self.state.processes if p.name == f"{name}-kubelet"]
        if ready:
            os.kill(kubelet.pid, signal.SIGCONT)
            wait_node_ready(self.api_client, name, timeout=timeout)
        else:
            os.kill(kubelet.pid, signal.SIGSTOP)
            mark_node_not_ready(self.api_client, name, timeout=timeout)

    def remove_real_node(
        self, name: str, *, missing_ok: bool = False, timeout: float = 120.0
    ) -> None:
        """Take a real node away as a node autoscaler (or a dead machine) does: its processes
        and containers stop at once, then its Node object is deleted; the pod garbage
        collector removes its pods."""
        with self._real_nodes_lock:
            real = next((r for r in self.real_nodes if r.name == name), None)
            if real is None:
                if missing_ok:
                    return
                raise ClusterSetupError(f"no real node {name} in this test bed")
            mine = [p for p in self.state.processes if p.name.startswith(f"{name}-")]
            for proc in reversed(mine):
                processes.stop(proc)
            self.state.processes = [p for p in self.state.processes if p not in mine]
            self.state.save()
            hostclean.clean_node_processes(
                [real.layout.cgroup_root], [str(real.layout.root), str(real.layout.socket_dir)]
            )
            self.real_nodes.remove(real)
            for peer in self.real_nodes:
                route_to_peer(peer.addresses, real.addresses, add=False)
            delete_node_netns(self.host_network, real.addresses)
        remove_node(self.api_client, name, timeout=timeout)
        log.info("real node %s removed", name)

    @property
    def autoscaling_endpoints(self) -> AutoscalingEndpoints:
        """Where Prometheus, KEDA and Karpenter answer (a test bed started with autoscaling)."""
        if self.state.autoscaling is None:
            raise ClusterSetupError("this test bed runs no autoscaling components")
        return self.state.autoscaling

    def running_processes(self) -> list[ManagedProcess]:
        return [p for p in self.state.processes if processes.is_same_process(p)]

    def ensure_running(self) -> None:
        """Raise ClusterSetupError (with the log tail) if a component has exited."""
        for proc in self.state.processes:
            if not processes.is_running(proc.pid):
                tail = processes.tail(proc.log_path)
                raise ClusterSetupError(f"{proc.name} (pid {proc.pid}) exited; log tail:\n{tail}")

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for failure reports."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"==> {path} <==\n{processes.tail(path, lines)}")
        return "\n".join(parts)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster."""
        argv = [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run_tool(argv, check=check, timeout=timeout, input_text=input_text)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster (its state kept under the state dir)."""
        argv = [str(self.binaries.helm), f"--kubeconfig={self.kubeconfig}", *args]
        helm_home = self.state_dir / "helm"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        return self._run_tool(argv, check=check, timeout=timeout, env=env)

    @staticmethod
    def _run_tool(
        argv: list[str],
        *,
        check: bool,
        timeout: float,
        env: dict[str, str] | None = None,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
            input=input_text,
        )
        if check and result.returncode != 0:
            raise ClusterSetupError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _load_nodes(self) -> list[NodeSpec]:
        pool = self._node_pool
        if pool is None:
            return load_node_pool(default_node_pool_file())
        if isinstance(pool, Path):
            return load_node_pool(pool)
        return list(pool)

    def _prepare_dirs(self) -> None:
        for sub in ("etcd", "pki", "logs", "config", "prometheus"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir()
        self.state = ClusterState(state_dir=self.state_dir, kubeconfig=self.kubeconfig, server="")

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        executable: str | None = None,
    ) -> ManagedProcess:
        """Start a process of this test bed (log in log_dir/<name>.log, stopped with it)."""
        proc = processes.spawn(
            name,
            argv,
            self.log_dir,
            env=env,
            die_with_parent=self.die_with_parent,
            executable=executable,
        )
        self.state.processes.append(proc)
        self.state.save()
        return proc

    def wait_http(self, proc: ManagedProcess, url: str, ctx: ssl.SSLContext | None) -> None:
        """Wait until `url` answers 200 while `proc` runs (its log tail on failure)."""

        def healthy() -> bool:
            if not processes.is_running(proc.pid):
                raise ClusterSetupError(
                    f"{proc.name} exited during startup; log tail:\n{processes.tail(proc.log_path)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        try:
            wait_for(
                healthy,
                timeout=self.startup_timeout,
                interval=0.1,
                description=f"{proc.name} {url}",
            )
        except WaitTimeoutError as exc:
            raise ClusterSetupError(f"{exc}; log tail:\n{processes.tail(proc.log_path)}") from exc

    def _start_components(self) -> None:
        api_ips = (self._api_host,) if self.real_node_specs else ()
        pki = self._pki = generate_pki(self.state_dir / "pki", api_ips)
        etcd_port, etcd_peer, api_port, kcm_port, sched_port, kwok_port = (
            processes.free_port() for _ in range(6)
        )
        self.state.server = f"https://{self._api_host}:{api_port}"
        server = self.state.server
        cfg = self.state_dir / "config"
        cfg.mkdir()
        kcm_kubeconfig = write_kubeconfig(
            cfg / "controller-manager.kubeconfig",
            server=server,
            ca=pki.ca,
            client=pki.controller_manager,
            user="system:kube-controller-manager",
        )
        sched_kubeconfig = write_kubeconfig(
            cfg / "scheduler.kubeconfig",
            server=server,
            ca=pki.ca,
            client=pki.scheduler,
            user="system:kube-scheduler",
        )
        kwok_kubeconfig = write_kubeconfig(
            cfg / "kwok.kubeconfig",
            server=server,
            ca=pki.ca,
            client=pki.kwok,
            user="kwok-controller",
        )
        stages = cfg / "kwok-stages.yaml"
        base_stages = (
            resources.files("lipsync_testbed").joinpath("kwok_stages.yaml").read_text("utf-8")
        )
        stages.write_text(base_stages, encoding="utf-8")

        # etcd: plain HTTP on loopback, throw-away data dir.
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd = self.spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=testbed",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self.wait_http(etcd, f"{etcd_url}/health", None)

        apiserver = self.spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                *self._apiserver_address_args(),
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.apiserver.cert_path}",
                f"--tls-private-key-file={pki.apiserver.key_path}",
                f"--client-ca-file={pki.ca.cert_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--requestheader-client-ca-file={pki.front_proxy_ca.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client.cert_path}",
                f"--proxy-client-key-file={pki.front_proxy_client.key_path}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self._audit_args(cfg),
            ],
        )
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
        ctx.load_cert_chain(str(pki.admin.cert_path), str(pki.admin.key_path))
        self.wait_http(apiserver, f"{server}/readyz", ctx)
        write_kubeconfig(
            self.kubeconfig, server=server, ca=pki.ca, client=pki.admin, user="kubernetes-admin"
        )

        kcm = self.spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert_path}",
                f"--cluster-signing-cert-file={pki.ca.cert_path}",
                f"--cluster-signing-key-file={pki.ca.key_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--concurrent-job-syncs=5",
                *self.heartbeats.controller_manager_args(),
                "--profiling=false",
                "--v=1",
            ],
        )
        scheduler = self.spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={kwok_kubeconfig}",
                f"--config={stages}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
                *self.heartbeats.kwok_args(),
                f"--cidr={KWOK_POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{kwok_port}",
            ],
        )
        # Both serve self-signed HTTPS; /healthz is always allowed.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self.wait_http(kcm, f"https://127.0.0.1:{kcm_port}/healthz", insecure)
        self.wait_http(scheduler, f"https://127.0.0.1:{sched_port}/healthz", insecure)
        self._wait_controllers_ready()

    @property
    def _api_host(self) -> str:
        # Real nodes and their pods reach the API server on the test bed's bridge.
        return self.host_network.host_address if self.real_node_specs else "127.0.0.1"

    def _apiserver_address_args(self) -> list[str]:
        if not self.real_node_specs:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        assert self._pki is not None
        return [
            f"--bind-address={self._api_host}",
            f"--advertise-address={self._api_host}",
            f"--kubelet-client-certificate={self._pki.kubelet_client.cert_path}",
            f"--kubelet-client-key={self._pki.kubelet_client.key_path}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log of LIST requests (a test bed started with audit_lists)."""
        return self.log_dir / AUDIT_LOG

    def _audit_args(self, cfg: Path) -> list[str]:
        if not self.audit_lists:
            return []
        policy = cfg / "audit-policy.yaml"
        policy.write_text(LIST_AUDIT_POLICY, encoding="utf-8")
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]

    def _wait_controllers_ready(self) -> None:
        core = client.CoreV1Api(self.api_client)

        def check() -> bool:
            self.ensure_running()
            # The service-account controllers are running once "default" has its account.
            accounts = core.list_namespaced_service_account("default").items
            return any(sa.metadata is not None and sa.metadata.name == "default" for sa in accounts)

        wait_for(
            check,
            timeout=self.startup_timeout,
            interval=0.2,
            description="kube-controller-manager to create the default service account",
        )


def _deployment_available(api: client.ApiClient, namespace: str, name: str) -> bool:
    status = client.AppsV1Api(api).read_namespaced_deployment(name, namespace).status
    return bool(status and (status.available_replicas or 0) >= 1)
