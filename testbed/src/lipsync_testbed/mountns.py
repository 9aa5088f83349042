"""Bind mounts at in-pod paths, in a private mount namespace of the container's process.

Only mount paths under /run (or /var/run) are bound: a fresh tmpfs covers /run in
the namespace (a container has its own /run anyway), so the mount points can be
created without touching the host. This is how the projected service-account
token appears at /var/run/secrets/kubernetes.io/serviceaccount, where in-cluster
clients look for it. Other mount paths are mapped by rewriting paths instead
(see podenv.rewrite_paths).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

RUN_DIR = "/run"


def run_dir() -> str:
    return os.path.realpath(RUN_DIR)


def under_run(mount_path: str) -> bool:
    """True for mount paths this module binds (those under /run, seen through /var/run)."""
    real = os.path.normpath(mount_path)
    if real.startswith("/var/run/") or real == "/var/run":
        real = RUN_DIR + real[len("/var/run") :]
    return real.startswith(RUN_DIR + "/")


def _in_run(mount_path: str) -> str:
    real = os.path.normpath(mount_path)
    if real.startswith("/var/run"):
        real = RUN_DIR + real[len("/var/run") :]
    return run_dir() + real[len(RUN_DIR) :]


def wrap(argv: Sequence[str], binds: Sequence[tuple[str, str]], *, map_root: bool) -> list[str]:
    """argv that enters a new mount namespace, binds `(host dir, mount path)` pairs there
    and execs `argv` (same pid, so signals reach the program)."""
    if not binds:
        return list(argv)
    steps = [f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(run_dir())}"]
    for host, mount_path in binds:
        target = shlex.quote(_in_run(mount_path))
        steps.append(f"mkdir -p {target}")
        steps.append(f"mount --bind {shlex.quote(host)} {target}")
    script = " && ".join(steps) + ' && exec "$@"'
    unshare = shutil.which("unshare") or "unshare"
    prefix = [unshare, "--mount", "--propagation", "private"]
    if map_root:
        prefix.append("--map-root-user")
    return [*prefix, "--", "/bin/sh", "-c", script, "sh", *argv]


def available() -> tuple[bool, bool]:
    """(namespaces usable, need --map-root-user): probed once by running `true` inside one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False, False
    for map_root in ((False,) if os.geteuid() == 0 else ()) + (True,):
        argv = wrap(["true"], [(str(Path("/")), "/run/lipsync-probe")], map_root=map_root)
        try:
            ok = subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return True, map_root
    return False, False
