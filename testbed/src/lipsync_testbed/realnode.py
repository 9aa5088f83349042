"""Real nodes: kubelet + containerd (runc, CNI bridge) + kube-proxy + kube-router (NetworkPolicy
firewall) in a network namespace of their own, running the project's images as containers.

A real node registers itself like any kubelet; the test bed then gives it the GPU Feature
Discovery labels of its NodeSpec and fake `nvidia.com/gpu` capacity (a status patch the kubelet
keeps), so pods that request GPUs are scheduled there and run for real, without a GPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lipsync_testbed.hostclean import cgroup_dirs
from lipsync_testbed.hostnet import HostNetwork, NodeAddresses, create_node_netns, in_netns
from lipsync_testbed.kubeconfig import write_kubeconfig
from lipsync_testbed.nodeconfig import (
    NodeLayout,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    resolv_conf,
)
from lipsync_testbed.nodes import GPU_RESOURCE, NodeSpec, set_node_gpus
from lipsync_testbed.pki import ClusterPKI, issue_node_certificates
from lipsync_testbed.processes import ManagedProcess
from lipsync_testbed.versions import Binaries, ClusterSetupError, Versions
from lipsync_testbed.waiting import WaitTimeoutError, wait_for

log = logging.getLogger(__name__)

NODE_BINARIES = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "kube-router",
)
REAL_NODE_LABEL = "testbed.lipsync.dev/real-node"
# The hierarchies the kubelet needs its cgroup root in (cgroup v1; v2 has one tree).
_CGROUP_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "systemd",
)

Spawn = Callable[..., ManagedProcess]


def image_archives(binaries: Binaries) -> list[Path]:
    """The node's own images (pause, CoreDNS) from hack/cluster/build.sh."""
    directory = binaries.bin_dir.parent / "images"
    return [directory / "pause.oci.tar", directory / "coredns.oci.tar"]


def sandbox_image() -> str:
    return Versions.load().pause_image


def coredns_image() -> str:
    return Versions.load().coredns_image


