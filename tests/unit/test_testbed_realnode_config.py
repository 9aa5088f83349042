"""The real node's address plan and configuration files, without starting anything."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from lipsync_testbed import coredns, hostclean
from lipsync_testbed.hostnet import (
    DNS_SERVICE_IP,
    KUBERNETES_SERVICE_IP,
    KWOK_POD_CIDR,
    SERVICE_CIDR,
    SLOTS,
    HostNetwork,
    HostNetworkError,
)
from lipsync_testbed.nodeconfig import (
    NodeLayout,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)

pytestmark = pytest.mark.unit

BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
NET = HostNetwork.for_state_dir(Path("/tmp/state"))
LAYOUT = NodeLayout(
    name="node-0", root=Path("/tmp/state/nodes/node-0"), socket_dir=Path("/run/t/node-0")
)


def _in_range(value: str) -> bool:
    return ipaddress.IPv4Network(value, strict=False).subnet_of(BENCHMARK_RANGE)


@pytest.mark.parametrize("slot", range(SLOTS))
def test_every_address_of_the_plan_is_in_the_benchmark_range(slot: int) -> None:
    net = HostNetwork(NET.tag, slot)
    nodes = [net.node(i) for i in range(15)]
    addresses = [
        NET.host_address,
        SERVICE_CIDR,
        KWOK_POD_CIDR,
        DNS_SERVICE_IP,
        KUBERNETES_SERVICE_IP,
    ]
    addresses += [n.address for n in nodes] + [n.pod_cidr for n in nodes]
    assert all(_in_range(a) for a in addresses), addresses
    pod_ranges = [ipaddress.ip_network(n.pod_cidr) for n in nodes] + [
        ipaddress.ip_network(KWOK_POD_CIDR),
        ipaddress.ip_network(SERVICE_CIDR),
    ]
    host = ipaddress.ip_network(f"{net.host_address}/{net.prefix_length}", strict=False)
    for i, a in enumerate([host, *pod_ranges]):
        for b in [host, *pod_ranges][i + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert all(
        ipaddress.IPv4Network(n.pod_cidr).subnet_of(ipaddress.IPv4Network(net.cluster_cidr))
        for n in nodes
    )
    with pytest.raises(HostNetworkError):
        net.node(15)


def test_slots_never_share_an_address() -> None:
    blocks = [ipaddress.IPv4Network(HostNetwork("x", s).cluster_cidr) for s in range(SLOTS)]
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert not any(b.overlaps(ipaddress.IPv4Network(KWOK_POD_CIDR)) for b in blocks)
    with pytest.raises(HostNetworkError):
        assert HostNetwork("x", SLOTS).host_address


def test_two_test_beds_never_share_a_cgroup_root() -> None:
    other = NodeLayout(name="node-0", root=LAYOUT.root, socket_dir=Path("/run/u/node-0"))
    assert other.cgroup_root != LAYOUT.cgroup_root


def test_interface_and_namespace_names_fit_linux_limits_and_differ_per_state_dir() -> None:
    other = HostNetwork.for_state_dir(Path("/tmp/other"))
    assert other.tag != NET.tag
    for name in (NET.bridge, NET.node(14).veth, NET.node(14).netns):
        assert len(name) <= 15, name


def test_containerd_runs_cri_on_runc_with_every_path_under_the_node() -> None:
    config = tomllib.loads(containerd_config(LAYOUT, "registry.k8s.io/pause:3.10.1"))
    assert config["version"] == 3
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.1"
    paths = [config["root"], config["state"], runtime["cni"]["conf_dir"]]
    assert all(p.startswith(str(LAYOUT.root)) for p in paths), paths
    assert config["grpc"]["address"] == "/run/t/node-0/containerd.sock"


def test_pods_get_routes_to_the_test_bed_range_only() -> None:
    conflist = json.loads(cni_config(LAYOUT, NET.node(2)))
    bridge = conflist["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.18.3.0/24"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "198.18.0.0/15"}]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(LAYOUT.root))


def test_kubelet_authenticates_clients_and_hands_pods_the_cluster_dns() -> None:
    config = yaml.safe_load(kubelet_config(LAYOUT, NET.node(0), Path("/pki/ca.crt")))
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"]["clientCAFile"] == "/pki/ca.crt"
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [DNS_SERVICE_IP]
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == "/lipsync-t-node-0"
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"


def test_kube_proxy_keeps_pod_sources_and_leaves_host_sysctls_alone() -> None:
    config = yaml.safe_load(kube_proxy_config(LAYOUT, "node-0", NET.cluster_cidr))
    assert config["mode"] == "iptables"
    # A masqueraded pod would reach a pod on another node with its node's address, which no
    # NetworkPolicy namespace rule admits.
    assert config["iptables"]["masqueradeAll"] is False
    assert config["clusterCIDR"] == NET.cluster_cidr
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["hostnameOverride"] == "node-0"


def test_coredns_serves_the_cluster_domain_as_kube_dns() -> None:
    objects = {o["kind"]: o for o in coredns.manifests("coredns:v1", {"real": "true"})}
    assert objects["Service"]["spec"]["clusterIP"] == DNS_SERVICE_IP
    assert {p["port"] for p in objects["Service"]["spec"]["ports"]} == {53}
    assert "kubernetes cluster.local" in objects["ConfigMap"]["data"]["Corefile"]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"real": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_a_host_record_keeps_its_network_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cleaning up after a test bed works on its own slot's addresses, never on slot 0's (which
    another test bed may be using)."""
    monkeypatch.setattr(hostclean, "RECORD_DIR", tmp_path)
    record = hostclean.HostRecord(tag="abc123", owner_pid=1, nodes=2, slot=3)
    record.save()
    loaded = hostclean.HostRecord.load(record.path)
    assert loaded.network == HostNetwork("abc123", 3)
    assert loaded.network.node(0).pod_cidr == "198.18.49.0/24"
    # A record written before slots were recorded reads as slot 0.
    old = tmp_path / "old.json"
    old.write_text('{"tag": "abc123", "owner_pid": 1, "node_roots": [], "cgroup_roots": []}')
    assert hostclean.HostRecord.load(old).network.slot == 0
