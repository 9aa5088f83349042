"""Which machines the test bed boots and retires for the nodes Karpenter launches."""

from __future__ import annotations

from kubernetes import client

from lipsync_testbed.gpucatalog import BOOTING_TAINT, DEFAULT_INSTANCE_TYPES
from lipsync_testbed.hostclean import socket_dir
from lipsync_testbed.karpenternodes import (
    Machines,
    machines_to_change,
    node_spec,
    without_booting_taint,
)


def test_a_new_node_gets_a_machine() -> None:
    assert machines_to_change({"kwok-a": False}, running=()) == Machines(boot=("kwok-a",))


def test_a_node_being_deleted_keeps_its_machine_until_it_is_gone() -> None:
    # Its kubelet must stay to drain it: Karpenter deletes the Node once its pods are gone.
    assert machines_to_change({"kwok-a": True}, running=("kwok-a",)) == Machines()
    assert machines_to_change({}, running=("kwok-a",)) == Machines(retire=("kwok-a",))


def test_a_node_being_deleted_before_it_booted_gets_no_machine() -> None:
    assert machines_to_change({"kwok-a": True}, running=()) == Machines()


def test_a_machine_that_failed_to_boot_is_not_booted_again() -> None:
    nodes = {"kwok-a": False, "kwok-b": False}
    assert machines_to_change(nodes, running=(), failed=("kwok-a",)) == Machines(boot=("kwok-b",))


def test_running_machines_of_present_nodes_are_left_alone() -> None:
    change = machines_to_change({"kwok-a": False, "kwok-c": False}, running=("kwok-a", "kwok-b"))
    assert change == Machines(boot=("kwok-c",), retire=("kwok-b",))


def test_the_node_boots_under_its_name_with_its_labels_and_its_instance_types_gpus() -> None:
    labels = {
        "karpenter.sh/nodepool": "gpu-nvidia-l4",
        "node.kubernetes.io/instance-type": "l4-24gb-x4",
    }
    node = client.V1Node(metadata=client.V1ObjectMeta(name="kwok-a", labels=labels))
    spec = node_spec(node, DEFAULT_INSTANCE_TYPES)
    assert spec.name == "kwok-a"
    assert spec.gpu is not None
    assert (spec.gpu.product, spec.gpu.count) == ("NVIDIA-L4", 4)
    assert spec.all_labels()["node.kubernetes.io/instance-type"] == "l4-24gb-x4"


def test_an_unknown_instance_type_boots_without_gpus() -> None:
    node = client.V1Node(metadata=client.V1ObjectMeta(name="kwok-a", labels={}))
    assert node_spec(node, DEFAULT_INSTANCE_TYPES).gpu is None


def test_a_booted_node_loses_only_the_booting_taint() -> None:
    taints = [
        client.V1Taint(key=BOOTING_TAINT["key"], effect="NoSchedule"),
        client.V1Taint(key=BOOTING_TAINT["key"], effect="NoExecute"),
        client.V1Taint(key="dedicated", value="gpu", effect="NoSchedule"),
    ]
    assert without_booting_taint(taints) == [
        {"key": BOOTING_TAINT["key"], "value": None, "effect": "NoExecute"},
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
    ]


def test_long_node_names_get_short_distinct_socket_directories() -> None:
    assert socket_dir("abc123", "node-0").name == "node-0"
    first = socket_dir("abc123", "kwok-gpu-nvidia-l4-abcde-fghij-1234567890")
    second = socket_dir("abc123", "kwok-gpu-nvidia-l4-abcde-fghij-1234567891")
    assert first != second
    # The kubelet's deepest socket under it must fit a unix socket path (104 bytes).
    assert len(str(first / "kubelet" / "plugins_registry" / "x" / "kubelet.sock")) < 104
