"""How the cluster tier splits across pytest workers (lipsync_testbed.workers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lipsync_testbed.workers import AUTOSCALING_SCOPE, worker_scope

ROOT = Path(__file__).resolve().parents[2]

# Collects the cluster tier as hack/test-cluster.sh runs it; prints each test's node id and
# whether it uses the autoscaling test bed.
COLLECT = """
import json, sys, pytest

class Found:
    def pytest_collection_finish(self, session):
        self.items = [
            [item.nodeid, "autoscaling_cluster" in getattr(item, "fixturenames", ())]
            for item in session.items
        ]

found = Found()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider",
                    "-m", "cluster and not alone", "tests/cluster"], plugins=[found])
print("FOUND " + json.dumps(found.items))
sys.exit(code)
"""


@pytest.mark.unit
def test_modules_named_autoscaling_share_one_unit() -> None:
    assert worker_scope("tests/cluster/test_autoscaling_bed.py::test_a") == AUTOSCALING_SCOPE
    assert worker_scope("tests/cluster/test_operator_autoscaling.py::t[x]") == AUTOSCALING_SCOPE


@pytest.mark.unit
def test_any_other_test_runs_with_its_module() -> None:
    nodeid = "tests/cluster/test_operator_acceptance.py::test_a[autoscaling]"
    assert worker_scope(nodeid) == "tests/cluster/test_operator_acceptance.py"


@pytest.mark.component
def test_the_autoscaling_unit_is_every_test_on_that_test_bed_and_comes_first() -> None:
    run = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("FOUND "))
    found: list[tuple[str, bool]] = json.loads(line.removeprefix("FOUND "))
    # The name rule the controller uses agrees with the fixtures the tests use.
    on_autoscaling_bed = [nodeid for nodeid, uses_bed in found if uses_bed]
    in_unit = [nodeid for nodeid, _ in found if worker_scope(nodeid) == AUTOSCALING_SCOPE]
    assert on_autoscaling_bed
    assert in_unit == on_autoscaling_bed
    assert [nodeid for nodeid, _ in found[: len(in_unit)]] == in_unit
    assert not [nodeid for nodeid, _ in found if "test_testbed_host_cleanup" in nodeid]
