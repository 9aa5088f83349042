"""How the cluster tier splits across pytest workers (lipsync_testbed.pytest_plugin)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lipsync_testbed.pytest_plugin import AUTOSCALING_GROUP, worker_group

ROOT = Path(__file__).resolve().parents[2]

# Collects the cluster tier as `hack/test-cluster.sh` does and prints each test's xdist groups.
COLLECT = """
import json, sys, pytest

class Groups:
    def pytest_collection_finish(self, session):
        self.found = [
            [item.nodeid, [m.args[0] for m in item.iter_markers("xdist_group")]]
            for item in session.items
        ]

groups = Groups()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "cluster and not alone",
                    "tests/cluster"], plugins=[groups])
print("GROUPS " + json.dumps(groups.found))
sys.exit(code)
"""


@pytest.mark.unit
def test_a_test_on_the_autoscaling_test_bed_joins_the_autoscaling_group() -> None:
    fixtures = ("autoscaling_namespace", "autoscaling_cluster", "request")
    assert worker_group("tests/cluster/test_a.py", fixtures) == AUTOSCALING_GROUP


@pytest.mark.unit
def test_any_other_test_runs_with_its_module() -> None:
    fixtures = ("bed", "node_cluster", "kube_api")
    assert worker_group("tests/cluster/test_a.py", fixtures) == "tests/cluster/test_a.py"


@pytest.mark.component
def test_the_cluster_tier_collects_one_group_per_module_and_autoscaling_first() -> None:
    run = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("GROUPS "))
    found: list[tuple[str, list[str]]] = json.loads(line.removeprefix("GROUPS "))
    assert all(len(groups) == 1 for _, groups in found), found
    order = [groups[0] for _, groups in found]
    modules = {nodeid.split("::")[0] for nodeid, _ in found}
    autoscaling = {
        "tests/cluster/test_autoscaling_bed.py",
        "tests/cluster/test_operator_autoscaling.py",
    }
    assert {n.split("::")[0] for n, g in found if g == [AUTOSCALING_GROUP]} == autoscaling
    runs = [group for group, _ in itertools.groupby(order)]
    # The autoscaling group first; every other module its own group, each test of a group in
    # one run; the host clean-up tests (`alone`) not among them.
    assert runs[0] == AUTOSCALING_GROUP
    assert sorted(runs[1:]) == sorted(modules - autoscaling)
    assert "tests/cluster/test_testbed_host_cleanup.py" not in modules
