"""The test bed's own network: a host bridge and one network namespace per real node, all in
the benchmark range 198.18.0.0/15 (RFC 2544), so no test traffic can be taken for traffic to
an outside network. Each test bed with real nodes takes a free slot s (0-7), a /20 of its own:

    198.18.16s.1/24      the host side (bridge): the API server listens here
    198.18.16s.(11+i)    node i (eth0 in its namespace, a veth to the bridge)
    198.18.(16s+1+i).0/24  pods of node i (the CNI bridge in the node's namespace)
    198.18.128.0/17      pods of KWOK nodes (never routed)
    198.19.0.0/16        Services (198.19.0.1 the API server, 198.19.0.10 cluster DNS); they
                         exist only as kube-proxy rules inside the nodes' namespaces

Nothing here routes outside the range: nodes get no default route, and every interface, route
and rule lives on the bridge (the host's routes to each node's pods, so the API server can
answer them) or inside the namespaces, so deleting them leaves the host as it was. Pods keep
their own source addresses everywhere (no masquerading), as NetworkPolicy needs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SERVICE_CIDR = "198.19.0.0/16"
KUBERNETES_SERVICE_IP = "198.19.0.1"
DNS_SERVICE_IP = "198.19.0.10"
KWOK_POD_CIDR = "198.18.128.0/17"
SLOTS = 8
_MAX_NODES = 15
NETNS_DIR = Path("/run/netns")


class HostNetworkError(RuntimeError):
    """The host network cannot be set up (not root, a name or address already in use)."""


@dataclass(frozen=True)
class NodeAddresses:
    """Where real node `index` lives: its namespace, veth, address and pod range."""

    index: int
    netns: str
    veth: str
    address: str
    pod_cidr: str
    cni_bridge: str = "cni0"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


@dataclass(frozen=True)
class HostNetwork:
    """The address plan of one test bed: `tag` names its interfaces and namespaces, `slot`
    picks its /20 of the benchmark range."""

    tag: str
    slot: int = 0

    @classmethod
    def for_state_dir(cls, state_dir: Path, slot: int = 0) -> HostNetwork:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
        return cls(tag=digest[:6], slot=slot)

    @property
    def block(self) -> ipaddress.IPv4Network:
        if not 0 <= self.slot < SLOTS:
            raise HostNetworkError(f"slot {self.slot} outside 0..{SLOTS - 1}")
        return ipaddress.IPv4Network(f"198.18.{16 * self.slot}.0/20")

    @property
    def bridge(self) -> str:
        return f"lsb{self.tag}"

    @property
    def host_address(self) -> str:
        return str(self.block.network_address + 1)

    @property
    def prefix_length(self) -> int:
        return 24

    @property
    def cluster_cidr(self) -> str:
        """Every node and pod address of this test bed (kube-proxy's clusterCIDR)."""
        return str(self.block)

    def node(self, index: int) -> NodeAddresses:
        if not 0 <= index < _MAX_NODES:
            raise HostNetworkError(f"real node index {index} outside 0..{_MAX_NODES - 1}")
        third = 16 * self.slot
        return NodeAddresses(
            index=index,
            netns=f"lsn{self.tag}-{index}",
            veth=f"lsv{self.tag}-{index}",
            address=str(self.block.network_address + 11 + index),
            pod_cidr=f"198.18.{third + 1 + index}.0/24",
        )


def address_in_use(address: str) -> str:
    """The interface holding `address` on this host ('' when none does)."""
    found = _run(["ip", "-o", "addr", "show", "to", address]).stdout.split()
    return found[1] if len(found) > 1 else ""


def free_slot() -> int:
    """The first slot whose host address no other test bed holds."""
    for slot in range(SLOTS):
        if not address_in_use(HostNetwork("", slot).host_address):
            return slot
    raise HostNetworkError(f"all {SLOTS} test bed network slots are in use on this host")


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HostNetworkError(
            f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run in the node's network namespace (same mount namespace as the test bed, so
    the kubelet and containerd see each other's mounts)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def create_bridge(net: HostNetwork) -> None:
    """The host side: a bridge holding the slot's first address (fails if it is taken)."""
    taken = address_in_use(net.host_address)
    if taken:
        raise HostNetworkError(f"{net.host_address} is already in use on {taken}")
    _run(["ip", "link", "add", net.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{net.host_address}/{net.prefix_length}", "dev", net.bridge])
    _run(["ip", "link", "set", net.bridge, "up"])


def create_node_netns(
    net: HostNetwork, node: NodeAddresses, peers: Sequence[NodeAddresses]
) -> None:
    """A node's namespace: eth0 on the bridge, routes to the other nodes' pods and to Services
    (kube-proxy rewrites those), forwarding on, bridged pod traffic through iptables."""
    _run(["ip", "netns", "add", node.netns])
    _run(
        [
            "ip",
            "link",
            "add",
            node.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.netns,
        ]
    )
    _run(["ip", "link", "set", node.veth, "master", net.bridge, "up"])
    # The host reaches the node's pods (the API server answers them) through the node.
    _run(["ip", "route", "replace", node.pod_cidr, "via", node.address, "dev", net.bridge])
    commands = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{node.address}/{net.prefix_length}", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "route", "add", SERVICE_CIDR, "dev", "eth0"],
        *(
            ["ip", "route", "add", peer.pod_cidr, "via", peer.address]
            for peer in peers
            if peer.index != node.index
        ),
        ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
    ]
    for argv in commands:
        _run(in_netns(node.netns, argv))


def route_to_peer(node: NodeAddresses, peer: NodeAddresses, *, add: bool = True) -> None:
    """Add (or delete) `node`'s route to the pods of `peer`, a node that joined (or left)."""
    verb = "replace" if add else "del"
    _run(in_netns(node.netns, ["ip", "route", verb, peer.pod_cidr, "via", peer.address]), check=add)


def delete_node_netns(net: HostNetwork, node: NodeAddresses) -> None:
    """Remove the namespace (its interfaces, routes and iptables rules go with it) and the
    host's route to its pods (on this test bed's bridge only)."""
    if link_exists(net.bridge):
        _run(
            ["ip", "route", "del", node.pod_cidr, "via", node.address, "dev", net.bridge],
            check=False,
        )
    if link_exists(node.veth):
        _run(["ip", "link", "del", node.veth], check=False)
    if node.netns_path.exists():
        _run(["ip", "netns", "del", node.netns], check=False)


def delete_bridge(net: HostNetwork) -> None:
    if link_exists(net.bridge):
        _run(["ip", "link", "del", net.bridge], check=False)


def leftovers(net: HostNetwork, nodes: int = _MAX_NODES) -> list[str]:
    """Interfaces and namespaces of this plan still on the host (empty after a clean stop)."""
    found = [f"link {net.bridge}"] if link_exists(net.bridge) else []
    for index in range(nodes):
        node = net.node(index)
        if node.netns_path.exists():
            found.append(f"netns {node.netns}")
        if link_exists(node.veth):
            found.append(f"link {node.veth}")
    return found
