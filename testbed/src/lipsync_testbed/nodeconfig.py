"""Configuration files of a real node (containerd, CNI, kubelet, kube-proxy): pure functions
from the node's directories and addresses to file contents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tomli_w
import yaml

from lipsync_testbed.hostnet import DNS_SERVICE_IP, NodeAddresses

# Under a node's directory: containerd's image and container store (removed with the node).
CONTAINER_STORE = "containerd"

CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class NodeLayout:
    """Where one real node keeps its state (under `root` and, for its sockets, `socket_dir`)."""

    name: str
    root: Path
    # Unix sockets (a path of at most 104 bytes, which a test's state directory may exceed).
    socket_dir: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / CONTAINER_STORE / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / CONTAINER_STORE / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.socket_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "config" / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "config" / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni-ipam"

    @property
    def kubelet_root(self) -> Path:
        # The kubelet makes sockets below its root directory too.
        return self.socket_dir / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "config" / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "config" / "kubelet.kubeconfig"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.root / "config" / "kube-proxy.kubeconfig"

    @property
    def kube_router_kubeconfig(self) -> Path:
        return self.root / "config" / "kube-router.kubeconfig"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "config" / "kube-proxy.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "config" / "resolv.conf"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroup root (in every hierarchy), one per test bed and node: named
        after the socket directory's test bed tag."""
        return f"/lipsync-{self.socket_dir.parent.name}-{self.name}"


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 2.x (config version 3): CRI with runc on cgroupfs, CNI from Debian's plugins,
    every path under the node's directory, no OOM-score lowering (the host forbids it)."""
    config = {
        "version": 3,
        "root": str(layout.containerd_root),
        "state": str(layout.containerd_state),
        # Not used here, and each would otherwise claim a fixed host path.
        "disabled_plugins": [
            "io.containerd.nri.v1.nri",
            "io.containerd.internal.v1.opt",
            "io.containerd.grpc.v1.tasks-service-tracing",
        ],
        "grpc": {"address": str(layout.containerd_socket)},
        "ttrpc": {"address": ""},
        "plugins": {
            "io.containerd.cri.v1.runtime": {
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,
                "enable_unprivileged_ports": True,
                "enable_unprivileged_icmp": True,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"BinaryName": str(RUNC), "SystemdCgroup": False},
                        }
                    },
                },
                "cni": {"bin_dirs": [str(CNI_BIN_DIR)], "conf_dir": str(layout.cni_conf_dir)},
            },
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                "pinned_images": {"sandbox": sandbox_image},
            },
        },
    }
    return tomli_w.dumps(config)


def cni_config(layout: NodeLayout, node: NodeAddresses) -> str:
    """A bridge in the node's namespace, addresses from the node's pod range, and routes to the
    test bed's range only (pods get no default route)."""
    conflist = {
        "cniVersion": "1.0.0",
        "name": "lipsync-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.cni_bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr}]],
                    "routes": [{"dst": "198.18.0.0/15"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conflist, indent=2) + "\n"


def kubelet_config(layout: NodeLayout, node: NodeAddresses, client_ca: Path) -> str:
    """KubeletConfiguration: x509 + webhook auth, cgroupfs under the node's own cgroup root
    (cgroup v1 allowed), cluster DNS, and eviction thresholds a shared disk will not trip."""
    serving = layout.pki_dir / "kubelet-serving"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.address,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": f"{serving}.crt",
        "tlsPrivateKeyFile": f"{serving}.key",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [DNS_SERVICE_IP],
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs_dir),
        "podCIDR": node.pod_cidr,
        "maxPods": 60,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "protectKernelDefaults": False,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(layout: NodeLayout, node_name: str, cluster_cidr: str) -> str:
    """KubeProxyConfiguration: iptables mode in the node's namespace; Service traffic keeps the
    pod's source address (as NetworkPolicy needs: only traffic from outside `cluster_cidr` and a
    pod reaching itself through its Service are masqueraded) and no conntrack sysctl changes
    (they are host-wide). A failed sync is retried after `syncPeriod`: 5 s, not the default
    30 s, so a first sync that races the kubelet's own iptables set-up at boot does not leave the
    node's pods without Service routes (the API server's included) for half a minute."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kube_proxy_kubeconfig)},
        "hostnameOverride": node_name,
        "mode": "iptables",
        "clusterCIDR": cluster_cidr,
        "iptables": {"masqueradeAll": False, "syncPeriod": "5s"},
        "conntrack": {"maxPerCore": 0, "min": 0},
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
    }
    return yaml.safe_dump(config, sort_keys=False)


def resolv_conf() -> str:
    """The node's own resolver file: nothing outside the test bed to ask."""
    return "# lipsync test bed node: no upstream resolvers\noptions ndots:1\n"
