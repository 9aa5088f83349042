"""Leader election against a real API server: two candidates started at the same moment, as the
two replicas of the operator's Deployment are."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from lipsync_operator.leader import ElectionSettings, LostLeadershipError, lead
from lipsync_testbed import LocalCluster, wait_for
from lipsync_testbed.tcpproxy import CuttableProxy

pytestmark = pytest.mark.cluster

LEASE = "election-test"


@dataclass
class Candidate:
    """One replica: acts until told to stop, and notes whether it acted."""

    identity: str
    acting: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)

    def operate(self, stop: threading.Event) -> None:
        self.acting.set()
        while not (stop.is_set() or self.done.is_set()):
            stop.wait(0.1)


@pytest.fixture
def candidates(
    kube_api: client.ApiClient, kube_namespace: str
) -> Iterator[tuple[Candidate, Candidate]]:
    pair = (Candidate("replica-a"), Candidate("replica-b"))
    start = threading.Barrier(len(pair))

    def run(candidate: Candidate) -> None:
        settings = ElectionSettings(
            LEASE, kube_namespace, candidate.identity,
            lease_duration=4, renew_deadline=3, retry_period=1,
        )  # fmt: skip
        start.wait()
        with contextlib.suppress(LostLeadershipError):  # on a slow machine; seen in `lost`
            lead(settings, candidate.operate, api=kube_api, on_lost=candidate.lost.set)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in pair]
    for thread in threads:
        thread.start()
    yield pair
    for candidate in pair:
        candidate.done.set()
    for thread in threads:
        thread.join(timeout=30)


def _event_messages(api: client.ApiClient, namespace: str, reason: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"reason={reason}"
    )
    return [event.message or "" for event in events.items]


def test_candidates_started_together_elect_one_the_other_says_whom_it_waits_for_then_takes_over(
    kube_api: client.ApiClient,
    kube_namespace: str,
    candidates: tuple[Candidate, Candidate],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lipsync_operator.leader")
    leader = wait_for(
        lambda: next((c for c in candidates if c.acting.is_set()), None),
        timeout=30,
        description="a candidate acting",
    )
    [standby] = [c for c in candidates if c is not leader]
    waiting = f"is held by {leader.identity}: {standby.identity} waits to take over"
    assert wait_for(lambda: waiting in caplog.text, timeout=15, description="the standby's log")
    assert not standby.acting.is_set()
    assert wait_for(
        lambda: _event_messages(kube_api, kube_namespace, "StandingBy"),
        timeout=15,
        description="a StandingBy event",
    ) == [f"{standby.identity} waits: {leader.identity} holds the lease"]

    leader.done.set()  # a clean shutdown releases the Lease
    assert standby.acting.wait(timeout=15), "the standby did not take over"
    lease = f"{kube_namespace}/{LEASE}"
    assert f"{standby.identity} acquired lease {lease} (after {leader.identity})" in caplog.text
    assert caplog.text.count("waits to take over") == 1


# A leader in a process of its own: it renews through `proxy`, and its "reconcile" writes through
# a direct connection every 0.2 s without ever looking at the stop signal (a reconcile stuck in
# its own work), so only the process ending stops the writes.
CUT_OFF_LEADER = """
import sys, time
from kubernetes import client
from lipsync_operator.kube import BoundedApiClient
from lipsync_operator.leader import ElectionSettings, lead

server, proxy, pki, namespace = sys.argv[1:]

def configuration(host):
    return client.Configuration(
        host=host, ssl_ca_cert=pki + "/ca.crt",
        cert_file=pki + "/admin.crt", key_file=pki + "/admin.key",
    )

writes = client.CoreV1Api(client.ApiClient(configuration(server)))

def operate(stop):
    count = 0
    while True:
        count += 1
        writes.patch_namespaced_config_map("writes", namespace, {"data": {"count": str(count)}})
        time.sleep(0.2)

settings = ElectionSettings("cutoff", namespace, "cut-off")
lead(settings, operate, api=BoundedApiClient(settings.call_timeout, configuration(proxy)))
"""


def _holder(api: client.ApiClient, namespace: str) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease("cutoff", namespace)
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def _writes(api: client.ApiClient, namespace: str) -> int:
    config_map = client.CoreV1Api(api).read_namespaced_config_map("writes", namespace)
    return int((config_map.data or {}).get("count", 0))


def test_a_leader_cut_off_from_the_api_server_exits_before_another_replica_may_act(
    kube_cluster: LocalCluster, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(
        kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="writes"))
    )
    server = urllib.parse.urlsplit(kube_cluster.server)
    pki = kube_cluster.state_dir / "pki"
    with CuttableProxy((server.hostname or "127.0.0.1", server.port or 443)) as proxy:
        host, port = proxy.address
        child = subprocess.Popen(
            [sys.executable, "-c", CUT_OFF_LEADER, kube_cluster.server,
             f"https://{host}:{port}", str(pki), kube_namespace],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for(
                lambda: (
                    _holder(kube_api, kube_namespace) == "cut-off"
                    and _writes(kube_api, kube_namespace) > 5
                ),
                timeout=60,
                description="the child leading and writing",
            )
            proxy.cut()
            # The standby: it takes the Lease once the child's last renewal is a lease
            # duration old.
            standby = Candidate("standby")
            settings = ElectionSettings("cutoff", kube_namespace, standby.identity)
            thread = threading.Thread(
                target=lead,
                args=(settings, standby.operate),
                kwargs={"api": kube_api, "on_lost": standby.lost.set},
                daemon=True,
            )
            thread.start()
            code = child.wait(timeout=60)
            written_by_then = _writes(kube_api, kube_namespace)
            exited_before_takeover = not standby.acting.is_set()
            assert standby.acting.wait(timeout=60), "the standby never took over"
            time.sleep(1.0)  # any write still on its way lands by now
            written_after = _writes(kube_api, kube_namespace)
        finally:
            child.kill()
            output = child.communicate()[0]
        standby.done.set()
        thread.join(timeout=30)
    assert code == 1, output
    assert "could not renew lease" in output
    assert exited_before_takeover, "the cut-off leader still ran when the standby took over"
    assert written_after == written_by_then, "a write landed after the cut-off leader exited"
