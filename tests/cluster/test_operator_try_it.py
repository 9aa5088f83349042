"""docs/operator.md's "Try it locally" block, run as a new user would paste it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lipsync_testbed.processes import free_port
from lipsync_testbed.versions import repo_root

pytestmark = pytest.mark.cluster

DOC = repo_root() / "docs" / "operator.md"
DOC_PORT = "18001"
DATA_DIR = Path("/var/lib/lipsync")


def try_it_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Try it locally", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "docs/operator.md: the Try it locally section has no sh block"
    return match.group(1)


def user_environment() -> dict[str, str]:
    """This environment as a user's shell has it: no activated virtual environment (the test
    runs under `uv run`), no KUBECONFIG."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "KUBECONFIG")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def test_the_try_it_locally_block_runs_as_written(tmp_path: Path) -> None:
    block = try_it_block()
    assert "make cluster-up" in block
    assert "kubectl apply -f examples/lipsyncmodel.yaml" in block
    assert f"kubectl port-forward svc/anna {DOC_PORT}:8001" in block
    assert "lipsync bench run" in block
    # What a user types on any cluster: no test-bed proxy, no listen address of the test bed's.
    assert "lipsync_testbed proxy" not in block
    assert "listenAddress" not in block
    # Its own test bed (a state directory of its own) and a port that is free here.
    script = block.replace(DOC_PORT, str(free_port()))
    env = user_environment()
    env["LIPSYNC_CLUSTER_DIR"] = str(tmp_path / "cluster")
    # The node directories the block writes (examples/testbed/volumes.yaml), removed after
    # unless they were there before.
    data_existed = DATA_DIR.exists()
    try:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=repo_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    finally:
        subprocess.run(
            ["make", "cluster-down"], cwd=repo_root(), env=env, capture_output=True, check=False
        )
        if not data_existed:
            shutil.rmtree(DATA_DIR, ignore_errors=True)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert re.search(r"anna\s+Ready", output), output[-4000:]
    streamed = re.search(r"2 streams: +([0-9.]+) frames/s.*?(\d+)/(\d+) frames, errors 0", output)
    assert streamed, output[-4000:]
    received, sent = int(streamed.group(2)), int(streamed.group(3))
    assert received == sent > 0
