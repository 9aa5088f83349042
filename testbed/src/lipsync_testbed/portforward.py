"""`kubectl port-forward` as a context manager: a local port to a pod's or Service's port, the
way a user reaches a cluster's pods from a workstation."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lipsync_testbed.processes import terminate
from lipsync_testbed.versions import ClusterSetupError

if TYPE_CHECKING:
    from lipsync_testbed.cluster import LocalCluster

_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


@contextlib.contextmanager
def port_forward(cluster: LocalCluster, namespace: str, target: str, port: int) -> Iterator[int]:
    """Forward a free local port to `port` of `target` (`pod/NAME`, `svc/NAME`); yields the
    local port, stops kubectl on exit."""
    forward = subprocess.Popen(
        [str(cluster.binaries.kubectl), f"--kubeconfig={cluster.kubeconfig}",
         "port-forward", "-n", namespace, "--address=127.0.0.1", target, f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()
        found = _FORWARDING.search(first)
        if found is None:
            rest = first + (forward.stdout.read() if forward.poll() is not None else "")
            raise ClusterSetupError(f"kubectl port-forward {namespace}/{target}: {rest.strip()}")
        yield int(found.group(1))
    finally:
        terminate(forward)
