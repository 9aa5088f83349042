"""Test bed processes are stopped by pid and die with the process that started them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lipsync_testbed import wait_for
from lipsync_testbed.processes import ManagedProcess, is_running, spawn, stop, tail

pytestmark = pytest.mark.component

SLEEP = shutil.which("sleep") or "/bin/sleep"


def test_spawn_logs_and_stop_by_pid(tmp_path: Path) -> None:
    proc = spawn("sleeper", [SLEEP, "600"], tmp_path)
    assert is_running(proc.pid)
    stop(proc, timeout=5)
    assert not is_running(proc.pid)
    assert SLEEP in tail(proc.log_path)
    # Stopping again (or a pid that now runs something else) is a no-op.
    stop(proc)


def test_stop_ignores_reused_pid(tmp_path: Path) -> None:
    other = subprocess.Popen([SLEEP, "600"])
    try:
        impostor = ManagedProcess("etcd", other.pid, "/nonexistent/etcd", tmp_path / "x.log")
        stop(impostor)
        assert is_running(other.pid)
    finally:
        other.kill()
        other.wait()


def test_children_die_with_killed_parent(tmp_path: Path) -> None:
    script = (
        "import json, sys, time; from pathlib import Path; "
        "from lipsync_testbed.processes import spawn; "
        f"p = spawn('sleeper', [{SLEEP!r}, '600'], Path({str(tmp_path)!r}), die_with_parent=True); "
        "print(json.dumps(p.pid), flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = json.loads(parent.stdout.readline())
    assert is_running(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not is_running(child_pid), timeout=10, description="orphan killed")
