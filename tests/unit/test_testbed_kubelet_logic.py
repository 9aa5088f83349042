"""The test bed's local kubelet: the pure rules (selection, argv, expansion, paths, status)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from lipsync_testbed import mountns
from lipsync_testbed.localpods import (
    LOCAL_ANNOTATION,
    MANAGED_CONDITION,
    ImageEntrypoint,
    LocalPodRule,
    container_argv,
    image_repository,
    kwok_stages,
    local_program,
)
from lipsync_testbed.podaddresses import AddressPool, stale_aliases
from lipsync_testbed.podenv import expand, field_value, parent_mounts, rewrite_paths
from lipsync_testbed.podstatus import (
    ContainerState,
    pod_conditions,
    pod_phase,
    running_state,
    terminated_state,
    waiting_state,
)
from lipsync_testbed.podvolumes import HostLayout
from lipsync_testbed.probes import ProbeTracker

pytestmark = pytest.mark.unit


def _pod(image: str, annotations: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", annotations=annotations),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image=image)]),
    )


def test_rule_selects_by_image_prefix_or_annotation() -> None:
    rule = LocalPodRule(("ghcr.io/lipsync/",))
    assert rule.matches(_pod("ghcr.io/lipsync/runtime:1"))
    assert not rule.matches(_pod("registry.k8s.io/pause:3.10"))
    assert rule.matches(_pod("registry.k8s.io/pause:3.10", {LOCAL_ANNOTATION: "local"}))
    assert not LocalPodRule(()).matches(_pod("ghcr.io/lipsync/runtime:1"))


def test_kwok_pod_stages_skip_the_rule_and_node_stages_are_unchanged() -> None:
    base = (
        "kind: Stage\nspec:\n  resourceRef: {kind: Node}\n  selector: {}\n---\n"
        "kind: Stage\nspec:\n  resourceRef: {kind: Pod}\n  selector:\n    matchExpressions: []\n"
        "  next:\n    statusTemplate: |\n      phase: Running\n      podIP: x\n"
    )
    base += (
        "---\nkind: Stage\nspec:\n  resourceRef: {kind: Pod}\n  selector: {}\n"
        "  next: {delete: true}\n"
    )
    node, pod, delete = yaml.safe_load_all(kwok_stages(base, LocalPodRule(("a/", "b/"))))
    assert node["spec"]["selector"] == {}
    (skip,) = pod["spec"]["selector"]["matchExpressions"]
    assert skip["operator"] == "NotIn"
    assert skip["values"] == ["true"]
    assert 'startswith("a/") or startswith("b/")' in skip["key"]
    assert LOCAL_ANNOTATION in skip["key"]
    assert MANAGED_CONDITION not in skip["key"]
    assert pod["spec"]["next"]["statusTemplate"] == "phase: Running\npodIP: x\n"
    # Deletion is left to KWOK unless a running PodRunner manages the pod.
    (skip_managed,) = delete["spec"]["selector"]["matchExpressions"]
    assert skip_managed["key"].startswith(f"({skip['key']}) and ")
    assert MANAGED_CONDITION in skip_managed["key"]


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/lipsync/runtime:1.2", "ghcr.io/lipsync/runtime"),
        ("localhost:5000/x/y", "localhost:5000/x/y"),
        ("localhost:5000/x/y:t@sha256:ab", "localhost:5000/x/y"),
        ("python", "python"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_argv_follows_entrypoint_and_cmd_rules() -> None:
    entry = {"img": ImageEntrypoint(("lipsync",), ("serve", "--help"))}
    commands = {"lipsync": ["/venv/bin/lipsync"]}

    def argv(**fields: object) -> list[str]:
        pod_argv = container_argv(client.V1Container(name="c", **fields), entry)
        return local_program(pod_argv, commands)

    assert argv(image="img:1") == ["/venv/bin/lipsync", "serve", "--help"]
    assert argv(image="img:1", args=["operator", "run"]) == ["/venv/bin/lipsync", "operator", "run"]
    assert argv(image="img:1", args=[]) == ["/venv/bin/lipsync"]
    assert argv(image="other", command=["sh", "-c", "x"]) == ["sh", "-c", "x"]
    with pytest.raises(ValueError, match="no known entrypoint"):
        argv(image="other")


def test_the_local_program_is_not_mapped_as_an_in_pod_path() -> None:
    # The venv may live under a directory a pod mounts over (e.g. /tmp): the mapped
    # program must stay the host's.
    pod_argv = [rewrite_paths(a, [("/tmp", "/pod/tmp")]) for a in ["lipsync", "/tmp/x"]]
    assert local_program(pod_argv, {"lipsync": ["/tmp/venv/bin/lipsync"]}) == [
        "/tmp/venv/bin/lipsync",
        "/pod/tmp/x",
    ]


@pytest.mark.parametrize(
    ("value", "expanded"),
    [
        ("--host=$(POD_IP)", "--host=10.0.0.1"),
        ("$$(POD_IP)", "$(POD_IP)"),
        ("$(MISSING) $(POD_IP)", "$(MISSING) 10.0.0.1"),
        ("a$b $ $(", "a$b $ $("),
        ("$(A)$(A)", "xx"),
    ],
)
def test_expand_like_kubernetes(value: str, expanded: str) -> None:
    assert expand(value, {"POD_IP": "10.0.0.1", "A": "x"}) == expanded


def test_field_values() -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="n", namespace="ns", labels={"app": "a"}),
        spec=client.V1PodSpec(containers=[], node_name="node-0"),
        status=client.V1PodStatus(pod_ip="198.18.0.5", pod_ips=[client.V1PodIP(ip="198.18.0.5")]),
    )
    assert field_value(pod, "metadata.labels['app']") == "a"
    assert field_value(pod, "status.podIP") == field_value(pod, "status.podIPs") == "198.18.0.5"
    assert field_value(pod, "spec.nodeName") == "node-0"
    with pytest.raises(ValueError, match="unsupported fieldRef"):
        field_value(pod, "spec.bogus")


def test_rewrite_paths_only_at_path_boundaries() -> None:
    mounts = [("/models", "/h/m"), ("/models/a.onnx", "/h/a"), ("/var/run/x", "/h/x")]
    assert rewrite_paths("--model=/models/b.onnx", mounts) == "--model=/h/m/b.onnx"
    assert rewrite_paths("/models/a.onnx", mounts) == "/h/a"
    assert rewrite_paths("/modelsx /srv/models pvc://models/x", mounts) == (
        "/modelsx /srv/models pvc://models/x"
    )
    assert rewrite_paths("PATH=/models:/bin", mounts) == "PATH=/h/m:/bin"
    assert rewrite_paths('open("/models/c")\nx', mounts) == 'open("/h/m/c")\nx'


def test_parent_of_mounts_maps_where_every_mount_below_it_agrees() -> None:
    claims = [("/mnt/pvc/models", "/h/claims/models"), ("/mnt/pvc/avatars", "/h/claims/avatars")]
    assert parent_mounts(claims) == [("/mnt/pvc", "/h/claims")]
    assert rewrite_paths("LIPSYNC_PVC_ROOT=/mnt/pvc", claims) == "LIPSYNC_PVC_ROOT=/h/claims"
    assert rewrite_paths("/mnt/pvc/models/a.onnx", claims) == "/h/claims/models/a.onnx"
    # Host directories that do not end like the pod paths, or end below different roots.
    assert parent_mounts([("/mnt/pvc/models", "/h/m")]) == []
    split = [("/mnt/pvc/models", "/a/models"), ("/mnt/pvc/avatars", "/b/avatars")]
    assert parent_mounts(split) == []
    # A parent that is itself a mount keeps its own host directory.
    nested = [("/data", "/h/d"), ("/data/x", "/h/x")]
    assert parent_mounts(nested) == []
    assert parent_mounts([("/models", "/h/models")]) == []


def test_host_layout_maps_host_paths_by_longest_prefix(tmp_path: Path) -> None:
    layout = HostLayout(tmp_path / "node", {"/srv": tmp_path / "s", "/srv/a": tmp_path / "a"})
    assert layout.host_path("/srv/a/b") == tmp_path / "a" / "b"
    assert layout.host_path("/srv/ab") == tmp_path / "s" / "ab"
    assert layout.host_path("/srv") == tmp_path / "s"
    assert layout.host_path("/var/lib/x") == tmp_path / "node" / "var/lib/x"


def test_address_pool_hands_out_distinct_addresses() -> None:
    pool = AddressPool(ipaddress.IPv4Network("198.18.0.0/23"), seed=1)
    taken = []
    for _ in range(300):
        address = next(iter(pool.candidates()))
        pool.take(address)
        taken.append(address)
    assert len(set(taken)) == 300
    assert not any(a.endswith((".0", ".255")) for a in taken)
    pool.release(taken[0])
    assert taken[0] not in pool.in_use


def test_stale_aliases_are_those_of_dead_runners() -> None:
    shown = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
        "1: lo    inet 198.18.0.5/32 scope host lo:k100\\       valid_lft forever\n"
        "1: lo    inet 198.19.1.7/32 scope host lo:k200\\       valid_lft forever\n"
        "1: lo    inet 198.18.0.9/32 scope host lo\\       valid_lft forever\n"
        "1: lo    inet 10.1.2.3/32 scope host lo:k100\\       valid_lft forever\n"
    )
    assert stale_aliases(shown, alive=lambda pid: pid == 200) == ["198.18.0.5"]


def test_probe_tracker_thresholds_and_timing() -> None:
    probe = client.V1Probe(initial_delay_seconds=2, period_seconds=1, failure_threshold=2)
    tracker = ProbeTracker(probe, started=100.0)
    assert not tracker.due(101.0)
    assert tracker.due(102.0)
    assert tracker.record(True, 102.0) is True
    assert not tracker.due(102.5)
    assert tracker.record(False, 103.0) is None
    assert tracker.record(False, 104.0) is False
    assert tracker.record(False, 105.0) is None  # reported once


def test_phase_follows_restart_policy() -> None:
    done = ContainerState("c", "i", state=terminated_state(0, "t", "t"))
    crashed = ContainerState("c", "i", state=terminated_state(3, "t", "t"))
    running = ContainerState("c", "i", state=running_state("t"))
    backoff = ContainerState("c", "i", state=waiting_state("CrashLoopBackOff"), restart_count=1)
    creating = ContainerState("c", "i")

    def phase(c: ContainerState, policy: str = "Always", initialized: bool = True) -> str:
        return pod_phase([c], initialized=initialized, restart_policy=policy, failed_init=False)

    assert phase(creating) == "Pending"
    assert phase(running, initialized=False) == "Pending"
    assert phase(running) == "Running"
    assert phase(backoff) == "Running"
    assert phase(done, "Never") == "Succeeded"
    assert phase(crashed, "Never") == "Failed"
    assert phase(crashed, "OnFailure") == "Running"
    assert phase(done, "OnFailure") == "Succeeded"
    assert phase(done, "Always") == "Running"


def test_conditions_keep_transition_times() -> None:
    ready = ContainerState("c", "i", state=running_state("t"), ready=True)
    first = pod_conditions([ready], initialized=True, phase="Running", previous={}, now="T1")
    previous = {c["type"]: c for c in first}
    again = pod_conditions([ready], initialized=True, phase="Running", previous=previous, now="T2")
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in again] == [
        ("PodScheduled", "True", "T1"),
        ("Initialized", "True", "T1"),
        ("ContainersReady", "True", "T1"),
        ("Ready", "True", "T1"),
    ]
    ended = pod_conditions(
        [ready], initialized=True, phase="Succeeded", previous=previous, now="T3"
    )
    assert ended[3] == {
        "type": "Ready",
        "status": "False",
        "lastTransitionTime": "T3",
        "reason": "PodCompleted",
    }


def test_mount_namespace_wrapper_binds_only_run_paths() -> None:
    assert mountns.under_run("/var/run/secrets/kubernetes.io/serviceaccount")
    assert mountns.under_run("/run/x")
    assert not mountns.under_run("/models")
    assert not mountns.under_run("/runner")
    assert mountns.wrap(["a"], [], map_root=False) == ["a"]
    argv = mountns.wrap(["prog", "x y"], [("/h/t", "/var/run/s")], map_root=True)
    assert argv[-2:] == ["prog", "x y"]
    assert "--map-root-user" in argv
    assert "mount --bind /h/t" in argv[argv.index("-c") + 1]
