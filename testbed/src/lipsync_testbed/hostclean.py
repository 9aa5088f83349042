"""What real nodes leave on the host, and how it goes again: container processes, runtime
shims, mounts, cgroups, network namespaces and the bridge.

Each test bed with real nodes records what it creates in /run/lipsync-testbed/<tag>.json
before creating it. `clean(record)` removes all of it; `sweep_stale()` does that for every
record whose owner process is gone (a test run that was killed), so the next run starts clean.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lipsync_testbed.hostnet import HostNetwork, delete_bridge, delete_node_netns, leftovers
from lipsync_testbed.nodeconfig import CONTAINER_STORE
from lipsync_testbed.processes import is_running

log = logging.getLogger(__name__)

RECORD_DIR = Path("/run/lipsync-testbed")
CGROUP_FS = Path("/sys/fs/cgroup")
# The kubelet links every container's log here (a fixed path) to its pod logs directory.
CONTAINER_LOG_LINKS = Path("/var/log/containers")


# Node names up to this long name their socket directory as they are; longer ones (Karpenter's
# nodes) by a digest, as the kubelet's deepest socket must stay within 104 bytes.
_SHORT_NODE_NAME = 16


def socket_dir(tag: str, node: str) -> Path:
    """A short directory for a node's unix sockets (state directories can be too deep)."""
    if len(node) > _SHORT_NODE_NAME:
        node = "n-" + hashlib.sha256(node.encode()).hexdigest()[:12]
    return RECORD_DIR / tag / node


@dataclass
class HostRecord:
    """Everything a test bed with real nodes puts on the host."""

    tag: str
    owner_pid: int
    node_roots: list[str] = field(default_factory=list)
    cgroup_roots: list[str] = field(default_factory=list)
    nodes: int = 0
    slot: int = 0  # the test bed's network slot (hostnet)

    @property
    def network(self) -> HostNetwork:
        return HostNetwork(self.tag, self.slot)

    @property
    def path(self) -> Path:
        return RECORD_DIR / f"{self.tag}.json"

    def save(self) -> None:
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> HostRecord:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """The cgroup root's directory in every mounted hierarchy that has it."""
    if not CGROUP_FS.is_dir():
        return []
    candidates = [CGROUP_FS / cgroup_root.lstrip("/")]
    candidates += [h / cgroup_root.lstrip("/") for h in CGROUP_FS.iterdir() if h.is_dir()]
    return [c for c in candidates if c.is_dir()]


def cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(cgroup_root):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def processes_under(root: Path) -> set[int]:
    """Processes whose command line names a path under `root` (the runtime's shims)."""
    found: set[int] = set()
    marker = str(root)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.add(int(proc.name))
    found.discard(os.getpid())
    return found


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    points: list[str] = []
    prefix = str(root)
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def container_log_links(root: Path) -> list[Path]:
    """The kubelet's links in /var/log/containers to logs under `root`."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    found = []
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(root):
                found.append(link)
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if is_running(p)}
        time.sleep(0.05)


def _remove_cgroups(cgroup_root: str) -> None:
    for top in cgroup_dirs(cgroup_root):
        for directory in sorted(
            (d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def clean_node_processes(cgroup_roots: Sequence[str], node_roots: Sequence[str]) -> None:
    """Kill the containers (by cgroup) and shims (by path) of some nodes, unmount what they
    mounted, remove their cgroups, the kubelet's log links to them and their container store."""
    for cgroup_root in cgroup_roots:
        _kill(cgroup_pids(cgroup_root))
    for root in node_roots:
        _kill(processes_under(Path(root)))
    for root in node_roots:
        for point in mounts_under(Path(root)):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    for cgroup_root in cgroup_roots:
        _remove_cgroups(cgroup_root)
    for root in node_roots:
        for link in container_log_links(Path(root)):
            link.unlink(missing_ok=True)
        if Path(root).is_relative_to(RECORD_DIR):
            shutil.rmtree(root, ignore_errors=True)
        else:
            # The image and container store is 1.6 GB a node; configs and logs stay to read.
            shutil.rmtree(Path(root) / CONTAINER_STORE, ignore_errors=True)


def clean(record: HostRecord) -> list[str]:
    """Remove what `record` lists; returns what is still there afterwards (empty: clean)."""
    clean_node_processes(record.cgroup_roots, record.node_roots)
    net = record.network
    for index in range(record.nodes):
        delete_node_netns(net, net.node(index))
    delete_bridge(net)
    left = remaining(record)
    if not left:
        shutil.rmtree(RECORD_DIR / record.tag, ignore_errors=True)
        record.path.unlink(missing_ok=True)
    return left


def remaining(record: HostRecord) -> list[str]:
    """What of `record` is still on the host: processes, mounts, cgroups, links, namespaces,
    container stores."""
    left = leftovers(record.network, max(record.nodes, 1))
    for cgroup_root in record.cgroup_roots:
        left += [f"cgroup {d}" for d in cgroup_dirs(cgroup_root)]
        left += [f"process {p} in {cgroup_root}" for p in cgroup_pids(cgroup_root)]
    for root in record.node_roots:
        left += [f"mount {m}" for m in mounts_under(Path(root))]
        left += [f"process {p} of {root}" for p in processes_under(Path(root))]
        left += [f"log link {link}" for link in container_log_links(Path(root))]
        if (Path(root) / CONTAINER_STORE).exists():
            left.append(f"container store {Path(root) / CONTAINER_STORE}")
    return left


def owner_alive(record: HostRecord) -> bool:
    """Whether the test bed that made `record` still runs (its API server)."""
    return is_running(record.owner_pid)


@contextlib.contextmanager
def host_claim() -> Iterator[None]:
    """Held while a test bed picks its network slot and records it, so that test beds starting
    at the same moment (pytest workers) never pick the same slot."""
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    with (RECORD_DIR / "claim.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sweep_stale() -> None:
    """Clean up after every test bed whose owner process has died."""
    if not RECORD_DIR.is_dir():
        return
    for path in sorted(RECORD_DIR.glob("*.json")):
        try:
            record = HostRecord.load(path)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable test bed record %s: %s", path, exc)
            continue
        if owner_alive(record):
            continue
        log.warning("cleaning up after a test bed that died (pid %d)", record.owner_pid)
        left = clean(record)
        if left:
            log.warning("could not remove: %s", "; ".join(left))
