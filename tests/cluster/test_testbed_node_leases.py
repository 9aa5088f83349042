"""A test bed started with long node leases, a matching grace period and an audit log of lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from lipsync_testbed import Binaries, LocalCluster, NodeSpec, wait_for
from lipsync_testbed.audit import count_lists
from lipsync_testbed.heartbeats import NodeHeartbeats

pytestmark = pytest.mark.cluster


def test_long_leases_grace_period_and_list_audit(tmp_path: Path) -> None:
    binaries = Binaries.default()
    missing = binaries.missing(
        ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
    )
    if missing:
        pytest.fail(f"test bed binaries missing: {', '.join(missing)}; run `make cluster-build`")
    cluster = LocalCluster(
        tmp_path / "cluster", binaries=binaries, node_pool=[NodeSpec(name="n0")],
        die_with_parent=True, heartbeats=NodeHeartbeats(240, 300), audit_lists=True,
    )  # fmt: skip
    with cluster:
        core = client.CoreV1Api(cluster.api_client)
        leases = client.CoordinationV1Api(cluster.api_client)

        def lease_seconds() -> int | None:
            lease = leases.read_namespaced_lease("n0", "kube-node-lease")
            return lease.spec.lease_duration_seconds if lease.spec else None

        assert wait_for(lease_seconds, timeout=60, description="n0's lease") == 240
        status = core.read_node("n0").status
        conditions = (status.conditions if status else None) or []
        assert [c.status for c in conditions if c.type == "Ready"] == ["True"]
        flags = (cluster.log_dir / "kube-controller-manager.log").read_text()
        assert 'FLAG: --node-monitor-grace-period="5m0s"' in flags

        def listed() -> dict[tuple[str, str], int]:
            with cluster.audit_log.open(encoding="utf-8") as lines:
                counts = count_lists(lines, 0.0, float("inf"))
            return {k: v for k, v in counts.items() if k == ("OpenAPI-Generator", "leases")}

        # This test's own LIST of leases, attributed to the Python client.
        assert leases.list_namespaced_lease("kube-node-lease").items
        assert wait_for(listed, timeout=30, description="the lease list in the audit log")
