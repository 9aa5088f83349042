"""The operator's liveness against a real API server it is then cut off from: its calls are
bounded, and /healthz turns red while its reconciles hang, so a kubelet would restart it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipsync_server.process import free_port
from lipsync_testbed import LocalCluster, wait_for
from lipsync_testbed.kubeconfig import write_kubeconfig
from lipsync_testbed.lsm import apply, status
from lipsync_testbed.operatorchart import small_model
from lipsync_testbed.pki import KeyPair
from lipsync_testbed.tcpproxy import CuttableProxy
from lipsync_testbed.versions import repo_root

pytestmark = pytest.mark.cluster

STALL_S = 15


def _healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # not listening yet


@pytest.fixture
def proxy(kube_cluster: LocalCluster) -> Iterator[CuttableProxy]:
    server = urllib.parse.urlsplit(kube_cluster.server)
    with CuttableProxy((server.hostname or "127.0.0.1", server.port or 443)) as relay:
        yield relay


def test_healthz_turns_red_while_reconciles_hang_on_an_api_server_that_stopped_answering(
    kube_cluster: LocalCluster, kube_namespace: str, proxy: CuttableProxy, tmp_path: Path
) -> None:
    kube_cluster.kubectl("apply", "-f", str(repo_root() / "crds"))
    pki = kube_cluster.state_dir / "pki"
    host, port = proxy.address
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server=f"https://{host}:{port}",
        ca=KeyPair(pki / "ca.crt", pki / "ca.key"),
        client=KeyPair(pki / "admin.crt", pki / "admin.key"),
        user="admin",
    )
    # A product no node has: the model stays Pending, each reconcile patches its status only.
    apply(kube_cluster, kube_namespace, small_model("anna", "pvc://avatars/anna", "No-Such-GPU"))
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "LIPSYNC_RESYNC_SECONDS": "3",
        "LIPSYNC_RECONCILE_STALL_SECONDS": str(STALL_S),
    }
    log = tmp_path / "operator.log"
    with log.open("w") as output:
        operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "lipsync"), "operator", "run",
             "-n", kube_namespace, "--liveness", healthz],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: status(kube_cluster, kube_namespace, "anna").get("phase") == "Pending",
            timeout=120,
            description="the operator's first reconcile",
        )
        assert wait_for(lambda: _healthz(healthz) == 200, timeout=60, description="healthz 200")
        proxy.cut()
        assert wait_for(
            lambda: _healthz(healthz) == 500,
            timeout=STALL_S + 120,
            interval=2.0,
            description="healthz 500 after the cut",
        )
    finally:
        operator.kill()
        operator.wait()
    text = log.read_text()
    assert "a reconcile has been running for" in text or "not reached the API server" in text, text[
        -3000:
    ]
