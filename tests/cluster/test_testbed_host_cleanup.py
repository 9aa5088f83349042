"""A test bed with a real node leaves the host as it found it: after `make cluster-down`, and
after a test run that was killed (the next start cleans up after it). Compared before and
after: processes of the node's binaries, mounts, network namespaces, links, the host's iptables
and nftables rules, cgroups, and the kubelet's container log links."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lipsync_testbed import hostclean, wait_for
from lipsync_testbed.hostclean import HostRecord
from lipsync_testbed.nodeconfig import CONTAINER_STORE
from lipsync_testbed.versions import Binaries

pytestmark = [pytest.mark.cluster, pytest.mark.alone]

TESTBED = [sys.executable, "-m", "lipsync_testbed"]
# Starts a test bed with one real node (its own images only) and waits to be killed.
DYING_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lipsync_testbed.cluster import LocalCluster
    from lipsync_testbed.nodebed import REAL_NODE
    cluster = LocalCluster(Path(sys.argv[1]), node_pool=[], real_nodes=[REAL_NODE],
                           die_with_parent=True)
    cluster.start()
    print(cluster.host_network.tag, flush=True)
    time.sleep(3600)
    """
)


def _lines(argv: list[str]) -> set[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return {line for line in result.stdout.splitlines() if line and not line.startswith("#")}


def host_state() -> dict[str, set[str]]:
    """What a test bed could leave behind, as sets of lines (names, rules, paths)."""
    bin_dir = str(Binaries.default().bin_dir)
    node_processes = set()
    for proc in Path("/proc").iterdir():
        try:
            exe = os.readlink(proc / "exe")
        except OSError:
            continue
        if exe.startswith(bin_dir) or exe.endswith(("/runc", "/pause", "/coredns")):
            node_processes.add(exe)
    mounts = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob("*/lipsync-*")}
    logs = {str(p) for d in ("/var/log/containers", "/var/log/pods") for p in Path(d).glob("*")}
    return {
        "processes": node_processes,
        "mounts": mounts,
        "netns": {line.split()[0] for line in _lines(["ip", "netns", "list"])},
        "links": {line.split(":")[1].strip() for line in _lines(["ip", "-o", "link", "show"])},
        "iptables": _lines(["iptables-save"]),
        "nftables": _lines(["nft", "list", "ruleset"]),
        "cgroups": cgroups,
        "container logs": logs,
    }


def _differences(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    """What is on the host now and was not before (what another test bed of the session
    removes meanwhile is no leftover)."""
    return {key: after[key] - before[key] for key in before if after[key] - before[key]}


def test_cluster_down_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    before = host_state()
    state = tmp_path / "cluster"
    up = subprocess.run(
        [*TESTBED, "up", "--real-node", "--dir", str(state)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert _differences(before, host_state()), "the test bed changed nothing on the host"
    finally:
        down = subprocess.run(
            [*TESTBED, "down", "--dir", str(state)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr[-3000:]
    assert _differences(before, host_state()) == {}
    # Configs and logs stay to read; the node's images and containers (1.5 GB) do not.
    assert list((state / "nodes").iterdir()), "the node's directory is gone"
    assert not list((state / "nodes").glob(f"*/{CONTAINER_STORE}"))


def test_the_next_start_cleans_up_after_a_killed_test_bed(tmp_path: Path) -> None:
    before = host_state()
    run = subprocess.Popen(
        [sys.executable, "-c", DYING_RUN, str(tmp_path / "cluster")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        tag = run.stdout.readline().strip()
        assert tag, "the test bed did not start"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    record = HostRecord.load(hostclean.RECORD_DIR / f"{tag}.json")
    # Containers, shims, mounts, cgroups and the node's namespace outlive a killed run...
    left = hostclean.remaining(record)
    assert any(item.startswith(("netns", "mount", "cgroup")) for item in left), left
    # ...until the next start, which cleans up after every test bed whose API server is gone
    # (it dies with the run, a moment after it).
    wait_for(lambda: not hostclean.owner_alive(record), timeout=30, description="API server gone")
    hostclean.sweep_stale()
    assert hostclean.remaining(record) == []
    assert not record.path.exists()
    assert _differences(before, host_state()) == {}