@dataclass
class RealNode:
    """One real node of a test bed; `start()` brings it to Ready, the test bed stops its
    processes, and `hostclean.clean` removes what it left."""

    spec: NodeSpec
    addresses: NodeAddresses
    layout: NodeLayout
    binaries: Binaries
    pki: ClusterPKI
    server: str

    @property
    def name(self) -> str:
        return self.spec.name

    def _env(self) -> dict[str, str]:
        """The node's programs find the runtime shim, runc, iptables and ipset on PATH."""
        return {**os.environ, "PATH": f"{self.binaries.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}

    def _spawn(self, spawn: Spawn, binary: str, args: Sequence[str]) -> ManagedProcess:
        """`binary` of the test bed, with `args`, in the node's network namespace."""
        program = str(self.binaries.path(binary))
        return spawn(
            f"{self.name}-{binary}",
            in_netns(self.addresses.netns, [program, *args]),
            env=self._env(),
            executable=program,
        )

    def prepare(self, net: HostNetwork, peers: Sequence[NodeAddresses]) -> None:
        """Directories, certificates, configuration files, cgroup root, network namespace."""
        layout, node = self.layout, self.addresses
        for directory in (
            layout.root / "config",
            layout.cni_conf_dir,
            layout.kubelet_root,
            layout.socket_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        certs = issue_node_certificates(
            self.pki.ca.cert_path.parent, layout.pki_dir, self.name, node.address
        )
        # kube-router reads pods, namespaces and policies cluster-wide (the test bed's admin).
        identities = (
            (layout.kubelet_kubeconfig, certs.client, f"system:node:{self.name}"),
            (layout.kube_proxy_kubeconfig, self.pki.kube_proxy, "system:kube-proxy"),
            (layout.kube_router_kubeconfig, self.pki.autoscaling, "kube-router"),
        )
        for path, pair, user in identities:
            write_kubeconfig(path, server=self.server, ca=self.pki.ca, client=pair, user=user)
        layout.containerd_config.write_text(
            containerd_config(layout, sandbox_image()), encoding="utf-8"
        )
        (layout.cni_conf_dir / "10-lipsync.conflist").write_text(
            cni_config(layout, node), encoding="utf-8"
        )
        layout.kubelet_config.write_text(
            kubelet_config(layout, node, self.pki.ca.cert_path), encoding="utf-8"
        )
        layout.kube_proxy_config.write_text(
            kube_proxy_config(layout, self.name, net.cluster_cidr), encoding="utf-8"
        )
        layout.resolv_conf.write_text(resolv_conf(), encoding="utf-8")
        self._make_cgroup_root()
        create_node_netns(net, node, peers)

    def _make_cgroup_root(self) -> None:
        root = Path("/sys/fs/cgroup")
        unified = (root / "cgroup.controllers").exists()
        targets = (
            [root] if unified else [root / c for c in _CGROUP_CONTROLLERS if (root / c).is_dir()]
        )
        for hierarchy in targets:
            directory = hierarchy / self.layout.cgroup_root.lstrip("/")
            directory.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a v1 cpuset takes no tasks until it has CPUs
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (directory / knob).write_text((hierarchy / knob).read_text())
        if not cgroup_dirs(self.layout.cgroup_root):
            raise ClusterSetupError(f"could not create cgroup {self.layout.cgroup_root}")

    def start_runtime(self, spawn: Spawn) -> None:
        """containerd in the node's namespace, with the node's own images imported."""
        layout = self.layout
        proc = self._spawn(spawn, "containerd", ["--config", str(layout.containerd_config)])
        try:
            wait_for(
                layout.containerd_socket.exists,
                timeout=60,
                interval=0.1,
                description=f"{proc.name} socket",
            )
        except WaitTimeoutError as exc:
            raise ClusterSetupError(f"{exc}; see {proc.log_path}") from exc

    def _ctr(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """`ctr` against the node's containerd, in the namespace the kubelet's pods use."""
        address = str(self.layout.containerd_socket)
        return subprocess.run(
            [str(self.binaries.path("ctr")), "--address", address, "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def import_images(self, archives: Sequence[Path]) -> None:
        """`ctr images import` (no registry here)."""
        for archive in archives:
            if not archive.is_file():
                raise ClusterSetupError(
                    f"image archive {archive} missing; run `make cluster-build` / `make images`"
                )
            result = self._ctr("images", "import", str(archive), timeout=600)
            if result.returncode != 0:
                raise ClusterSetupError(
                    f"importing {archive} on {self.name}: {result.stderr.strip()}"
                )
            log.info("%s: imported %s", self.name, archive.name)

    def tag_image(self, source: str, target: str) -> None:
        """Another name for an image the node has (as if it had been pushed under both)."""
        result = self._ctr("images", "tag", "--force", source, target, timeout=60)
        if result.returncode != 0:
            raise ClusterSetupError(f"tagging {source} as {target} on {self.name}: {result.stderr}")

    def start_node_agents(self, spawn: Spawn) -> None:
        """kubelet and kube-proxy."""
        layout = self.layout
        self._spawn(
            spawn,
            "kubelet",
            [
                f"--config={layout.kubelet_config}",
                f"--kubeconfig={layout.kubelet_kubeconfig}",
                f"--root-dir={layout.kubelet_root}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.addresses.address}",
                f"--node-labels={REAL_NODE_LABEL}=true",
                "--v=1",
            ],
        )
        self._spawn(spawn, "kube-proxy", [f"--config={layout.kube_proxy_config}", "--v=1"])

    def start_firewall(self, spawn: Spawn, service_cidr: str) -> None:
        """kube-router's NetworkPolicy firewall (it needs the registered Node)."""
        self._spawn(
            spawn,
            "kube-router",
            [
                f"--kubeconfig={self.layout.kube_router_kubeconfig}",
                f"--hostname-override={self.name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--enable-ipv6=false",
                f"--service-cluster-ip-range={service_cidr}",
                "--metrics-port=0",
                "--health-port=20244",
                "--v=1",
            ],
        )

    def register(self, api: client.ApiClient, timeout: float) -> None:
        """Wait for the kubelet's Node, give it the spec's labels, pod range and fake GPUs,
        and wait until it is Ready with them. The Node may exist before the kubelet (a node
        autoscaler's): the kubelet has registered once it has reported its own status."""
        core = client.CoreV1Api(api)

        def registered() -> client.V1Node | None:
            try:
                node = core.read_node(self.name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            info = node.status.node_info if node.status else None
            return node if info is not None and info.kubelet_version else None

        wait_for(
            registered, timeout=timeout, interval=0.5, description=f"node {self.name} to register"
        )
        labels = {**self.spec.all_labels(), REAL_NODE_LABEL: "true"}
        core.patch_node(
            self.name,
            {
                "metadata": {"labels": labels},
                "spec": {"podCIDR": self.addresses.pod_cidr, "podCIDRs": [self.addresses.pod_cidr]},
            },
        )
        if self.spec.gpu is not None:
            set_node_gpus(api, self.name, self.spec.gpu)  # the kubelet keeps the capacity
        gpus = str(self.spec.gpu.allocatable) if self.spec.gpu is not None else None

        def ready() -> bool:
            node = core.read_node(self.name)
            conditions = (node.status.conditions if node.status else None) or []
            is_ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            allocatable = (node.status.allocatable if node.status else None) or {}
            return is_ready and (gpus is None or allocatable.get(GPU_RESOURCE) == gpus)

        wait_for(ready, timeout=timeout, interval=0.5, description=f"node {self.name} Ready")
